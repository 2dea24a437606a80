"""jobmanifest.quantities: Kubernetes-style quantities as bytes (memory) or cores (CPU)."""

from __future__ import annotations

import pytest

from jobmanifest.quantities import format_bytes, parse_quantity


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("512Mi", 512 * 2**20),
        ("1Gi", 2**30),
        ("1.5Gi", 1.5 * 2**30),
        ("64Ki", 64 * 1024),
        ("2Ti", 2 * 2**40),
        ("1Pi", 2**50),
        ("1Ei", 2**60),
        ("1k", 1000),
        ("500M", 500 * 10**6),
        ("1G", 10**9),
        ("1T", 10**12),
        ("1P", 10**15),
        ("1E", 10**18),
        ("500m", 0.5),
        ("10m", 0.01),
        ("1000m", 1),
        ("250u", 250e-6),
        ("5n", 5e-9),
        ("0.5", 0.5),
        ("2", 2),
        ("1073741824", 2**30),
        (" 256Mi ", 256 * 2**20),  # surrounding spaces are forgiven
        (3, 3),
        (0.25, 0.25),
    ],
)
def test_parse_quantity(text: object, value: float) -> None:
    assert parse_quantity(text) == pytest.approx(value)


@pytest.mark.parametrize(
    "text",
    [
        "1GB",
        "512mb",
        "1 Gi",
        "Gi",
        "",
        "-1",
        "-512Mi",
        "1.5.5Mi",
        "1e3",
        "1Mi5",
        "lots",
        ".5",
        "5.",
        "0x10",
        "1gi",
        "1K",
    ],
)
def test_a_malformed_quantity_says_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_quantity(text)

    assert str(caught.value) == f"{text!r} is not a quantity like 512Mi, 1Gi, 0.5 or 500m"


@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_is_not_a_quantity(value: bool) -> None:
    with pytest.raises(ValueError, match="expected a quantity like 512Mi, 1Gi or 500m"):
        parse_quantity(value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (2**30, "1Gi"),
        (8 * 2**30, "8Gi"),
        (512 * 2**20, "512Mi"),
        (1536 * 2**20, "1536Mi"),
        (64 * 1024, "64Ki"),
        (1024, "1Ki"),
        (1000, "1000"),
        (1, "1"),
        (0, "0"),
        (float(2**30), "1Gi"),
    ],
)
def test_format_bytes(value: float, text: str) -> None:
    assert format_bytes(value) == text


@pytest.mark.parametrize("text", ["1Gi", "512Mi", "3Ki", "1536Mi", "7"])
def test_format_bytes_reads_back(text: str) -> None:
    assert format_bytes(parse_quantity(text)) == text
