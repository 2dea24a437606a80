"""jobmanifest.loading: finding job.yaml, parsing it, `extends` overlays and `-e key.path=value` overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from jobmanifest import FieldError, ManifestInvalid
from jobmanifest.loading import apply_overrides, find_manifest, load_manifest_dict, merge, parse_yaml


def invalid(call: Any, *args: Any) -> list[FieldError]:
    with pytest.raises(ManifestInvalid) as caught:
        call(*args)
    return caught.value.errors


def write(directory: Path, name: str, data: dict[str, Any] | str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def load(directory: Path, name: str = "job.yaml") -> dict[str, Any]:
    path = directory / name
    return load_manifest_dict(path.read_text(), str(path), directory)


# --- find_manifest / parse_yaml --------------------------------------------------------------------


def test_find_manifest_prefers_job_yaml(tmp_path: Path) -> None:
    write(tmp_path, "fatman.yaml", "name: old\n")
    write(tmp_path, "job.yaml", "name: new\n")

    assert find_manifest(tmp_path) == tmp_path / "job.yaml"


def test_find_manifest_falls_back_to_racetracks_legacy_fatman_yaml(tmp_path: Path) -> None:
    write(tmp_path, "fatman.yaml", "name: old\n")

    assert find_manifest(tmp_path) == tmp_path / "fatman.yaml"


def test_find_manifest_ignores_a_directory_named_job_yaml(tmp_path: Path) -> None:
    (tmp_path / "job.yaml").mkdir()

    assert invalid(find_manifest, tmp_path) == [FieldError("manifest", f"no job.yaml in {tmp_path}")]


def test_parse_yaml_reads_a_mapping() -> None:
    assert parse_yaml("name: adder\nreplicas: 2\n", "job.yaml") == {"name": "adder", "replicas": 2}


def test_parse_yaml_of_an_empty_file_is_an_empty_mapping() -> None:
    assert parse_yaml("", "job.yaml") == {}
    assert parse_yaml("# only a comment\n", "job.yaml") == {}


def test_parse_yaml_names_the_source_of_invalid_yaml() -> None:
    (error,) = invalid(parse_yaml, "name: [adder\n", "jobs/adder/job.yaml")

    assert error.path == "manifest"
    assert error.message.startswith("jobs/adder/job.yaml is not valid YAML: ")


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_parse_yaml_requires_a_mapping(text: str) -> None:
    assert invalid(parse_yaml, text, "job.yaml") == [FieldError("manifest", "job.yaml must hold a mapping of fields")]


# --- extends -------------------------------------------------------------------------------------

BASE = {
    "name": "adder",
    "owner_email": "owner@example.com",
    "jobtype": "python3:latest",
    "jobtype_extra": {"entrypoint_path": "entrypoint.py", "requirements_path": "requirements.txt"},
    "runtime_env": {"LEVEL": "info", "REGION": "eu"},
    "public_endpoints": ["/api/v1/perform", "/api/v1/webview"],
    "replicas": 1,
}


def test_without_extends_the_manifest_is_returned_as_written(tmp_path: Path) -> None:
    write(tmp_path, "job.yaml", BASE)

    assert load(tmp_path) == BASE


def test_extends_deep_merges_with_the_overlay_winning_and_lists_replaced(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", BASE)
    write(
        tmp_path,
        "job.yaml",
        {
            "extends": "base.yaml",
            "version": "2.0.0",  # new key
            "replicas": 3,  # scalar: overlay wins
            "runtime_env": {"LEVEL": "debug", "EXTRA": "1"},  # mapping: merged key by key
            "public_endpoints": ["/api/v1/other"],  # list: replaced, not appended
        },
    )

    merged = load(tmp_path)

    assert merged == {
        "name": "adder",
        "owner_email": "owner@example.com",
        "jobtype": "python3:latest",
        "jobtype_extra": {"entrypoint_path": "entrypoint.py", "requirements_path": "requirements.txt"},
        "runtime_env": {"LEVEL": "debug", "REGION": "eu", "EXTRA": "1"},
        "public_endpoints": ["/api/v1/other"],
        "replicas": 3,
        "version": "2.0.0",
    }
    assert "extends" not in merged


def test_extends_merges_nested_mappings_at_every_depth(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", {"labels": {"a": {"b": 1, "c": 2}, "d": 3}})
    write(tmp_path, "job.yaml", {"extends": "base.yaml", "labels": {"a": {"c": 20, "e": 5}}})

    assert load(tmp_path) == {"labels": {"a": {"b": 1, "c": 20, "e": 5}, "d": 3}}


def test_an_overlay_mapping_replaces_a_base_scalar_and_vice_versa(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", {"git": "oops", "labels": {"a": 1}})
    write(tmp_path, "job.yaml", {"extends": "base.yaml", "git": {"remote": "r"}, "labels": "none"})

    assert load(tmp_path) == {"git": {"remote": "r"}, "labels": "none"}


def test_an_explicit_null_in_the_overlay_wins(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", {"replicas": 2, "labels": {"a": 1}})
    write(tmp_path, "job.yaml", "extends: base.yaml\nreplicas: null\n")

    assert load(tmp_path) == {"replicas": None, "labels": {"a": 1}}


def test_extends_is_relative_to_the_manifests_directory(tmp_path: Path) -> None:
    write(tmp_path, "common/base.yaml", BASE)
    write(tmp_path, "job.yaml", {"extends": "common/base.yaml", "replicas": 2})

    assert load(tmp_path)["replicas"] == 2
    assert load(tmp_path)["name"] == "adder"


@pytest.mark.parametrize("extends", ["/etc/base.yaml", 1, ["base.yaml"], {"path": "base.yaml"}])
def test_extends_must_be_a_relative_path(tmp_path: Path, extends: Any) -> None:
    write(tmp_path, "job.yaml", {"extends": extends})

    assert invalid(load, tmp_path) == [FieldError("extends", "must be a relative path to the base manifest")]


def test_a_missing_base_file_is_named(tmp_path: Path) -> None:
    job = write(tmp_path, "job.yaml", {"extends": "base.yaml"})

    assert invalid(load, tmp_path) == [FieldError("extends", f"base manifest base.yaml not found next to {job}")]


def test_a_base_that_is_a_directory_counts_as_missing(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").mkdir()
    job = write(tmp_path, "job.yaml", {"extends": "base.yaml"})

    assert invalid(load, tmp_path) == [FieldError("extends", f"base manifest base.yaml not found next to {job}")]


def test_only_one_level_of_extends_is_allowed(tmp_path: Path) -> None:
    write(tmp_path, "root.yaml", BASE)
    write(tmp_path, "base.yaml", {"extends": "root.yaml", "replicas": 2})
    write(tmp_path, "job.yaml", {"extends": "base.yaml"})

    assert invalid(load, tmp_path) == [
        FieldError("extends", "base.yaml extends another manifest; only one level is allowed")
    ]


def test_a_base_that_is_not_valid_yaml_is_named(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", "name: [adder\n")
    write(tmp_path, "job.yaml", {"extends": "base.yaml"})

    (error,) = invalid(load, tmp_path)

    assert error.path == "manifest"
    assert error.message.startswith(f"{tmp_path / 'base.yaml'} is not valid YAML")


def test_extends_null_means_no_base(tmp_path: Path) -> None:
    write(tmp_path, "job.yaml", "extends:\nname: adder\n")

    assert load(tmp_path) == {"extends": None, "name": "adder"}


# --- merge ---------------------------------------------------------------------------------------


def test_merge_does_not_change_its_inputs() -> None:
    base = {"a": {"b": [1, 2]}, "c": 1}
    overlay = {"a": {"d": {"e": 1}}}

    merged = merge(base, overlay)
    merged["a"]["b"].append(3)
    merged["a"]["d"]["e"] = 2

    assert base == {"a": {"b": [1, 2]}, "c": 1}
    assert overlay == {"a": {"d": {"e": 1}}}


def test_merge_keeps_the_base_key_order_and_appends_new_keys() -> None:
    assert list(merge({"a": 1, "b": 2}, {"c": 3, "a": 4})) == ["a", "b", "c"]


# --- apply_overrides -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("version=1.2.3", {"version": "1.2.3"}),
        ("replicas=3", {"replicas": 3}),  # values are YAML: a number stays a number
        ("version='1.0'", {"version": "1.0"}),  # ...and quoting keeps a string
        ("version=1.0", {"version": 1.0}),
        ("flag=true", {"flag": True}),
        ("list=[a, b]", {"list": ["a", "b"]}),
        ("map={a: 1}", {"map": {"a": 1}}),
        ("name=", {"name": ""}),  # an empty value is an empty string, not null
        ("name=null", {"name": None}),
        ("labels.eq=a=b", {"labels": {"eq": "a=b"}}),  # only the first `=` splits
    ],
)
def test_an_override_value_is_parsed_as_yaml(override: str, expected: dict[str, Any]) -> None:
    assert apply_overrides({}, [override]) == expected


def test_overrides_follow_dotted_paths_into_existing_mappings() -> None:
    data = {"name": "adder", "jobtype_extra": {"entrypoint_path": "entrypoint.py"}, "runtime_env": {"A": "1"}}

    result = apply_overrides(data, ["jobtype_extra.entrypoint_class=Adder", "runtime_env.A=two", "name=adder-2"])

    assert result == {
        "name": "adder-2",
        "jobtype_extra": {"entrypoint_path": "entrypoint.py", "entrypoint_class": "Adder"},
        "runtime_env": {"A": "two"},
    }


def test_overrides_create_missing_mappings_on_the_way() -> None:
    assert apply_overrides({"name": "adder"}, ["resources.limits.memory_max=1Gi"]) == {
        "name": "adder",
        "resources": {"limits": {"memory_max": "1Gi"}},
    }


def test_later_overrides_win() -> None:
    assert apply_overrides({}, ["replicas=2", "replicas=5"]) == {"replicas": 5}


def test_overrides_do_not_change_the_input() -> None:
    data = {"runtime_env": {"A": "1"}}

    apply_overrides(data, ["runtime_env.B=2"])

    assert data == {"runtime_env": {"A": "1"}}


@pytest.mark.parametrize(
    ("data", "override", "path"),
    [
        ({"name": "adder"}, "name.first=x", "name"),
        ({"public_endpoints": ["/a"]}, "public_endpoints.0=/b", "public_endpoints"),
        ({"git": {"remote": "r"}}, "git.remote.url=x", "git.remote"),
    ],
)
def test_an_override_through_a_non_mapping_is_an_error(data: dict[str, Any], override: str, path: str) -> None:
    assert invalid(apply_overrides, data, [override]) == [
        FieldError(path, "is not a mapping; cannot set a key inside it")
    ]


@pytest.mark.parametrize("override", ["replicas", "=3", ""])
def test_an_override_without_key_and_equals_is_an_error(override: str) -> None:
    assert invalid(apply_overrides, {}, [override]) == [FieldError("-e", f"{override!r} must be KEY.PATH=VALUE")]


def test_an_override_with_invalid_yaml_names_the_key() -> None:
    (error,) = invalid(apply_overrides, {}, ["labels.x=[unclosed"])

    assert error.path == "labels.x"
    assert error.message.startswith("override value is not valid YAML: ")
