"""How rtd prints: tables for people, JSON for scripts, times, and one-line errors with hints."""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Sequence
from typing import Any

import click


def table(rows: Sequence[Sequence[object]]) -> None:
    """Left-aligned columns two spaces apart; the first row is the header."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def when(timestamp: Any) -> str:
    """A Unix time as local `YYYY-MM-DD HH:MM:SS`, or `-` for none."""
    if not timestamp:
        return "-"
    return datetime.datetime.fromtimestamp(float(timestamp)).strftime("%Y-%m-%d %H:%M:%S")


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def color() -> bool | None:
    """False when NO_COLOR is set to anything but '' (https://no-color.org), else click's own choice
    (colour on a terminal only)."""
    return False if os.environ.get("NO_COLOR") else None


def report_error(message: str, hint: str | None = None) -> None:
    """`error: MESSAGE` in red on stderr, then `hint: HINT` where one helps."""
    click.secho(f"error: {message}", fg="red", err=True, color=color())
    if hint:
        click.echo(f"hint: {hint}", err=True)


def warn(message: str) -> None:
    click.secho(f"warning: {message}", fg="yellow", err=True, color=color())
