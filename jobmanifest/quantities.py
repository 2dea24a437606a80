"""Kubernetes-style quantities (`512Mi`, `1.5G`, `500m`) as numbers: bytes for memory, cores for CPU."""

from __future__ import annotations

import re

QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(Ei|Pi|Ti|Gi|Mi|Ki|E|P|T|G|M|k|m|u|n|p)?$")
SUFFIXES = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "m": 1e-3,
    "u": 1e-6,
    "n": 1e-9,
    "p": 1e-12,
    "": 1,
}


def parse_quantity(text: object) -> float:
    """The value of a quantity string (or a plain number); ValueError says what is accepted."""
    if isinstance(text, bool):
        raise ValueError("expected a quantity like 512Mi, 1Gi or 500m")
    if isinstance(text, (int, float)):
        return float(text)
    match = QUANTITY.match(str(text).strip())
    if not match:
        raise ValueError(f"{text!r} is not a quantity like 512Mi, 1Gi, 0.5 or 500m")
    number, suffix = match.groups()
    return float(number) * SUFFIXES[suffix or ""]


def format_bytes(value: float) -> str:
    for suffix in ("Gi", "Mi", "Ki"):
        if value >= SUFFIXES[suffix] and value % SUFFIXES[suffix] == 0:
            return f"{int(value // SUFFIXES[suffix])}{suffix}"
    return f"{int(value)}"
