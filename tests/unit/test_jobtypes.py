"""racetrackd.plugins.jobtypes: discovering job-type plugins and resolving a manifest's `jobtype: name:version`."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from racetrackd.errors import ManifestError
from racetrackd.plugins.jobtypes import ExtraField, JobType, check_extra, discover, resolve
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


def job_type(name: str, version: str, extra_fields: tuple[ExtraField, ...] = ()) -> JobType:
    return JobType(
        name=name,
        version=version,
        plugin_dir=Path("/plugins") / name,
        dockerfile_template="Dockerfile.j2",
        base_image_setting=None,
        extra_fields=extra_fields,
    )


def test_discover_finds_the_builtin_python3_job_type() -> None:
    found = discover([BUILTIN_PLUGINS_DIR])

    python3 = [jt for jt in found if jt.name == "python3"]
    assert len(python3) == 1
    jt = python3[0]
    assert jt.full_name == "python3:1.0.0"
    assert jt.plugin_dir == BUILTIN_PLUGINS_DIR / "python3"
    assert (jt.plugin_dir / jt.dockerfile_template).is_file()
    assert jt.base_image_setting == "python_base_image"
    fields = {field.name: field for field in jt.extra_fields}
    assert fields["entrypoint_path"] == ExtraField("entrypoint_path", "path", required=True, supported=True)
    assert fields["requirements_path"] == ExtraField("requirements_path", "path", required=False, supported=True)
    assert fields["entrypoint_class"] == ExtraField("entrypoint_class", "string")
    assert [f.name for f in jt.extra_fields if f.required] == ["entrypoint_path"]
    # Racetrack's other python3 keys are known (so its manifests work unchanged), typed as Racetrack types them.
    assert {
        "python_version",
        "debian_version",
        "debian_backports",
        "check_requirements",
        "memray_profiler",
        "home_page",
        "max_concurrency",
        "max_concurrency_queue",
    } <= set(fields)
    assert fields["max_concurrency"].type == "integer"
    assert fields["debian_backports"].type == "boolean"


def test_extra_fields_default_to_an_optional_supported_string(tmp_path: Path) -> None:
    make_plugin(
        tmp_path, "golang", plugin_manifest() + "    extra_fields:\n      gomod: {}\n      tags: {type: string}\n"
    )

    (found,) = discover([tmp_path])

    assert found.extra_fields == (
        ExtraField("gomod", "string", required=False, supported=True),
        ExtraField("tags", "string", required=False, supported=True),
    )


def test_a_plugin_without_extra_fields_accepts_no_jobtype_extra(tmp_path: Path) -> None:
    make_plugin(tmp_path, "golang", plugin_manifest())

    (found,) = discover([tmp_path])

    assert found.extra_fields == ()
    assert check_extra(found, {}) == []
    with pytest.raises(ManifestError, match="jobtype_extra.gomod: not a setting of job type golang"):
        check_extra(found, {"gomod": "go.mod"})


def test_discover_reads_plugins_from_several_dirs_and_skips_missing_ones(tmp_path: Path) -> None:
    make_plugin(tmp_path / "extra", "golang", plugin_manifest())

    found = discover([tmp_path / "absent", BUILTIN_PLUGINS_DIR, tmp_path / "extra"])

    assert {jt.full_name for jt in found} == {
        "python3:1.0.0",
        "golang:1.0.0",
        "rust:1.0.0",
        "dockerfile:1.0.0",
        "docker-proxy:1.0.0",
        "docker-image:1.0.0",
        "golang:2.0.0",
    }


@pytest.mark.parametrize(
    ("manifest", "files"),
    [
        ("name: [unclosed\n", ("Dockerfile.j2",)),  # not YAML
        (plugin_manifest(), ()),  # template missing
        ("version: 1.0.0\ncategory: job-type\n", ("Dockerfile.j2",)),  # no job_types
        ("", ("Dockerfile.j2",)),  # empty manifest
        ("- a list\n- not a mapping\n", ("Dockerfile.j2",)),
        ("version: 1.0.0\ncategory: job-type\njob_types: [golang]\n", ("Dockerfile.j2",)),
        (plugin_manifest(version="2.0"), ("Dockerfile.j2",)),  # not a semantic version
        (plugin_manifest() + "    extra_fields:\n      gomod: {type: file}\n", ("Dockerfile.j2",)),  # unknown type
        (plugin_manifest() + "    extra_fields: [gomod]\n", ("Dockerfile.j2",)),
    ],
)
def test_a_broken_plugin_is_skipped_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, manifest: str, files: tuple[str, ...]
) -> None:
    make_plugin(tmp_path, "a-broken", manifest, files)
    make_plugin(tmp_path, "b-good", plugin_manifest())

    with caplog.at_level(logging.ERROR, logger="racetrackd.plugins.jobtypes"):
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


def test_resolve_latest_prefers_a_release_to_its_pre_release() -> None:
    installed = [*INSTALLED, job_type("python3", "2.0.0")]

    assert resolve("python3:latest", installed).full_name == "python3:2.0.0"
    assert resolve("python3:2.*", installed).full_name == "python3:2.0.0"


def test_resolve_wildcard_matches_pre_releases() -> None:
    assert resolve("python3:2.*", INSTALLED).full_name == "python3:2.0.0-rc.1"


def test_resolve_x_pattern() -> None:
    assert resolve("python3:1.x", INSTALLED).full_name == "python3:1.10.0"
    assert resolve("python3:1.9.x", INSTALLED).full_name == "python3:1.9.0"


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
    assert caught.value.errors == [("jobtype", message.removeprefix("jobtype: "))]
    assert caught.value.status_code == 400


def test_resolve_with_nothing_installed_says_none() -> None:
    with pytest.raises(ManifestError, match=r"installed: none"):
        resolve("python3:latest", [])


PYTHON3 = job_type(
    "python3",
    "1.0.0",
    extra_fields=(
        ExtraField("entrypoint_path", "path", required=True),
        ExtraField("entrypoint_class", "string"),
        ExtraField("requirements_path", "path"),
        ExtraField("debian_backports", "boolean", supported=False),
        ExtraField("max_concurrency", "integer", supported=False),
        ExtraField("workers", "integer"),
    ),
)


def extra_errors(jobtype_extra: dict[str, object], job_dir: Path | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ManifestError) as caught:
        check_extra(PYTHON3, jobtype_extra, job_dir)
    assert caught.value.status_code == 400
    assert caught.value.message == "; ".join(f"{field}: {message}" for field, message in caught.value.errors)
    return caught.value.errors


def test_check_extra_accepts_files_inside_the_job_dir(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("")
    (tmp_path / "requirements.txt").write_text("")

    warnings = check_extra(
        PYTHON3,
        {
            "entrypoint_path": "src/main.py",
            "requirements_path": "requirements.txt",
            "entrypoint_class": "Adder",
            "workers": 4,
        },
        tmp_path,
    )

    assert warnings == []


def test_check_extra_requires_the_required_keys() -> None:
    assert extra_errors({}) == [("jobtype_extra.entrypoint_path", "required by job type python3")]


@pytest.mark.parametrize("path", ["../outside.py", "/etc/passwd", "src/../../outside.py"])
def test_check_extra_rejects_paths_escaping_the_job_dir(path: str) -> None:
    assert extra_errors({"entrypoint_path": "entrypoint.py", "requirements_path": path}) == [
        ("jobtype_extra.requirements_path", "must be a relative path inside the job directory")
    ]


def test_check_extra_rejects_a_path_that_is_not_a_string() -> None:
    assert extra_errors({"entrypoint_path": ["entrypoint.py"]}) == [
        ("jobtype_extra.entrypoint_path", "must be a path, not list ['entrypoint.py']")
    ]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("entrypoint_class", 42, "must be a string, not int 42"),
        ("debian_backports", "yes", "must be a boolean, not str 'yes'"),
        ("max_concurrency", "4", "must be a integer, not str '4'"),
        ("max_concurrency", True, "must be a integer, not bool True"),  # a bool is no number here
        ("workers", 1.5, "must be a integer, not float 1.5"),
    ],
)
def test_check_extra_rejects_values_of_the_wrong_type(key: str, value: object, message: str) -> None:
    assert extra_errors({"entrypoint_path": "entrypoint.py", key: value}) == [(f"jobtype_extra.{key}", message)]


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("entrypoint_pth", "not a setting of job type python3 (did you mean 'entrypoint_path'?)"),
        ("Entrypoint_Class", "not a setting of job type python3 (did you mean 'entrypoint_class'?)"),
        ("colour", "not a setting of job type python3"),
    ],
)
def test_check_extra_rejects_unknown_keys_with_a_suggestion(key: str, message: str) -> None:
    assert extra_errors({"entrypoint_path": "entrypoint.py", key: "x"}) == [(f"jobtype_extra.{key}", message)]


def test_check_extra_warns_about_keys_accepted_but_not_acted_on() -> None:
    warnings = check_extra(
        PYTHON3, {"entrypoint_path": "entrypoint.py", "debian_backports": True, "max_concurrency": 2}
    )

    assert warnings == [
        "jobtype_extra.debian_backports is accepted for Racetrack compatibility but not acted on yet",
        "jobtype_extra.max_concurrency is accepted for Racetrack compatibility but not acted on yet",
    ]


def test_check_extra_with_errors_raises_even_when_there_are_warnings() -> None:
    assert extra_errors({"debian_backports": True}) == [
        ("jobtype_extra.entrypoint_path", "required by job type python3")
    ]


def test_check_extra_reports_a_missing_file_only_when_the_job_dir_is_known(tmp_path: Path) -> None:
    assert check_extra(PYTHON3, {"entrypoint_path": "entrypoint.py"}) == []  # no job dir yet: nothing to look at

    assert extra_errors({"entrypoint_path": "entrypoint.py"}, tmp_path) == [
        ("jobtype_extra.entrypoint_path", "file entrypoint.py not found in the job's directory")
    ]


def test_check_extra_reports_a_directory_where_a_file_is_expected(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()

    assert extra_errors({"entrypoint_path": "src"}, tmp_path) == [
        ("jobtype_extra.entrypoint_path", "file src not found in the job's directory")
    ]


def test_check_extra_reports_every_problem() -> None:
    errors = extra_errors({"requirements_path": "/abs", "entrypoint_clas": "A", "workers": "many"})

    assert [field for field, _ in errors] == [
        "jobtype_extra.entrypoint_clas",
        "jobtype_extra.entrypoint_path",
        "jobtype_extra.requirements_path",
        "jobtype_extra.workers",
    ]


def test_the_builtin_python3_type_warns_for_each_key_it_does_not_act_on() -> None:
    python3 = resolve("python3:latest", discover([BUILTIN_PLUGINS_DIR]))
    samples = {"string": "x", "path": "entrypoint.py", "boolean": True, "integer": 2}
    extra = {field.name: samples[field.type] for field in python3.extra_fields}

    warnings = check_extra(python3, extra)

    assert warnings == [
        f"jobtype_extra.{field.name} is accepted for Racetrack compatibility but not acted on yet"
        for field in python3.extra_fields
        if not field.supported
    ]
