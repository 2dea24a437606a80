"""What every rtd command shares: exit codes, the API client for the chosen remote, tables."""

from __future__ import annotations

from collections.abc import Sequence

import click

from cli.client import ApiClient
from cli.config import ClientConfig

EXIT_API_ERROR = 1
EXIT_DEPLOY_FAILED = 2
EXIT_INVALID_MANIFEST = 3


def client_for(ctx: click.Context) -> ApiClient:
    """The client for the remote and token chosen by flags, environment or `rtd login`."""
    root = ctx.find_root()
    config = ClientConfig.load()
    remote, token = config.resolve(root.obj.get("remote"), root.obj.get("token"))
    return ApiClient(remote, token)


def table(rows: Sequence[Sequence[object]]) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
