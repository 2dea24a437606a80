"""racetrackd.jobtypes: discovering job-type plugins and resolving a manifest's `jobtype: name:version`."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from racetrackd.errors import ManifestError
from racetrackd.jobtypes import JobType, check_extra, discover, resolve
from racetrackd.settings import BUILTIN_PLUGINS_DIR


def make_plugin(root: Path, directory: str, manifest: str, files: tuple[str, ...] = ("Dockerfile.j2",)) -> Path:
    plugin = root / directory
    plugin.mkdir(parents=True)
    (plugin / "plugin-manifest.yaml").write_text(manifest)
    for name in files:
        (plugin / name).write_text("FROM {{ base_image }}\n")
    return plugin


def plugin_manifest(name: str = "golang", version: str = "2.0.0") -> str:
    return (
        f"name: {name}-job-type\nversion: {version}\ncategory: job-type\n"
        f"job_types:\n  {name}:\n    dockerfile_template: Dockerfile.j2\n"
    )


def job_type(name: str, version: str, required: tuple[str, ...] = (), paths: tuple[str, ...] = ()) -> JobType:
    return JobType(name=name, version=version, plugin_dir=Path("/plugins") / name,
                   dockerfile_template="Dockerfile.j2", base_image_setting=None,
                   required_extra=required, path_extra=paths)


def test_discover_finds_the_builtin_python3_job_type() -> None:
    found = discover([BUILTIN_PLUGINS_DIR])

    python3 = [jt for jt in found if jt.name == "python3"]
    assert len(python3) == 1
    jt = python3[0]
    assert jt.full_name == "python3:1.0.0"
    assert jt.plugin_dir == BUILTIN_PLUGINS_DIR / "python3"
    assert (jt.plugin_dir / jt.dockerfile_template).is_file()
    assert jt.base_image_setting == "python_base_image"
    assert jt.required_extra == ("entrypoint_path",)
    assert set(jt.path_extra) == {"entrypoint_path", "requirements_path"}


def test_discover_reads_plugins_from_several_dirs_and_skips_missing_ones(tmp_path: Path) -> None:
    make_plugin(tmp_path / "extra", "golang", plugin_manifest())

    found = discover([tmp_path / "absent", BUILTIN_PLUGINS_DIR, tmp_path / "extra"])

    assert {jt.full_name for jt in found} == {"python3:1.0.0", "golang:2.0.0"}


@pytest.mark.parametrize(("manifest", "files"), [
    ("name: [unclosed\n", ("Dockerfile.j2",)),  # not YAML
    (plugin_manifest(), ()),  # template missing
    ("version: 1.0.0\ncategory: job-type\n", ("Dockerfile.j2",)),  # no job_types
    ("", ("Dockerfile.j2",)),  # empty manifest
    ("- a list\n- not a mapping\n", ("Dockerfile.j2",)),
    ("version: 1.0.0\ncategory: job-type\njob_types: [golang]\n", ("Dockerfile.j2",)),
])
def test_a_broken_plugin_is_skipped_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, manifest: str, files: tuple[str, ...]
) -> None:
    make_plugin(tmp_path, "a-broken", manifest, files)
    make_plugin(tmp_path, "b-good", plugin_manifest())

    with caplog.at_level(logging.ERROR, logger="racetrackd.jobtypes"):
        found = discover([tmp_path])

    assert [jt.full_name for jt in found] == ["golang:2.0.0"]
    assert "a-broken" in caplog.text


def test_a_plugin_of_another_category_provides_no_job_type(tmp_path: Path) -> None:
    make_plugin(tmp_path, "other", "name: other\nversion: 1.0.0\ncategory: infrastructure\n")

    assert discover([tmp_path]) == []


INSTALLED = [
    job_type("python3", "1.0.0"),
    job_type("python3", "1.9.0"),
    job_type("python3", "1.10.0"),
    job_type("python3", "2.0.0-rc.1"),
    job_type("golang", "0.1.0"),
]


def test_resolve_exact_version() -> None:
    assert resolve("python3:1.9.0", INSTALLED).full_name == "python3:1.9.0"


def test_resolve_exact_pre_release_version() -> None:
    assert resolve("python3:2.0.0-rc.1", INSTALLED).full_name == "python3:2.0.0-rc.1"


def test_resolve_latest_is_the_highest_stable_version_compared_numerically() -> None:
    assert resolve("python3:latest", INSTALLED).full_name == "python3:1.10.0"


def test_resolve_latest_with_only_pre_releases_installed_fails() -> None:
    with pytest.raises(ManifestError, match="python3:2.0.0-rc.1"):
        resolve("python3:latest", [job_type("python3", "2.0.0-rc.1")])


def test_resolve_wildcard() -> None:
    installed = [*INSTALLED, job_type("python3", "10.0.0")]

    assert resolve("python3:1.*", installed).full_name == "python3:1.10.0"
    assert resolve("python3:1.9.*", installed).full_name == "python3:1.9.0"


@pytest.mark.parametrize("requested", ["ruby:latest", "python3:3.0.0", "python3:3.*"])
def test_resolve_unknown_lists_the_installed_job_types(requested: str) -> None:
    with pytest.raises(ManifestError) as caught:
        resolve(requested, INSTALLED)

    message = caught.value.message
    assert message.startswith("jobtype: ")
    assert repr(requested) in message
    assert "installed: golang:0.1.0, python3:1.0.0, python3:1.10.0, python3:1.9.0, python3:2.0.0-rc.1" in message


def test_resolve_with_nothing_installed_says_none() -> None:
    with pytest.raises(ManifestError, match=r"installed: none"):
        resolve("python3:latest", [])


PYTHON3 = job_type("python3", "1.0.0", required=("entrypoint_path",), paths=("entrypoint_path", "requirements_path"))


def test_check_extra_accepts_files_inside_the_job_dir(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("")
    (tmp_path / "requirements.txt").write_text("")

    check_extra(PYTHON3, {"entrypoint_path": "src/main.py", "requirements_path": "requirements.txt"}, tmp_path)


def test_check_extra_requires_the_required_keys() -> None:
    with pytest.raises(ManifestError) as caught:
        check_extra(PYTHON3, {})

    assert caught.value.message == "jobtype_extra.entrypoint_path: required by job type python3"


@pytest.mark.parametrize("path", ["../outside.py", "/etc/passwd", "src/../../outside.py"])
def test_check_extra_rejects_paths_escaping_the_job_dir(path: str) -> None:
    with pytest.raises(ManifestError) as caught:
        check_extra(PYTHON3, {"entrypoint_path": "entrypoint.py", "requirements_path": path})

    assert caught.value.message == "jobtype_extra.requirements_path: must be a relative path inside the job directory"


def test_check_extra_rejects_a_path_that_is_not_a_string() -> None:
    with pytest.raises(ManifestError, match="jobtype_extra.entrypoint_path"):
        check_extra(PYTHON3, {"entrypoint_path": ["entrypoint.py"]})


def test_check_extra_reports_a_missing_file_only_when_the_job_dir_is_known(tmp_path: Path) -> None:
    check_extra(PYTHON3, {"entrypoint_path": "entrypoint.py"})  # no job dir yet: nothing to look at

    with pytest.raises(ManifestError) as caught:
        check_extra(PYTHON3, {"entrypoint_path": "entrypoint.py"}, tmp_path)

    assert caught.value.message == "jobtype_extra.entrypoint_path: file entrypoint.py not found in the job's directory"


def test_check_extra_reports_every_problem() -> None:
    with pytest.raises(ManifestError) as caught:
        check_extra(PYTHON3, {"requirements_path": "/abs"})

    assert "jobtype_extra.entrypoint_path: required" in caught.value.message
    assert "jobtype_extra.requirements_path: must be a relative path" in caught.value.message
