"""`rtd plugin ...`: install, list, remove, download and bundle job-type plugins."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import click
import requests

from cli.common import client_for
from cli.errors import EXIT_INVALID_INPUT, EXIT_UNREACHABLE, RtdError
from cli.output import print_json, table
from pluginbundle import PluginInvalid, bundle

DOWNLOAD_TIMEOUT = 120


def register(main: click.Group) -> None:
    main.add_command(plugin)


@click.group()
def plugin() -> None:
    """Job-type plugins: install (admins), list, remove, download, bundle."""


@plugin.command()
@click.argument("source")
@click.option("--replace", is_flag=True, help="Remove the other installed versions of this plugin.")
@click.pass_context
def install(ctx: click.Context, source: str, replace: bool) -> None:
    """Install the plugin ZIP at SOURCE: a local file, or an http(s) URL of a .zip."""
    filename, data = _read_source(source)
    installed = client_for(ctx).install_plugin(filename, data, replace)
    job_types = ", ".join(installed.get("job_types") or []) or "no job types"
    click.echo(f"-----> installed plugin {installed['name']} {installed['version']} ({job_types})")


def _read_source(source: str) -> tuple[str, bytes]:
    path = Path(source)
    if path.is_file():
        return path.name, path.read_bytes()
    if source.startswith(("http://", "https://")):
        try:
            response = requests.get(source, timeout=DOWNLOAD_TIMEOUT)
        except requests.RequestException as exc:
            raise RtdError(f"cannot download {source}: {exc}", exit_code=EXIT_UNREACHABLE) from exc
        if response.status_code != 200:
            raise RtdError(f"cannot download {source}: HTTP {response.status_code}")
        return Path(urlparse(source).path).name or "plugin.zip", response.content
    if path.is_dir():
        raise click.BadParameter(
            f"{source} is a directory; make a ZIP first: rtd plugin bundle {source}", param_hint="SOURCE"
        )
    raise click.BadParameter(f"{source} is neither a file nor an http(s) URL", param_hint="SOURCE")


@plugin.command("list")
@click.option("--job-types", "job_types", is_flag=True, help="List the installed job type versions instead.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def list_plugins(ctx: click.Context, job_types: bool, as_json: bool) -> None:
    """The installed plugins (broken ones with their error), or the job type versions."""
    client = client_for(ctx)
    if job_types:
        versions = client.job_type_versions()
        if as_json:
            print_json(versions)
        else:
            for version in versions:
                click.echo(version)
        return
    plugins = client.plugins()
    if as_json:
        print_json(plugins)
        return
    rows: list[list[object]] = [["NAME", "VERSION", "JOB TYPES", "ORIGIN", "STATUS"]]
    for row in plugins:
        rows.append(
            [
                row["name"],
                row["version"] or "-",
                ", ".join(row.get("job_types") or []) or "-",
                "built-in" if row.get("builtin") else "uploaded",
                f"broken: {row['error']}" if row.get("error") else "ok",
            ]
        )
    table(rows)


@plugin.command()
@click.argument("name")
@click.option("--version", required=True, help="The version to remove.")
@click.pass_context
def remove(ctx: click.Context, name: str, version: str) -> None:
    """Remove plugin NAME at --version (jobs already built with it keep running)."""
    client_for(ctx).remove_plugin(name, version)
    click.echo(f"-----> removed plugin {name} {version}")


plugin.add_command(remove, name="uninstall")  # Racetrack's name for it


@plugin.command()
@click.argument("name")
@click.argument("version")
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    help="Directory to write NAME-VERSION.zip into.",
)
@click.pass_context
def download(ctx: click.Context, name: str, version: str, out_dir: Path) -> None:
    """Download an installed plugin as a ZIP (admins)."""
    data = client_for(ctx).download_plugin(name, version)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}-{version}.zip"
    target.write_bytes(data)
    click.echo(f"-----> saved {target}")


@plugin.command("bundle")
@click.argument("directory", default=".", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory to write the ZIP into (default: DIRECTORY).",
)
@click.option("--plugin-version", help="Override the manifest's version in the bundle.")
def bundle_command(directory: Path, out: Path | None, plugin_version: str | None) -> None:
    """Check the plugin in DIRECTORY and ZIP it as NAME-VERSION.zip (honours .racetrackignore)."""
    try:
        filename, data = bundle(directory, plugin_version)
    except PluginInvalid as exc:
        raise RtdError(
            f"{directory}: {exc}", hint="docs/plugins.md describes what a plugin holds", exit_code=EXIT_INVALID_INPUT
        ) from exc
    target = (out or directory) / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    click.echo(f"-----> bundled {target}")
