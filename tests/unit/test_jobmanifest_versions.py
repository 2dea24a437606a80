"""jobmanifest.versions: semver.org precedence, aliases (`latest`, `1.x`) and wildcards (`1.*`)."""

from __future__ import annotations

import pytest

from jobmanifest.versions import SemanticVersion, is_alias, is_semver, select

# semver.org, section 11: each is lower than the next.
PRECEDENCE = [
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.1",
    "1.2.0",
    "1.10.0",
    "2.0.0-0",
    "2.0.0",
]


def key(text: str) -> object:
    return SemanticVersion.parse(text).sort_key()


def test_parse_splits_the_parts() -> None:
    version = SemanticVersion.parse("1.20.3-rc.1+build.7")

    assert (version.major, version.minor, version.patch) == (1, 20, 3)
    assert version.prerelease == ("rc", "1")
    assert version.text == "1.20.3-rc.1+build.7"
    assert not version.is_stable
    assert SemanticVersion.parse("1.0.0+build").is_stable


@pytest.mark.parametrize(
    "text",
    [
        "1.0",
        "1",
        "v1.0.0",
        "01.0.0",
        "1.01.0",
        "1.0.0-",
        "1.0.0-01",
        "1.0.0+",
        "1.0.0-a..b",
        "latest",
        "1.x",
        "",
        " 1.0.0",
        "1.0.0 ",
        "1.0.0\n",
        "1.0.0-é",
    ],
)
def test_parse_rejects_what_is_not_semver(text: str) -> None:
    with pytest.raises(ValueError, match="is not a semantic version like 1.2.3"):
        SemanticVersion.parse(text)
    assert not is_semver(text)


@pytest.mark.parametrize(("lower", "higher"), list(zip(PRECEDENCE, PRECEDENCE[1:], strict=False)))
def test_precedence_follows_semver_org(lower: str, higher: str) -> None:
    assert key(lower) < key(higher)


def test_sorting_a_shuffled_list_gives_semver_order() -> None:
    shuffled = PRECEDENCE[::2] + PRECEDENCE[1::2][::-1]

    assert sorted(shuffled, key=key) == PRECEDENCE


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("1.0.0-alpha.2", "1.0.0-alpha.10"),  # numeric identifiers compare numerically
        ("1.0.0-2", "1.0.0-10"),
        ("1.0.0-999", "1.0.0-a"),  # numeric identifiers are lower than alphanumeric ones
        ("1.0.0-alpha", "1.0.0-alpha.0"),  # more identifiers win when the others are equal
        ("1.0.0-Beta", "1.0.0-alpha"),  # alphanumeric identifiers compare in ASCII order
        ("9.9.9", "10.0.0"),
        ("1.0.0-rc.1", "1.0.0"),
    ],
)
def test_precedence_details(lower: str, higher: str) -> None:
    assert key(lower) < key(higher)


def test_build_metadata_does_not_affect_precedence() -> None:
    assert key("1.0.0+build.1") == key("1.0.0+build.2") == key("1.0.0")


@pytest.mark.parametrize(
    ("text", "alias"),
    [
        ("latest", True),
        ("1.x", True),
        ("1.2.x", True),
        ("x.x", True),
        ("1.0.0", False),
        ("1.*", False),
        ("x", False),
        ("1.x.0.x", False),
        ("Latest", False),
        ("1.y", False),
    ],
)
def test_is_alias(text: str, alias: bool) -> None:
    assert is_alias(text) is alias


CANDIDATES = ["1.0.0", "1.2.0", "1.2.5", "1.10.0", "2.0.0-rc.1", "1.11.0-beta", "0.9.0", "not-a-version"]


def pick(requested: str, candidates: list[str] = CANDIDATES) -> str | None:
    return select(requested, candidates, lambda version: version)


@pytest.mark.parametrize(
    ("requested", "chosen"),
    [
        ("1.2.0", "1.2.0"),  # exact
        ("2.0.0-rc.1", "2.0.0-rc.1"),  # exact pre-release
        ("not-a-version", "not-a-version"),  # exact is a plain string match
        ("latest", "1.10.0"),  # highest stable, numerically (1.10 > 1.2)
        ("1.x", "1.10.0"),
        ("1.2.x", "1.2.5"),
        ("0.x", "0.9.0"),
        ("1.*", "1.11.0-beta"),  # wildcards include pre-releases
        ("2.*", "2.0.0-rc.1"),
        ("1.2.*", "1.2.5"),
        ("*", "2.0.0-rc.1"),
    ],
)
def test_select(requested: str, chosen: str) -> None:
    assert pick(requested) == chosen


@pytest.mark.parametrize("requested", ["3.0.0", "1.2", "2.x", "3.*", "1.3.x", "2.0.0"])
def test_select_finds_nothing(requested: str) -> None:
    assert pick(requested) is None


def test_latest_and_x_ignore_pre_releases() -> None:
    assert pick("latest", ["1.0.0-rc.1", "2.0.0-alpha"]) is None
    assert pick("1.x", ["1.0.0-rc.1"]) is None
    assert pick("1.0.x", ["1.0.0-rc.1", "1.0.0"]) == "1.0.0"


def test_a_release_beats_its_pre_releases_under_a_wildcard() -> None:
    assert pick("1.*", ["1.0.0-rc.2", "1.0.0", "1.0.0-rc.10"]) == "1.0.0"
    assert pick("1.*", ["1.0.0-rc.2", "1.0.0-rc.10"]) == "1.0.0-rc.10"


def test_select_with_nothing_to_choose_from() -> None:
    assert pick("latest", []) is None
    assert pick("1.0.0", []) is None


def test_select_returns_the_candidate_object() -> None:
    jobs = [{"v": "1.0.0"}, {"v": "1.1.0"}]

    assert select("latest", jobs, lambda job: job["v"]) is jobs[1]
