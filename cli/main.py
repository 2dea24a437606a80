"""`rtd`: the root command. Every failure is one `error: ...` line (and a `hint: ...`), never a
traceback, and exits with its class's code (cli/errors.py); the commands live by concept in
cli/deploying.py, cli/jobs.py, cli/remotes.py and cli/access.py."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from cli import __version__, access, deploying, jobs, maintenance, plugins, remotes, scaffold
from cli.errors import EXIT_ERROR, EXIT_INTERRUPTED, RtdError
from cli.output import report_error


class _Group(click.Group):
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


deploying.register(main)
jobs.register(main)
remotes.register(main)
access.register(main)
plugins.register(main)
maintenance.register(main)
scaffold.register(main)
