"""`rtd maintenance`: an admin's switch that makes the daemon refuse deployments, rollbacks and
deletions (503) while the host is looked after, and job calls too unless the daemon runs with
RACETRACK_MAINTENANCE_BLOCKS_CALLS=false."""

from __future__ import annotations

from typing import Any

import click

from cli.common import client_for
from cli.output import print_json, when


def register(main: click.Group) -> None:
    main.add_command(maintenance)


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the state as JSON.")
@click.pass_context
def maintenance(ctx: click.Context, as_json: bool) -> None:
    """Show maintenance mode, or switch it (admins): rtd maintenance on|off."""
    if ctx.invoked_subcommand is None:
        _show(client_for(ctx).maintenance(), as_json)


@maintenance.command()
@click.option("-m", "--message", default="", help="Told to everyone whose change is refused.")
@click.option("--json", "as_json", is_flag=True, help="Print the new state as JSON.")
@click.pass_context
def on(ctx: click.Context, message: str, as_json: bool) -> None:
    """Refuse deployments, rollbacks, deletions and (by default) job calls until `rtd maintenance off`."""
    _show(client_for(ctx).set_maintenance(True, message), as_json)


@maintenance.command()
@click.option("--json", "as_json", is_flag=True, help="Print the new state as JSON.")
@click.pass_context
def off(ctx: click.Context, as_json: bool) -> None:
    """Accept changes again."""
    _show(client_for(ctx).set_maintenance(False, ""), as_json)


def _show(state: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(state)
        return
    if not state["maintenance_mode"]:
        click.echo("maintenance mode: off")
        return
    since = f" since {when(state['since'])}" if state.get("since") else ""
    by = f" by {state['changed_by']}" if state.get("changed_by") else ""
    click.echo(f"maintenance mode: ON{since}{by}")
    if state.get("message"):
        click.echo(f"message: {state['message']}")
