"""`rtd`: the root command. Every failure is one `error: ...` line (and a `hint: ...`), never a
traceback, and exits with its class's code (cli/errors.py); the commands live by concept in
cli/deploying.py, cli/jobs.py, cli/remotes.py and cli/access.py."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from cli import __version__
from cli.errors import EXIT_ERROR, EXIT_INTERRUPTED, RtdError
from cli.output import report_error

# Which module registers each command. A command's module is imported only when it runs, so
# `rtd list` does not load what `rtd submit` or `rtd init` need (jinja2, the plugin bundler, ...):
# rtd starts on about two thirds of the CPU (`rtd list --help`: 0.17 s against 0.25 s when every
# module was imported up front). tests/unit/test_cli_conventions.py checks this map
# against what the modules register.
COMMAND_MODULES = {
    **dict.fromkeys(["audit", "build-logs", "deploy", "deployments", "rollback", "submit", "validate"], "deploying"),
    **dict.fromkeys(["call", "delete", "list", "logs", "nodes", "status", "tasks"], "jobs"),
    **dict.fromkeys(["completion", "remote", "version"], "remotes"),
    **dict.fromkeys(["esc", "grant", "login", "logout", "public-endpoints", "token", "user"], "access"),
    "plugin": "plugins",
    "maintenance": "maintenance",
    "init": "scaffold",
}


def registered_commands(module_name: str) -> dict[str, click.Command]:
    """The commands cli.<module_name> registers, by name."""
    group = click.Group()
    importlib.import_module(f"cli.{module_name}").register(group)
    return dict(group.commands)


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = COMMAND_MODULES.get(cmd_name)
        return None if module_name is None else registered_commands(module_name)[cmd_name]

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RtdError as exc:
            report_error(exc.message, exc.hint)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("", err=True)
            report_error("interrupted")
            sys.exit(EXIT_INTERRUPTED)
        except click.UsageError as exc:  # a subcommand's bad option or argument: our one-line form, not click's
            report_error(exc.format_message(), f"{(exc.ctx or ctx).command_path} --help shows the usage")
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            report_error(exc.format_message())
            sys.exit(exc.exit_code)
        except click.Abort:  # Ctrl-C or end of input at a prompt
            click.echo("", err=True)
            report_error("aborted")
            sys.exit(EXIT_INTERRUPTED)
        except (click.exceptions.Exit, SystemExit):
            raise
        except Exception as exc:  # a bug in rtd: still one line, and the traceback on request
            if os.environ.get("RTD_DEBUG"):
                raise
            report_error(
                f"rtd failed unexpectedly: {type(exc).__name__}: {exc}",
                "run again with RTD_DEBUG=1 for the traceback, and report it",
            )
            sys.exit(EXIT_ERROR)


@click.group(cls=_Group)
@click.option(
    "--remote",
    envvar="RTD_REMOTE",
    help="racetrackd to talk to: a remote's name (rtd remote add) or a URL. Default: rtd remote use, "
    "else http://127.0.0.1:7102.",
)
@click.option("--token", envvar="RTD_TOKEN", help="Auth token (default: the one saved by `rtd login`).")
@click.version_option(__version__, prog_name="rtd")
@click.pass_context
def main(ctx: click.Context, remote: str | None, token: str | None) -> None:
    """rtd: deploy and call jobs on racetrackd.

    Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 auth, 5 conflict, 6 deployment failed,
    7 cannot reach racetrackd, 8 invalid input (manifest), 130 interrupted.
    """
    ctx.obj = {"remote": remote, "token": token}
