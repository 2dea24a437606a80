"""What every rtd command shares: the API client for the chosen remote, and job-name completion."""

from __future__ import annotations

import click
from click.shell_completion import CompletionItem

from cli.client import ApiClient
from cli.config import ClientConfig

COMPLETION_TIMEOUT = 2.0  # seconds: a shell waiting on TAB should not hang on a slow or absent daemon


def client_for(ctx: click.Context, timeout: float = 60) -> ApiClient:
    """The client for the remote and token chosen by flags, environment or `rtd login` / `rtd remote use`."""
    root = ctx.find_root()
    remote, token = ClientConfig.load().resolve(root.params.get("remote"), root.params.get("token"))
    return ApiClient(remote, token, timeout=timeout)


def complete_job_name(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Job names from the daemon for shell completion; nothing (and no message) when it cannot be asked."""
    try:
        jobs = client_for(ctx, timeout=COMPLETION_TIMEOUT).jobs()
    except Exception:  # noqa: BLE001 - completion must never print a traceback into the user's shell
        return []
    names = sorted({str(job["name"]) for job in jobs if str(job["name"]).startswith(incomplete)})
    return [CompletionItem(name) for name in names]
