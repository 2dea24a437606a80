"""rtd commands for who may do what: login, logout, token, and the admin groups user, esc,
grant and public-endpoints. Tokens are printed only where they are made (and by `rtd token`)."""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

import click

from cli.client import ApiClient
from cli.common import client_for
from cli.config import ClientConfig
from cli.errors import EXIT_AUTH, RtdError
from cli.output import table

SCOPES = ("read_job", "deploy_job", "deploy_new_family", "delete_job", "call_job", "call_admin_api", "full_access")
DURATION = re.compile(r"^(\d+)\s*([smhdw]?)$")
UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
SUBJECT_HELP = "user:NAME, esc:ID or job_family:NAME"


def register(main: click.Group) -> None:
    for command in (login, logout, token, user, esc, grant, public_endpoints):
        main.add_command(command)


# ---- your own session
@click.command()
@click.argument("token", required=False)
@click.option("--username", help="Log in with a username; the password is prompted for.")
@click.option("--remote", "login_remote", help="racetrackd URL to log in to (then the default remote).")
@click.pass_context
def login(ctx: click.Context, token: str | None, username: str | None, login_remote: str | None) -> None:
    """Log in with TOKEN, or --username (password prompt), and save the token for later commands."""
    config = ClientConfig.load()
    chosen = config.chosen(login_remote or ctx.find_root().obj.get("remote"))  # a remote's name stays a name
    remote, _ = config.resolve(chosen, None)
    if username:
        if token:
            raise click.UsageError("give a TOKEN or --username, not both")
        password = click.prompt("Password", hide_input=True, err=True)
        profile = ApiClient(remote, None).login(username, password)
        token = str(profile["token"])
    elif not token:
        raise click.UsageError("give a TOKEN (racetrackd admin-token prints the admin's) or --username NAME")
    profile = ApiClient(remote, token).whoami()  # 401 when the token is wrong
    config.remote = chosen
    config.tokens[remote] = token
    config.save()
    click.echo(f"logged in to {remote} as {profile['username']} (token saved in {config.path})")


@click.command()
@click.pass_context
def logout(ctx: click.Context) -> None:
    """Forget the saved token (a password login's token is also revoked on the daemon)."""
    config = ClientConfig.load()
    remote, saved = config.resolve(ctx.find_root().obj.get("remote"), None)
    if remote not in config.tokens:
        click.echo(f"not logged in to {remote}")
        return
    if saved:
        ApiClient(remote, saved).logout()
    del config.tokens[remote]
    config.save()
    click.echo(f"logged out of {remote}")


@click.group(invoke_without_command=True)
@click.pass_context
def token(ctx: click.Context) -> None:
    """Print the token rtd uses (for curl: -H "X-Racetrack-Auth: $(rtd token)"), or manage tokens."""
    if ctx.invoked_subcommand is None:
        root = ctx.find_root().obj
        _, current = ClientConfig.load().resolve(root.get("remote"), root.get("token"))
        if not current:
            raise RtdError(
                "no token for this remote",
                hint="log in with: rtd login TOKEN (or --username NAME)",
                exit_code=EXIT_AUTH,
            )
        click.echo(current)


@token.command("list")
@click.option("--subject", help=f"Whose tokens ({SUBJECT_HELP}; admins only). Default: yours.")
@click.option("--all", "everyone", is_flag=True, help="Every subject's tokens (admins only).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def token_list(ctx: click.Context, subject: str | None, everyone: bool, as_json: bool) -> None:
    """List tokens: id, whose, state, expiry and last use (never the tokens themselves)."""
    rows = client_for(ctx).tokens(subject, everyone)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table(
        [
            ("ID", "SUBJECT", "STATE", "EXPIRES", "LAST USED", "ORIGIN", "DESCRIPTION"),
            *[
                (
                    row["id"],
                    row["subject"],
                    _token_state(row),
                    _when(row["expiry_time"]),
                    _when(row["last_use_time"]),
                    row["origin"],
                    row["description"],
                )
                for row in rows
            ],
        ]
    )


@token.command("create")
@click.option("--subject", help=f"For whom ({SUBJECT_HELP}; admins only). Default: you.")
@click.option("--expires", help="Lifetime, e.g. 90d, 12h, 30m (default: never).")
@click.option("--description", default="", help="What the token is for.")
@click.pass_context
def token_create(ctx: click.Context, subject: str | None, expires: str | None, description: str) -> None:
    """Make a token and print it once (on stdout; save it now)."""
    made = client_for(ctx).create_token(subject, _seconds(expires) if expires else None, description)
    click.echo(f"token {made['id']} for {made['subject']}, expires {_when(made['expiry_time'])}:", err=True)
    click.echo(made["token"])


@token.command("revoke")
@click.argument("token_id", type=int)
@click.pass_context
def token_revoke(ctx: click.Context, token_id: int) -> None:
    """Revoke a token: it stops working at once."""
    row = client_for(ctx).revoke_token(token_id)
    click.echo(f"revoked token {row['id']} of {row['subject']}")


# ---- users
@click.group()
def user() -> None:
    """Users (admins only, except `rtd user passwd` for yourself)."""


@user.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def user_list(ctx: click.Context, as_json: bool) -> None:
    users = client_for(ctx).users()
    if as_json:
        click.echo(json.dumps(users, indent=2))
        return
    table(
        [
            ("USERNAME", "ACTIVE", "STAFF", "PASSWORD", "LAST LOGIN"),
            *[
                (
                    u["username"],
                    _yes(u["is_active"]),
                    _yes(u["is_staff"]),
                    _yes(u["has_password"]),
                    _when(u["last_login_time"]),
                )
                for u in users
            ],
        ]
    )


@user.command("add")
@click.argument("username")
@click.option("--staff", is_flag=True, help="Full access to everything.")
@click.option(
    "--password/--no-password",
    "with_password",
    default=True,
    show_default=True,
    help="Prompt for a password (without one the user logs in with tokens only).",
)
@click.pass_context
def user_add(ctx: click.Context, username: str, staff: bool, with_password: bool) -> None:
    """Create a user who may read, call and deploy jobs (and delete the families they start)."""
    password = click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True) if with_password else None
    made = client_for(ctx).create_user(username, password, staff)
    click.echo(f"created user {made['username']}" + (" (staff)" if made["is_staff"] else ""))
    click.echo(f"give them a token with: rtd token create --subject user:{made['username']}", err=True)


@user.command("remove")
@click.argument("username")
@click.pass_context
def user_remove(ctx: click.Context, username: str) -> None:
    """Delete a user with their tokens and grants."""
    client_for(ctx).delete_user(username)
    click.echo(f"removed user {username}")


@user.command("activate")
@click.argument("username")
@click.pass_context
def user_activate(ctx: click.Context, username: str) -> None:
    """Let a user log in (e.g. one who registered)."""
    client_for(ctx).update_user(username, {"is_active": True})
    click.echo(f"activated {username}")


@user.command("deactivate")
@click.argument("username")
@click.pass_context
def user_deactivate(ctx: click.Context, username: str) -> None:
    """Stop a user at once: every token of theirs stops working."""
    client_for(ctx).update_user(username, {"is_active": False})
    click.echo(f"deactivated {username}")


@user.command("passwd")
@click.argument("username", required=False)
@click.pass_context
def user_passwd(ctx: click.Context, username: str | None) -> None:
    """Change your password, or (admins) set USERNAME's."""
    client = client_for(ctx)
    if username:
        new = click.prompt("New password", hide_input=True, confirmation_prompt=True, err=True)
        client.update_user(username, {"password": new})
        click.echo(f"password of {username} set")
        return
    old = click.prompt("Current password (empty if none)", hide_input=True, default="", show_default=False, err=True)
    new = click.prompt("New password", hide_input=True, confirmation_prompt=True, err=True)
    client.change_password(old, new)
    click.echo("password changed")


# ---- external service consumers
@click.group()
def esc() -> None:
    """External service consumers: programs that call jobs with their own tokens (admins only)."""


@esc.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def esc_list(ctx: click.Context, as_json: bool) -> None:
    escs = client_for(ctx).escs()
    if as_json:
        click.echo(json.dumps(escs, indent=2))
        return
    table([("ID", "NAME", "CREATED"), *[(e["id"], e["name"], _when(e["create_time"])) for e in escs]])


@esc.command("add")
@click.argument("name")
@click.option("--id", "esc_id", help="Its id (default: generated).")
@click.pass_context
def esc_add(ctx: click.Context, name: str, esc_id: str | None) -> None:
    """Create an ESC. It may call nothing until granted (rtd grant add esc:ID call_job --job NAME)."""
    made = client_for(ctx).create_esc(name, esc_id)
    click.echo(f"created ESC {made['name']} with id {made['id']}")
    click.echo(
        f"next: rtd token create --subject esc:{made['id']}; rtd grant add esc:{made['id']} call_job --job JOB",
        err=True,
    )


@esc.command("remove")
@click.argument("esc_id")
@click.pass_context
def esc_remove(ctx: click.Context, esc_id: str) -> None:
    """Delete an ESC with its tokens and grants."""
    client_for(ctx).delete_esc(esc_id)
    click.echo(f"removed ESC {esc_id}")


# ---- grants
@click.group()
def grant() -> None:
    """Who may do what: scopes granted on all jobs, a family, a version or one endpoint."""


@grant.command("list")
@click.option("--subject", help=f"Whose grants ({SUBJECT_HELP}). Default: yours (admins: everyone's).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def grant_list(ctx: click.Context, subject: str | None, as_json: bool) -> None:
    grants = client_for(ctx).grants(subject)
    if as_json:
        click.echo(json.dumps(grants, indent=2))
        return
    table(
        [
            ("ID", "SUBJECT", "SCOPE", "JOB", "VERSION", "ENDPOINT"),
            *[
                (g["id"], g["subject"], g["scope"], g["job_name"] or "*", g["job_version"] or "*", g["endpoint"] or "*")
                for g in grants
            ],
        ]
    )


@grant.command("add")
@click.argument("subject")
@click.argument("scope", type=click.Choice(SCOPES))
@click.option("--job", "job_name", help="Only this job family (default: every job).")
@click.option("--version", "job_version", help="Only this version of --job.")
@click.option("--endpoint", help="Only this endpoint of --job, e.g. /api/v1/perform (call_job).")
@click.pass_context
def grant_add(
    ctx: click.Context, subject: str, scope: str, job_name: str | None, job_version: str | None, endpoint: str | None
) -> None:
    """Grant SUBJECT (user:NAME, esc:ID, job_family:NAME) SCOPE; it applies at once."""
    made = client_for(ctx).add_grant(subject, scope, job_name, job_version, endpoint)
    where = " ".join(part for part in (made["job_name"], made["job_version"], made["endpoint"]) if part) or "all jobs"
    click.echo(f"granted {made['scope']} on {where} to {made['subject']} (grant {made['id']})")


@grant.command("remove")
@click.argument("grant_id", type=int)
@click.pass_context
def grant_remove(ctx: click.Context, grant_id: int) -> None:
    client_for(ctx).remove_grant(grant_id)
    click.echo(f"removed grant {grant_id}")


# ---- public endpoints
@click.group("public-endpoints")
def public_endpoints() -> None:
    """Endpoints jobs ask to open to callers without a token (job.yaml public_endpoints); admins approve."""


@public_endpoints.command("list")
@click.option("--pending", is_flag=True, help="Only those waiting for approval.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def public_list(ctx: click.Context, pending: bool, as_json: bool) -> None:
    rows = client_for(ctx).public_endpoints(pending)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table(
        [
            ("ID", "JOB", "VERSION", "ENDPOINT", "STATE"),
            *[
                (r["id"], r["job_name"], r["job_version"], r["endpoint"], "open" if r["active"] else "pending")
                for r in rows
            ],
        ]
    )


@public_endpoints.command("approve")
@click.argument("request_id", type=int)
@click.pass_context
def public_approve(ctx: click.Context, request_id: int) -> None:
    """Open the endpoint to everyone."""
    row = client_for(ctx).set_public_endpoint(request_id, True)
    click.echo(f"{row['job_name']} {row['job_version']} {row['endpoint']} is public")


@public_endpoints.command("close")
@click.argument("request_id", type=int)
@click.pass_context
def public_close(ctx: click.Context, request_id: int) -> None:
    """Require tokens on the endpoint again."""
    row = client_for(ctx).set_public_endpoint(request_id, False)
    click.echo(f"{row['job_name']} {row['job_version']} {row['endpoint']} needs a token again")


# ---- formatting
def _seconds(text: str) -> int:
    match = DURATION.match(text.strip().lower())
    if not match or int(match.group(1)) == 0:
        raise click.BadParameter(f"{text!r} is not a duration like 90d, 12h or 30m", param_hint="--expires")
    return int(match.group(1)) * UNIT_SECONDS[match.group(2)]


def _when(timestamp: Any) -> str:
    if not timestamp:
        return "-"
    return datetime.datetime.fromtimestamp(float(timestamp)).strftime("%Y-%m-%d %H:%M")


def _yes(value: Any) -> str:
    return "yes" if value else "no"


def _token_state(row: dict[str, Any]) -> str:
    if row["revoked"]:
        return "revoked"
    return "expired" if row["expired"] else "active"
