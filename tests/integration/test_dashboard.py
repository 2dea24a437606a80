"""The dashboard in a real browser: headless Chromium (Debian's /usr/bin/chromium) driven by Playwright,
against the real daemon and Docker engine. Saves screenshots of the main pages to docs/screenshots/.

Playwright never downloads a browser here (PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 at install time);
without /usr/bin/chromium the module is skipped outside CI and fails in CI.
"""

from __future__ import annotations

import os
import re
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.integration.conftest import REPO, Daemon
from tests.plugin_zips import example_files, zip_of

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
ADDER = REPO / "samples" / "adder"
SCREENSHOTS = REPO / "docs" / "screenshots"
DEPLOY_TIMEOUT_MS = 900_000  # a first build on a loaded host; this is a bound, not a speed check
PAGE_TIMEOUT_MS = 60_000
PASSWORD = "dashboard e2e password"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("the dashboard tests need Debian's chromium: apt-get install chromium")
        pytest.skip("no /usr/bin/chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, daemon: Daemon) -> Iterator[Page]:
    """A fresh browser context (no cookies) at laptop width."""
    context = browser.new_context(base_url=daemon.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture(scope="module")
def adder(daemon: Daemon) -> str:
    """samples/adder deployed under a name of this module's own."""
    name = f"dash-adder-{uuid.uuid4().hex[:6]}"
    daemon.rtd("submit", str(ADDER), "-e", f"name={name}", check=True)
    return name


@pytest.fixture(scope="module")
def user(daemon: Daemon) -> str:
    """A user without admin rights (a new user's default grants), logging in with a password."""
    username = f"dash-user-{uuid.uuid4().hex[:6]}"
    response = daemon.api("POST", "/lifecycle/api/v1/users", json={"username": username, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return username


def log_in_with_token(page: Page, token: str, goal: str = "/dashboard/jobs") -> None:
    page.goto(goal)
    expect(page).to_have_url(re.compile(r"/dashboard/login\?next="))
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Log in with token").click()
    expect(page).to_have_url(re.compile(re.escape(goal) + "$"))


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def job_directory_archive(tmp_path: Path) -> Path:
    archive = tmp_path / "adder.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(ADDER / "entrypoint.py", arcname="entrypoint.py")
    return archive


# --- the tests ------------------------------------------------------------------------------------


def test_log_in_see_the_job_and_call_it_from_the_call_form(page: Page, daemon: Daemon, adder: str) -> None:
    page.goto("/dashboard/login")
    screenshot(page, "login")
    log_in_with_token(page, daemon.token)

    family = page.locator("section.family", has_text=adder)
    expect(family.get_by_text("running").first).to_be_visible()
    expect(page).to_have_title("Jobs · racetrackd")
    screenshot(page, "jobs")

    family.get_by_role("link", name="0.0.1").click()
    expect(page).to_have_title(f"{adder} 0.0.1 · racetrackd")
    body = page.get_by_label("Body (JSON)")
    expect(body).to_have_value(re.compile(r'"a": 40,\s*"b": 2'))  # the job's docs_input_example
    body.fill('{"a": 40, "b": 2.5}')
    page.get_by_role("button", name="Call", exact=True).click()

    expect(page.locator("#call-result")).to_have_text(re.compile(r"^200 OK\n42\.5$"))
    page.reload()
    expect(page.get_by_role("img", name=re.compile("Calls by latency"))).to_be_visible()  # the call, counted
    expect(page.locator("#calls-h + p")).to_contain_text("× 200")
    screenshot(page, "job")


def test_the_job_page_shows_calls_over_the_last_hour_and_day(page: Page, daemon: Daemon, adder: str) -> None:
    for _ in range(3):
        called = daemon.api("POST", f"/pub/job/{adder}/latest/api/v1/perform", json={"a": 1, "b": 2})
        assert called.status_code == 200, called.text
    log_in_with_token(page, daemon.token, f"/dashboard/jobs/{adder}/0.0.1")

    over_time = page.locator("#over-time")
    title = page.locator("#calls-time-title")

    def counted() -> int:
        found = re.search(r"last hour: (\d+) calls", title.text_content() or "") if title.count() else None
        return int(found.group(1)) if found else 0

    for _ in range(20):  # the gateway writes its counts every few seconds
        if counted() >= 3:
            break
        page.wait_for_timeout(1000)
        page.reload()
    assert counted() >= 3
    expect(page.get_by_role("img", name=re.compile(r"^Calls per 1 min, last hour: \d+ calls"))).to_be_visible()
    expect(page.get_by_role("img", name=re.compile(r"^Latency per 1 min, last hour: p50 .+, p95 "))).to_be_visible()
    expect(over_time.locator("rect.calls").first).to_be_visible()
    expect(over_time.locator("text", has_text="−60 min").first).to_be_visible()
    screenshot(page, "job-calls-over-time")
    over_time.get_by_role("link", name="Last 24 h").click()
    expect(page).to_have_url(re.compile(r"\?range=24h#over-time$"))
    expect(page.get_by_role("img", name=re.compile(r"^Calls per 15 min, last 24 h: \d+ calls"))).to_be_visible()
    expect(over_time.get_by_role("link", name="Last 24 h")).to_have_attribute("aria-current", "true")


def test_a_job_page_opened_logged_out_goes_through_the_login_and_back(page: Page, daemon: Daemon, adder: str) -> None:
    job_page = f"/pub/job/{adder}/0.0.1/?from=bookmark"

    page.goto(job_page)
    expect(page).to_have_url(re.compile(r"/dashboard/login\?next="))  # not the raw 401 JSON
    page.get_by_label("Token").fill(daemon.token)
    page.get_by_role("button", name="Log in with token").click()

    expect(page).to_have_url(re.compile(re.escape(f"/pub/job/{adder}/0.0.1/")))
    expect(page.locator("body")).not_to_contain_text("rtd login")
    assert requests.get(daemon.url + job_page, timeout=30).status_code == 401  # API clients keep the JSON


def test_read_the_jobs_logs_live(page: Page, daemon: Daemon, adder: str) -> None:
    log_in_with_token(page, daemon.token, f"/dashboard/jobs/{adder}/0.0.1")
    page.get_by_role("button", name="Follow logs").click()
    expect(page.get_by_role("button", name="Stop following")).to_be_visible()

    answer = requests.post(
        f"{daemon.url}/pub/job/{adder}/0.0.1/api/v1/perform",
        json={"a": 1, "b": 2},
        headers={"X-Racetrack-Auth": daemon.token},
        timeout=60,
    )
    assert answer.status_code == 200

    logs = page.locator("#job-logs")
    expect(logs).to_contain_text("/api/v1/perform")  # the wrapper's access line of the call just made
    page.get_by_role("button", name="Stop following").click()
    expect(page.get_by_role("button", name="Follow logs")).to_be_visible()


def test_deploy_from_the_browser_watch_it_finish_live_then_delete_with_confirmation(
    page: Page, daemon: Daemon, tmp_path: Path
) -> None:
    name = f"dash-live-{uuid.uuid4().hex[:6]}"
    manifest = yaml.safe_load((ADDER / "job.yaml").read_text()) | {"name": name}
    log_in_with_token(page, daemon.token, "/dashboard/deploy")
    jobs_tab = page.context.new_page()
    jobs_tab.goto("/dashboard/jobs")  # opened before the deploy: the new job must appear without a reload

    page.get_by_label("Manifest (job.yaml)").fill(yaml.safe_dump(manifest))
    page.get_by_label("Job directory as .zip or .tar.gz (optional)").set_input_files(
        str(job_directory_archive(tmp_path))
    )
    screenshot(page, "deploy")
    page.get_by_role("button", name="Deploy").click()

    expect(page).to_have_url(re.compile(r"/dashboard/deployments/[0-9a-f-]+$"))
    status = page.locator("#deployment-status")
    expect(status).to_have_text("done", timeout=DEPLOY_TIMEOUT_MS)  # followed by the page itself, no reload by us
    expect(page.locator("#build-log")).to_contain_text("Step")
    expect(page.locator("#deployment-phases")).to_contain_text("building image")
    screenshot(page, "deployment")
    expect(jobs_tab.locator("section.family", has_text=name).get_by_text("running").first).to_be_visible(
        timeout=PAGE_TIMEOUT_MS
    )
    jobs_tab.close()

    page.goto(f"/dashboard/jobs/{name}/0.0.1")
    page.get_by_role("button", name="Delete").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(f"Delete job {name} 0.0.1?")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    assert daemon.api("GET", f"/lifecycle/api/v1/job/{name}/0.0.1").status_code == 200

    page.get_by_role("button", name="Delete").click()
    dialog.get_by_role("button", name="Confirm").click()
    expect(page).to_have_url(re.compile(r"/dashboard/jobs$"))
    expect(page.locator("section.family", has_text=name)).to_have_count(0)
    assert daemon.api("GET", f"/lifecycle/api/v1/job/{name}/0.0.1").status_code == 404


def test_a_user_without_full_access_is_refused_the_admin_pages(page: Page, user: str) -> None:
    page.goto("/dashboard/login")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in", exact=True).click()
    expect(page).to_have_url(re.compile(r"/dashboard/jobs$"))
    expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Admin")).to_have_count(0)

    response = page.goto("/dashboard/admin")

    assert response is not None and response.status == 403
    expect(page.get_by_role("alert")).to_contain_text("full_access")
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/dashboard/login$"))


def test_admin_pages_and_the_rest_at_laptop_and_phone_widths(page: Page, daemon: Daemon, adder: str) -> None:
    log_in_with_token(page, daemon.token, "/dashboard/admin")
    expect(page.get_by_role("heading", name="Job types")).to_be_visible()
    expect(page.locator("#job-types")).to_contain_text("python3")
    screenshot(page, "admin")
    for path, name in (
        ("/dashboard/deployments", "deployments"),
        ("/dashboard/activity", "activity"),
        ("/dashboard/profile", "profile"),
    ):
        page.goto(path)
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        screenshot(page, name)
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"/dashboard/jobs/{adder}/0.0.1")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the job page scrolls sideways at phone width ({width} px)"
    screenshot(page, "job-phone")


def test_an_admin_installs_a_plugin_zip_and_removes_it_with_confirmation(
    page: Page, daemon: Daemon, tmp_path: Path
) -> None:
    files = example_files()
    files["plugin-manifest.yaml"] = files["plugin-manifest.yaml"].replace("version: 1.0.0", "version: 0.9.0", 1)
    archive = tmp_path / "shell-job-type-0.9.0.zip"
    archive.write_bytes(zip_of(files))
    log_in_with_token(page, daemon.token, "/dashboard/admin")

    page.get_by_label("Install a plugin ZIP").set_input_files(str(archive))
    page.get_by_role("button", name="Install", exact=True).click()

    row = page.locator("#plugins tr", has_text="shell-job-type 0.9.0")
    expect(row).to_contain_text("uploaded")
    assert "shell:0.9.0" in daemon.api("GET", "/lifecycle/api/v1/plugin/job_type/versions").json()
    row.get_by_role("button", name="Remove").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Remove plugin shell-job-type 0.9.0?")
    dialog.get_by_role("button", name="Confirm").click()
    expect(page.locator("#plugins tr", has_text="shell-job-type 0.9.0")).to_have_count(0)
    assert "shell:0.9.0" not in daemon.api("GET", "/lifecycle/api/v1/plugin/job_type/versions").json()


def test_keyboard_alone_reaches_the_main_navigation(page: Page, daemon: Daemon) -> None:
    log_in_with_token(page, daemon.token)
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    for _ in range(3):  # the skip link, the brand, then the first entry of the main navigation
        page.keyboard.press("Tab")
    expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Deploy", exact=True)).to_be_focused()
    page.keyboard.press("Enter")
    expect(page).to_have_title("Deploy a job · racetrackd")
