"""racetrackd.plugins.store and pluginbundle: loading, checking, ZIP safety, install/replace/remove, version
resolution across built-in and uploaded plugins, and what every process sees after a change."""

from __future__ import annotations

import io
import os
import shutil
import stat
import time
import zipfile
from pathlib import Path

import pytest
import yaml
from flask.testing import FlaskClient

from pluginbundle import MAX_UNPACKED_BYTES, PluginInvalid, bundle, parse_manifest
from racetrackd import db
from racetrackd.deploy.deployer import _snapshot
from racetrackd.errors import (
    ConflictError,
    ForbiddenError,
    JobTypeError,
    ManifestError,
    NotFoundError,
    ValidationError,
)
from racetrackd.plugins.hooks import HOOKS
from racetrackd.plugins.jobtypes import resolve
from racetrackd.plugins.store import PluginStore
from racetrackd.settings import BUILTIN_PLUGINS_DIR
from tests.plugin_zips import EXAMPLE_PLUGIN, example_files, zip_of
from tests.unit.conftest import REPO
from tests.unit.fakes import build_context, sample_manifest

BASE_IMAGES = {"python_base_image": "python:3.11-slim"}
API = "/lifecycle/api/v1"


def store(data_dir: Path) -> PluginStore:
    """A store whose only built-in plugin is python3 (the others come and go with the product)."""
    builtin = data_dir / "builtin-plugins"
    if not builtin.exists():
        shutil.copytree(BUILTIN_PLUGINS_DIR / "python3", builtin / "python3")
    return PluginStore([builtin], data_dir, BASE_IMAGES)


def example_zip(version: str | None = None, **files: str | None) -> bytes:
    """The example plugin as a ZIP, at `version`, with some files replaced (None: left out; `__` stands for `.`)."""
    sources = example_files(**{name.replace("__", "."): text for name, text in files.items()})
    if version:
        manifest = yaml.safe_load(sources["plugin-manifest.yaml"])
        manifest["version"] = version
        sources["plugin-manifest.yaml"] = yaml.safe_dump(manifest)
    return zip_of(sources)


# ---- the manifest ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: Shell\nversion: 1.0.0\n", "name: must be lower-case"),
        ("name: shell\n", "version: required"),
        ("name: shell\nversion: latest\n", "version: 'latest' is not a semantic version"),
        ("name: shell\nversion: 1.0.0\njobtypes: {}\n", "unknown key 'jobtypes'"),
        ("name: shell\nversion: 1.0.0\njob_types: {shell: {}}\n", "job_types.shell.dockerfile_template: required"),
        ("- a list\n", "must be a mapping"),
        ("name: [unclosed\n", "not valid YAML"),
        ("name: shell\nversion: 1.0.0\nsettings: [a]\n", "settings: must map setting names"),
        ("name: shell\nversion: 1.0.0\nsettings: {Shell-Image: {help: x}}\n", "settings.Shell-Image: a setting name"),
        ("name: shell\nversion: 1.0.0\nsettings: {shell_image: {default: a}}\n", "settings.shell_image: default must"),
        ("name: shell\nversion: 1.0.0\nsettings: {shell_image: {help: x, env: Y}}\n", "settings.shell_image: must be"),
    ],
)
def test_a_bad_plugin_manifest_is_refused_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(PluginInvalid, match=message.replace("[", r"\[")):
        parse_manifest(text)


def test_an_uploaded_job_type_may_build_from_a_setting_its_plugin_declares(tmp_path: Path) -> None:
    sources = example_files()
    manifest = yaml.safe_load(sources["plugin-manifest.yaml"])
    manifest["settings"] = {
        "shell_base_image": {"default": "debian:bookworm-slim", "help": "Base image of shell jobs."}
    }
    manifest["job_types"]["shell"]["base_image_setting"] = "shell_base_image"
    sources["plugin-manifest.yaml"] = yaml.safe_dump(manifest)
    plugins = store(tmp_path)

    plugins.install("shell.zip", zip_of(sources))  # the template rendered with the declared default

    shell = resolve("shell:latest", plugins.job_types())
    assert shell.base_image_setting == "shell_base_image"
    assert shell.declared_settings == (("shell_base_image", "debian:bookworm-slim"),)


def test_a_job_type_naming_a_setting_no_plugin_declares_is_refused(tmp_path: Path) -> None:
    sources = example_files()
    manifest = yaml.safe_load(sources["plugin-manifest.yaml"])
    manifest["job_types"]["shell"]["base_image_setting"] = "shell_base_image"
    sources["plugin-manifest.yaml"] = yaml.safe_dump(manifest)

    with pytest.raises(ValidationError, match="base_image_setting: no setting 'shell_base_image'"):
        store(tmp_path).install("shell.zip", zip_of(sources))


def test_the_builtin_manifest_parses_with_racetracks_keys() -> None:
    manifest = parse_manifest((BUILTIN_PLUGINS_DIR / "python3" / "plugin-manifest.yaml").read_text())

    assert manifest.to_dict() == {
        "name": "python3-job-type",
        "version": "1.0.0",
        "build_date": None,
        "url": None,
        "priority": 0,
        "category": "job-type",
        "components": [],
    }


# ---- ZIP safety ------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ["../evil.txt", "/etc/evil.txt", "nested/../../evil.txt", "C:/evil.txt"])
def test_zip_entries_outside_the_plugin_are_refused(tmp_path: Path, entry: str) -> None:
    with pytest.raises(ValidationError, match="points outside the plugin directory"):
        store(tmp_path).install("evil.zip", example_zip(**{entry: "x"}))

    assert not (tmp_path / "evil.txt").exists() and not (tmp_path.parent / "evil.txt").exists()


def test_a_symbolic_link_in_the_zip_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO(example_zip())
    with zipfile.ZipFile(buffer, "a") as archive:
        link = zipfile.ZipInfo("link")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")

    with pytest.raises(ValidationError, match="'link' is a symbolic link"):
        store(tmp_path).install("link.zip", buffer.getvalue())


def test_a_zip_bomb_stops_at_the_unpacked_limit(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("plugin-manifest.yaml", "name: bomb\nversion: 1.0.0\n")
        archive.writestr("zeros", b"\0" * (MAX_UNPACKED_BYTES + 1))

    with pytest.raises(ValidationError, match="unpacks to more than"):
        store(tmp_path).install("bomb.zip", buffer.getvalue())


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"plugin-manifest__yaml": None}, "plugin-manifest.yaml not found at the ZIP's top level"),
        ({"Dockerfile__j2": None}, "file Dockerfile.j2 not found in the plugin"),
        ({"Dockerfile__j2": "FROM {{ base_image }\n"}, "Dockerfile.j2 line 1: template syntax error"),
        ({"Dockerfile__j2": "FROM {{ base_imag }}\n"}, "'base_imag' is undefined"),
        ({"Dockerfile__j2": "FROM {{ jobtype_extra.scirpt }}\n"}, "has no attribute 'scirpt'"),
        ({"plugin__py": "import no_such_module_here\n"}, "plugin.py failed to load: ModuleNotFoundError"),
        ({"plugin__py": "class Plugin:\n    def post_deploy(self, job): pass\n"}, "Plugin.post_deploy is not a hook"),
        ({"plugin__py": "X = 1\n"}, "plugin.py: defines no class Plugin"),
    ],
)
def test_a_plugin_that_would_not_work_is_refused_before_it_replaces_anything(
    tmp_path: Path, files: dict[str, str | None], message: str
) -> None:
    plugins = store(tmp_path)
    plugins.install("shell.zip", example_zip())

    with pytest.raises(ValidationError, match=message):
        plugins.install("shell.zip", example_zip(**files))  # the same name and version: would replace it

    assert [jt.full_name for jt in plugins.job_types()] == ["python3:1.0.0", "shell:1.0.0"]
    assert (tmp_path / "plugins" / "shell-job-type-1.0.0" / "Dockerfile.j2").is_file()
    assert not any((tmp_path / "plugins" / ".staging").iterdir()), "staging is cleaned up"


def test_a_plugin_of_another_category_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="category: 'infrastructure': racetrackd runs job-type plugins only"):
        store(tmp_path).install(
            "infra.zip", zip_of({"plugin-manifest.yaml": "name: docker\nversion: 1.5.0\ncategory: infrastructure\n"})
        )


# ---- install, resolve, replace, remove -------------------------------------------------------------


def test_versions_side_by_side_resolve_as_racetrack_does(tmp_path: Path) -> None:
    plugins = store(tmp_path)
    for version in ("1.0.0", "1.2.0", "2.0.0-rc1"):
        plugins.install(f"shell-{version}.zip", example_zip(version))
    installed = plugins.job_types()

    assert resolve("shell:latest", installed).version == "1.2.0"
    assert resolve("shell:1.*", installed).version == "1.2.0"
    assert resolve("shell:1.0.0", installed).version == "1.0.0"
    assert resolve("shell:2.0.0-rc1", installed).version == "2.0.0-rc1"
    with pytest.raises(
        ManifestError,
        match=r"'shell:3\.\*' is not installed \(installed: python3:1.0.0, shell:1.0.0, "
        r"shell:1.2.0, shell:2.0.0-rc1\)",
    ):
        resolve("shell:3.*", installed)


def test_an_uploaded_higher_version_of_a_builtin_job_type_wins_latest(tmp_path: Path) -> None:
    target = tmp_path / "source"
    shutil.copytree(BUILTIN_PLUGINS_DIR / "python3", target)
    manifest = yaml.safe_load((target / "plugin-manifest.yaml").read_text())
    manifest["version"] = "1.1.0"
    (target / "plugin-manifest.yaml").write_text(yaml.safe_dump(manifest))
    plugins = store(tmp_path / "data")

    plugins.install(*bundle(target))

    assert resolve("python3:latest", plugins.job_types()).plugin_dir == tmp_path / "data/plugins/python3-job-type-1.1.0"
    assert resolve("python3:1.0.0", plugins.job_types()).plugin_dir.parent.name == "builtin-plugins"


def test_a_builtin_version_cannot_be_replaced_or_removed(tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(BUILTIN_PLUGINS_DIR / "python3", source)
    plugins = store(tmp_path / "data")

    with pytest.raises(ConflictError, match="python3-job-type 1.0.0 is built in and cannot be replaced"):
        plugins.install(*bundle(source))
    with pytest.raises(ForbiddenError, match="built in and cannot be removed"):
        plugins.remove("python3-job-type", "1.0.0")


def test_a_job_type_version_of_another_plugin_is_refused(tmp_path: Path) -> None:
    plugins = store(tmp_path)
    plugins.install("shell.zip", example_zip())
    impostor = example_zip(
        **{
            "plugin-manifest__yaml": (EXAMPLE_PLUGIN / "plugin-manifest.yaml")
            .read_text()
            .replace("name: shell-job-type", "name: other-shell")
        }
    )

    with pytest.raises(ConflictError, match="job type shell:1.0.0 is already provided by plugin shell-job-type 1.0.0"):
        plugins.install("other.zip", impostor)


def test_replace_removes_the_other_versions_and_remove_takes_one(tmp_path: Path) -> None:
    plugins = store(tmp_path)
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        plugins.install("shell.zip", example_zip(version))

    plugins.install("shell.zip", example_zip("1.1.0"), replace=True)
    after_replace = [jt.full_name for jt in plugins.job_types()]
    plugins.remove("shell-job-type", "1.1.0")

    assert after_replace == ["python3:1.0.0", "shell:1.1.0"]
    assert [jt.full_name for jt in plugins.job_types()] == ["python3:1.0.0"]
    with pytest.raises(NotFoundError, match="plugin shell-job-type 1.1.0 is not installed"):
        plugins.remove("shell-job-type", "1.1.0")


def test_every_process_sees_an_install_or_removal_at_once(tmp_path: Path) -> None:
    http_worker, deployment_worker = store(tmp_path), store(tmp_path)  # two processes share the data dir
    assert [jt.name for jt in deployment_worker.job_types()] == ["python3"]

    http_worker.install("shell.zip", example_zip())
    seen_after_install = [jt.full_name for jt in deployment_worker.job_types()]
    http_worker.remove("shell-job-type", "1.0.0")

    assert seen_after_install == ["python3:1.0.0", "shell:1.0.0"]
    assert [jt.full_name for jt in deployment_worker.job_types()] == ["python3:1.0.0"]


def test_a_broken_plugin_on_disk_is_listed_with_its_error_and_provides_nothing(tmp_path: Path) -> None:
    broken = tmp_path / "plugins" / "broken-1.0.0"
    broken.mkdir(parents=True)
    (broken / "plugin-manifest.yaml").write_text(
        "name: broken\nversion: 1.0.0\ncategory: job-type\njob_types: {broken: {dockerfile_template: T.j2}}\n"
    )
    (broken / "T.j2").write_text("FROM {{ nothing }}\n")
    missing = tmp_path / "plugins" / "missing-2.0.0"
    shutil.copytree(broken, missing)
    (missing / "T.j2").unlink()
    manifest_path = missing / "plugin-manifest.yaml"
    manifest_path.write_text(manifest_path.read_text().replace("1.0.0", "2.0.0"))

    listed = {(p.name, p.version): p for p in store(tmp_path).plugins()}

    assert "'nothing' is undefined" in (listed["broken", "1.0.0"].error or "")
    assert "file T.j2 not found in the plugin" in (listed["broken", "2.0.0"].error or "")
    assert listed["broken", "1.0.0"].job_types == () and listed["broken", "2.0.0"].job_types == ()
    assert listed["python3-job-type", "1.0.0"].error is None


def test_bundle_honours_racetrackignore_and_stamps_a_build_date(tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(EXAMPLE_PLUGIN, source)
    (source / "notes").mkdir()
    (source / "notes" / "draft.md").write_text("x")
    (source / "keep.pyc").write_text("x")
    (source / ".racetrackignore").write_text("notes/\n*.pyc\n!keep.pyc\n")

    filename, data = bundle(source, "3.0.0")

    names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    manifest = parse_manifest(zipfile.ZipFile(io.BytesIO(data)).read("plugin-manifest.yaml").decode())
    assert filename == "shell-job-type-3.0.0.zip"
    assert "notes/draft.md" not in names and "keep.pyc" in names and "shell_wrapper.py" in names
    assert manifest.version == "3.0.0" and manifest.build_date


# ---- hooks -----------------------------------------------------------------------------------------


def installed_with_hooks(tmp_path: Path, plugin_py: str) -> PluginStore:
    plugins = store(tmp_path)
    plugins.install("shell.zip", example_zip(plugin__py=plugin_py))
    return plugins


def test_validate_hook_errors_name_the_field(tmp_path: Path) -> None:
    plugins = store(tmp_path)
    plugins.install("shell.zip", example_zip())
    job_type = resolve("shell:1.0.0", plugins.job_types())

    with pytest.raises(ManifestError) as refused:
        plugins.validate_manifest(job_type, {"jobtype_extra": {"script": "run.py"}})

    assert refused.value.errors == [("jobtype_extra.script", "must name a .sh file, not 'run.py'")]
    assert plugins.validate_manifest(job_type, {"jobtype_extra": {"script": "run.sh"}}) == []


def test_a_validate_hook_raising_value_error_refuses_and_any_other_error_only_warns(tmp_path: Path) -> None:
    plugins = installed_with_hooks(
        tmp_path,
        (
            "class Plugin:\n"
            "    def validate_job_manifest(self, manifest, job_type):\n"
            "        if manifest.get('name') == 'refused':\n"
            "            raise ValueError('no jobs called refused')\n"
            "        raise KeyError('bug')\n"
        ),
    )
    job_type = resolve("shell:1.0.0", plugins.job_types())

    with pytest.raises(ManifestError) as refused:
        plugins.validate_manifest(job_type, {"name": "refused"})
    warnings = plugins.validate_manifest(job_type, {"name": "other"})

    assert refused.value.errors == [("jobtype_extra", "no jobs called refused")]
    assert warnings == ["plugin shell-job-type 1.0.0: hook validate_job_manifest failed: KeyError: 'bug'"]


def test_runtime_env_and_notify_hooks_report_failures_instead_of_raising(tmp_path: Path) -> None:
    plugins = installed_with_hooks(
        tmp_path,
        (
            "class Plugin:\n"
            "    def job_runtime_env(self, job):\n"
            "        return {'A': 1}\n"
            "    def post_job_deploy(self, job):\n"
            "        raise RuntimeError('webhook down')\n"
            "    def post_job_delete(self, job):\n"
            "        pass\n"
        ),
    )
    hooks = plugins.hooks_for("shell:1.0.0")
    assert hooks is not None

    env, env_warning = hooks.job_runtime_env({"name": "j"})
    deployed_warning = hooks.notify("post_job_deploy", {"name": "j"})

    assert env == {}
    assert (
        env_warning
        and "job_runtime_env failed: TypeError: returned dict, not a mapping of names to strings" in env_warning
    )
    assert deployed_warning == "plugin shell-job-type 1.0.0: hook post_job_deploy failed: RuntimeError: webhook down"
    assert hooks.notify("post_job_delete", {"name": "j"}) is None


def test_every_hook_is_documented() -> None:
    docs = (REPO / "docs" / "plugins.md").read_text()
    missing = [name for name in HOOKS if f"`{name}(" not in docs]
    assert not missing, f"docs/plugins.md does not document {missing}"


# ---- the API ---------------------------------------------------------------------------------------


def test_the_api_installs_lists_and_removes_with_racetracks_shapes(client: FlaskClient) -> None:
    builtin_versions = client.get(f"{API}/plugin/job_type/versions").get_json()
    installed = client.post(f"{API}/plugin/upload/shell.zip?replace=0", data=example_zip())
    listed = client.get(f"{API}/plugin").get_json()
    versions = client.get(f"{API}/plugin/job_type/versions").get_json()
    downloaded = client.get(f"{API}/plugin/shell-job-type/1.0.0/download")
    removed = client.delete(f"{API}/plugin/shell-job-type/1.0.0")

    assert installed.status_code == 200, installed.get_data(as_text=True)
    assert installed.get_json()["name"] == "shell-job-type" and installed.get_json()["version"] == "1.0.0"
    assert ("python3-job-type", "1.0.0") in [(p["name"], p["version"]) for p in listed if p["builtin"]]
    assert [(p["name"], p["version"]) for p in listed if not p["builtin"]] == [("shell-job-type", "1.0.0")]
    assert "python3:1.0.0" in builtin_versions and versions == sorted([*builtin_versions, "shell:1.0.0"])
    assert downloaded.mimetype == "application/zip" and zipfile.is_zipfile(io.BytesIO(downloaded.data))
    assert removed.status_code == 200 and client.get(f"{API}/plugin/job_type/versions").get_json() == builtin_versions


def test_a_bad_upload_is_400_naming_the_problem(client: FlaskClient) -> None:
    empty = client.post(f"{API}/plugin/upload/shell.zip", data=b"")
    bad_flag = client.post(f"{API}/plugin/upload/shell.zip?replace=maybe", data=example_zip())
    not_zip = client.post(f"{API}/plugin/upload/shell.zip", data=b"PK nope")

    assert empty.status_code == 400 and "the request body is empty" in empty.get_json()["error"]
    assert bad_flag.status_code == 400 and "replace: 'maybe'" in bad_flag.get_json()["error"]
    assert not_zip.status_code == 400 and not_zip.get_json()["error"].startswith("plugin shell.zip: not a readable ZIP")


def test_a_deployment_of_a_job_type_refused_by_its_hook_is_400_and_nothing_is_queued(client: FlaskClient) -> None:
    client.post(f"{API}/plugin/upload/shell.zip", data=example_zip())
    manifest = sample_manifest(jobtype="shell:1.0.0", jobtype_extra={"script": "run.py"})

    response = client.post(f"{API}/deploy", json={"build_context": build_context(), "manifest": manifest})

    assert response.status_code == 400
    assert response.get_json()["errors"] == [
        {"field": "jobtype_extra.script", "message": "must name a .sh file, not 'run.py'"}
    ]
    assert db.Deployment.select().count() == 0


def test_a_deployment_keeps_the_job_type_files_it_started_with_when_the_plugin_is_removed(tmp_path: Path) -> None:
    plugins = store(tmp_path / "data")
    plugins.install("shell.zip", example_zip())
    job_type = resolve("shell:1.0.0", plugins.job_types())
    started = _snapshot(job_type, tmp_path / "workspace-started")

    plugins.remove("shell-job-type", "1.0.0")

    assert (started.plugin_dir / "shell_wrapper.py").is_file() and started.plugin_dir != job_type.plugin_dir
    with pytest.raises(JobTypeError, match="shell:1.0.0 was removed while the deployment started"):
        _snapshot(job_type, tmp_path / "workspace-late")


def test_an_install_clears_what_a_crash_left_in_staging_long_ago(tmp_path: Path) -> None:
    plugins = store(tmp_path)
    old, recent = tmp_path / "plugins" / ".staging" / "old", tmp_path / "plugins" / ".staging" / "recent"
    old.mkdir(parents=True)
    recent.mkdir()
    os.utime(old, (time.time() - 7200, time.time() - 7200))

    plugins.install("shell.zip", example_zip())

    assert not old.exists() and recent.exists(), "a recent one may be another process's install under way"
