"""rtd commands about where rtd talks to: named remotes, client and server versions, shell completion."""

from __future__ import annotations

import sys
from typing import Any

import click
from click.shell_completion import get_completion_class

from cli import __version__
from cli.client import ApiClient, ApiError
from cli.config import REMOTE_NAME, ClientConfig
from cli.errors import EXIT_INVALID_INPUT, EXIT_NOT_FOUND, RtdError
from cli.output import print_json, table, warn

COMPLETE_VAR = "_RTD_COMPLETE"


def register(main: click.Group) -> None:
    for command in (remote, version, completion):
        main.add_command(command)


def _current(ctx: click.Context) -> tuple[ClientConfig, str, str, str | None]:
    """The config, the remote as chosen (name or URL), its URL and its token."""
    root = ctx.find_root()
    config = ClientConfig.load()
    chosen = config.chosen(root.params.get("remote"))
    url, token = config.resolve(chosen, root.params.get("token"))
    return config, chosen, url, token


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the current remote as JSON.")
@click.pass_context
def remote(ctx: click.Context, as_json: bool) -> None:
    """Print the remote rtd talks to, or manage named remotes (add, use, list, remove)."""
    if ctx.invoked_subcommand is not None:
        return
    config, _, url, token = _current(ctx)
    name = config.name_of(url)
    if as_json:
        print_json({"name": name, "url": url, "logged_in": bool(token)})
        return
    click.echo(f"{f'{name} ' if name else ''}{url} ({'logged in' if token else 'no token'})")


@remote.command("add")
@click.argument("name")
@click.argument("url")
@click.option("--use", "use_it", is_flag=True, help="Make it the current remote too.")
def remote_add(name: str, url: str, use_it: bool) -> None:
    """Name a daemon's URL, e.g. rtd remote add prod https://racetrack.example.com."""
    config = ClientConfig.load()
    try:
        normalized = config.add_remote(name, url)
    except ValueError as exc:
        raise RtdError(str(exc), exit_code=EXIT_INVALID_INPUT) from exc
    if use_it:
        config.remote = name
    config.save()
    click.echo(f"remote {name} is {normalized}" + (" (now the current remote)" if use_it else ""))
    if normalized not in config.tokens:
        click.echo(f"log in to it with: rtd --remote {name} login TOKEN", err=True)


@remote.command("use")
@click.argument("name_or_url")
def remote_use(name_or_url: str) -> None:
    """Make NAME (or a URL) the remote every later command talks to."""
    config = ClientConfig.load()
    chosen = name_or_url.strip()
    if chosen not in config.remotes and REMOTE_NAME.match(chosen) and chosen != "localhost":
        raise RtdError(
            f"no remote named {chosen}", hint="rtd remote list shows them; a URL works too", exit_code=EXIT_NOT_FOUND
        )  # a mistyped name, not a host: a host has a dot or a port
    config.remote = chosen
    config.save()
    url = config.url_of(config.remote)
    click.echo(
        f"using {url}"
        + (f" ({name_or_url})" if name_or_url in config.remotes else "")
        + ("" if url in config.tokens else "; not logged in there")
    )


@remote.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the remotes as JSON.")
@click.pass_context
def remote_list(ctx: click.Context, as_json: bool) -> None:
    """Named remotes, which one is current, and where you are logged in."""
    config, chosen, url, _ = _current(ctx)
    rows = [
        {
            "name": name,
            "url": named_url,
            "current": named_url == url and (chosen == name or chosen not in config.remotes),
            "logged_in": named_url in config.tokens,
        }
        for name, named_url in sorted(config.remotes.items())
    ]
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo(f"no named remotes; the current one is {url} (rtd remote add NAME URL names one)")
        return
    table(
        [
            ("", "NAME", "URL", "LOGGED IN"),
            *[("*" if r["current"] else "", r["name"], r["url"], "yes" if r["logged_in"] else "no") for r in rows],
        ]
    )


@remote.command("remove")
@click.argument("name")
def remote_remove(name: str) -> None:
    """Forget a named remote (and the token saved for its URL)."""
    config = ClientConfig.load()
    if name not in config.remotes:
        raise RtdError(f"no remote named {name}", hint="rtd remote list shows them", exit_code=EXIT_NOT_FOUND)
    url = config.remotes.pop(name)
    if url not in config.remotes.values():
        config.tokens.pop(url, None)
    if config.remote == name:
        config.remote = None
    config.save()
    click.echo(f"removed remote {name} ({url})")
    if config.remote is None:
        click.echo(f"the current remote is {config.url_of(config.chosen(None))} again", err=True)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print both versions as JSON.")
@click.pass_context
def version(ctx: click.Context, as_json: bool) -> None:
    """Print rtd's version and the daemon's; warn when their major.minor differ."""
    _, _, url, token = _current(ctx)
    try:
        info = ApiClient(url, token, timeout=10).info()
    except ApiError as exc:
        if as_json:
            print_json({"client": __version__, "server": None, "remote": url})
        else:
            click.echo(f"rtd {__version__}")
        raise exc
    server = str(info.get("git_version") or "unknown")
    memory = info.get("daemon_memory")  # racetrackd reports its own; Racetrack's lifecycle does not
    if as_json:
        found = {"client": __version__, "server": server, "remote": url}
        print_json(found if memory is None else {**found, "server_memory": memory})
    else:
        click.echo(f"rtd {__version__}")
        click.echo(f"racetrackd {server} at {url}")
        if isinstance(memory, dict) and isinstance(memory.get("pss_bytes"), int):
            click.echo(_memory_line(memory))
    if _major_minor(server) != _major_minor(__version__):
        warn(
            f"rtd {__version__} and racetrackd {server} differ in major.minor version; "
            "some commands may not work: install the rtd that comes with this racetrackd"
        )


def _memory_line(memory: dict[str, Any]) -> str:
    processes = [p for p in memory.get("processes") or [] if isinstance(p, dict)]
    each = ", ".join(f"{p.get('role', '?')} {_mib(p.get('pss_bytes'))}" for p in processes)
    return f"racetrackd memory: {_mib(memory['pss_bytes'])} MiB PSS" + (f" ({each})" if each else "")


def _mib(size: object) -> str:
    return f"{size / 2**20:.1f}" if isinstance(size, int) else "?"


def _major_minor(text: str) -> tuple[str, ...]:
    return tuple(text.lstrip("v").split(".")[:2])


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script; e.g. in ~/.bashrc: eval "$(rtd completion bash)".

    Commands, options and (from the daemon, when it answers) job names complete on TAB.
    """
    completer_class = get_completion_class(shell)
    if completer_class is None:  # click knows all three; guarded for older click versions
        raise RtdError(f"no completion for {shell}", exit_code=EXIT_INVALID_INPUT)
    root = ctx.find_root()
    sys.stdout.write(completer_class(root.command, {}, "rtd", COMPLETE_VAR).source())
