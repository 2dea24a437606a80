"""Semantic versions (semver.org) and the ways users point at them: exact, `latest`, `1.x`, `1.*`."""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Callable, Iterable
from typing import TypeVar

SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?\Z"  # \Z: $ would accept a trailing newline
)
T = TypeVar("T")


@dataclasses.dataclass(frozen=True, order=False)
class SemanticVersion:
    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...]
    text: str

    @classmethod
    def parse(cls, text: str) -> SemanticVersion:
        match = SEMVER.match(text)
        if not match:
            raise ValueError(f"{text!r} is not a semantic version like 1.2.3")
        major, minor, patch, pre, _build = match.groups()
        return cls(int(major), int(minor), int(patch), tuple(pre.split(".")) if pre else (), text)

    @property
    def is_stable(self) -> bool:
        return not self.prerelease

    def sort_key(self) -> tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]:
        """semver.org precedence: a pre-release sorts before its release; numeric ids before alphanumeric."""
        ids = tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in self.prerelease)
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, ids)


def is_semver(text: str) -> bool:
    return bool(SEMVER.match(text))


def is_alias(text: str) -> bool:
    """`latest` or an x-pattern like `1.x` / `1.2.x`: names that resolve to some exact version."""
    if text == "latest":
        return True
    parts = text.split(".")
    return 1 < len(parts) <= 3 and parts[-1] == "x" and all(p.isdigit() or p == "x" for p in parts)


def select(requested: str, candidates: Iterable[T], version_of: Callable[[T], str]) -> T | None:
    """Pick from `candidates` the one `requested` names: exact, `latest`, `1.x`, or a wildcard `1.*`.

    `latest` and `x` patterns consider stable versions only; wildcards (used for job types) match
    pre-releases too, as Racetrack does. The highest match wins.
    """
    items = list(candidates)
    if not is_alias(requested) and "*" not in requested:
        return next((item for item in items if version_of(item) == requested), None)
    matching: list[tuple[SemanticVersion, T]] = []
    for item in items:
        try:
            version = SemanticVersion.parse(version_of(item))
        except ValueError:
            continue
        if "*" in requested:
            ok = fnmatch.fnmatchcase(version.text, requested)
        elif requested == "latest":
            ok = version.is_stable
        else:
            ok = version.is_stable and _matches_x(version, requested)
        if ok:
            matching.append((version, item))
    if not matching:
        return None
    return max(matching, key=lambda pair: pair[0].sort_key())[1]


def _matches_x(version: SemanticVersion, pattern: str) -> bool:
    actual = (str(version.major), str(version.minor), str(version.patch))
    return all(want in ("x", got) for want, got in zip(pattern.split("."), actual, strict=False))
