"""The rust job type's Rust code under Debian's cargo, offline: the wrapper library's own tests (against
the stand-in job, as image builds run them) and tools/link-job turning a job's directory into the
crate that is built, with the job's own dependencies (Debian's crates and a vendored one). Needs rustc,
cargo and the wrapper's librust-*-dev crates on the host (scripts/setup-host.sh --with-rust
installs them); image builds run the wrapper's tests too, in the toolchain image.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from racetrackd.settings import BUILTIN_PLUGINS_DIR

PLUGIN = BUILTIN_PLUGINS_DIR / "rust"
SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "rust-adder"
DEBIAN_CARGO = Path("/usr/bin/cargo")  # Debian's, with the rustc it was built for (not a rustup one)
DEBIAN_RUSTC = Path("/usr/bin/rustc")
DEBIAN_CRATES = Path("/usr/share/cargo/registry")
READY = DEBIAN_CARGO.exists() and (DEBIAN_CRATES / "tiny_http-0.12.0").is_dir()

pytestmark = pytest.mark.skipif(
    not READY and not os.environ.get("CI"),
    reason="no Debian rust toolchain and crates (apt-get install cargo librust-tiny-http-dev librust-serde-json-dev)",
)


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the plugin's files, as in the image (cargo writes Cargo.lock beside the wrapper)."""
    copy = tmp_path_factory.mktemp("plugin") / "rust"
    shutil.copytree(PLUGIN, copy)
    return copy


@pytest.fixture(scope="module")
def cargo_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """cargo configured as in the image: crates.io replaced by Debian's crates, offline; one target
    directory for the module, so the wrapper and its dependencies compile once."""
    assert READY, "CI needs Debian's rust toolchain and crates (scripts/setup-host.sh --with-rust)"
    home = tmp_path_factory.mktemp("cargo-home")
    (home / "config.toml").write_text(
        '[source.crates-io]\nreplace-with = "debian-packages"\n'
        f'[source.debian-packages]\ndirectory = "{DEBIAN_CRATES}"\n[net]\noffline = true\n'
    )
    return {
        **os.environ,
        "CARGO_HOME": str(home),
        "CARGO_TARGET_DIR": str(home / "target"),
        "RUSTC": str(DEBIAN_RUSTC),
        "CARGO_TERM_COLOR": "never",
    }


def run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False)


def link(plugin: Path, job: Path, env: dict[str, str]) -> None:
    linked = run(["sh", str(plugin / "tools" / "link-job"), str(job), "mod.rs", "Cargo.toml"], cwd=job, env=env)
    assert linked.returncode == 0, linked.stderr


def build(job: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run([str(DEBIAN_CARGO), "build", "--release", "--bin", "job-server"], cwd=job, env=env)


def test_the_wrapper_library_passes_its_tests(plugin: Path, cargo_env: dict[str, str]) -> None:
    result = run([str(DEBIAN_CARGO), "test", "--release"], cwd=plugin / "rust_wrapper", env=cargo_env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "test result: ok. 14 passed" in result.stdout


def test_the_sample_builds_into_a_job_server_and_a_code_change_compiles_only_the_job(
    plugin: Path, tmp_path: Path, cargo_env: dict[str, str]
) -> None:
    job = tmp_path / "job"
    shutil.copytree(SAMPLE, job)
    link(plugin, job, cargo_env)
    first = build(job, cargo_env)
    assert first.returncode == 0, first.stderr
    (job / "mod.rs").write_text((job / "mod.rs").read_text() + "\n// a code-only change\n")

    again = build(job, cargo_env)

    assert again.returncode == 0, again.stderr
    compiled = [line.split()[1] for line in again.stderr.splitlines() if line.strip().startswith("Compiling")]
    assert compiled == ["racetrack-job"], again.stderr
    assert (Path(cargo_env["CARGO_TARGET_DIR"]) / "release" / "job-server").is_file()


def test_a_job_adds_debian_crates_and_a_vendored_crate_from_its_cargo_toml(
    plugin: Path, tmp_path: Path, cargo_env: dict[str, str]
) -> None:
    job = tmp_path / "job"
    shutil.copytree(SAMPLE, job)
    (job / "vendor" / "greeting" / "src").mkdir(parents=True)
    (job / "vendor" / "greeting" / "Cargo.toml").write_text(
        '[package]\nname = "greeting"\nversion = "0.1.0"\nedition = "2021"\n'
    )
    (job / "vendor" / "greeting" / "src" / "lib.rs").write_text(
        'pub fn hello() -> &\'static str { "hello from a vendored crate" }\n'
    )
    (job / "Cargo.toml").write_text(
        '# only [dependencies] is read\n[package]\nname = "ignored"\n\n'
        '[dependencies]\nitoa = "1"\nserde_json = "1"  # the wrapper\'s own: kept once\n'
        '[dependencies.greeting]\npath = "vendor/greeting"\n'
    )
    (job / "mod.rs").write_text(
        (job / "mod.rs").read_text()
        + '\npub fn vendored() -> String { format!("{} {}", greeting::hello(), itoa::Buffer::new().format(42)) }\n'
    )
    link(plugin, job, cargo_env)

    built = build(job, cargo_env)

    assert built.returncode == 0, built.stderr
    manifest = (job / "Cargo.toml").read_text()
    assert manifest.count("serde_json") == 1 and 'itoa = "1"' in manifest and 'name = "ignored"' not in manifest
    assert (Path(cargo_env["CARGO_TARGET_DIR"]) / "release" / "job-server").is_file()


def test_a_missing_module_fails_naming_the_convention(plugin: Path, tmp_path: Path, cargo_env: dict[str, str]) -> None:
    job = tmp_path / "job"
    job.mkdir()

    result = run(["sh", str(plugin / "tools" / "link-job"), str(job), "mod.rs", "Cargo.toml"], cwd=job, env=cargo_env)

    assert result.returncode != 0
    assert "the job's module mod.rs is missing" in result.stderr and "pub fn perform" in result.stderr


def test_a_perform_of_another_shape_fails_the_build_with_rustcs_message(
    plugin: Path, tmp_path: Path, cargo_env: dict[str, str]
) -> None:
    job = tmp_path / "job"
    job.mkdir()
    (job / "mod.rs").write_text("pub fn perform(x: i64) -> i64 { x }\n")
    link(plugin, job, cargo_env)

    built = build(job, cargo_env)

    assert built.returncode != 0
    assert "found signature of `fn(i64) -> _`" in built.stderr, built.stderr
    assert (
        "F: Fn(HashMap<String, Value>) -> R + Send + Sync + 'static, // perform: -> Value or Result<Value, E: Display>"
        in built.stderr
    )


def test_a_perform_returning_another_type_fails_the_build_naming_the_return_shapes(
    plugin: Path, tmp_path: Path, cargo_env: dict[str, str]
) -> None:
    job = tmp_path / "job"
    job.mkdir()
    (job / "mod.rs").write_text(
        "use std::collections::HashMap;\npub fn perform(_input: HashMap<String, serde_json::Value>) -> i64 { 42 }\n"
    )
    link(plugin, job, cargo_env)

    built = build(job, cargo_env)

    assert built.returncode != 0
    assert "the trait bound `i64: IntoOutcome` is not satisfied" in built.stderr, built.stderr
    assert "R: Value, or Result<Value, E> with E: Display" in built.stderr
