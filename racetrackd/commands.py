"""`racetrackd` command line: serve, start, stop, status, admin-token, base-images."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from racetrackd import __version__
from racetrackd.auth.authenticator import ADMIN_TOKEN_FILE, ensure_admin_token
from racetrackd.docker import base_images
from racetrackd.errors import RacetrackError
from racetrackd.settings import Settings

# racetrackd.daemon (the whole daemon: Flask, the deployer, gunicorn's launch) and the Docker SDK are
# imported by the commands that use them: `racetrackd admin-token`, which scripts/quickstart.sh runs
# every time, then starts in a fraction of the time.


def _settings() -> Settings:
    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="[%(asctime)s] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return settings


class _Group(click.Group):
    """Print racetrackd errors as one line (with a hint), never a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except RacetrackError as exc:
            message = exc.message + (f"\nhint: {exc.hint}" if exc.hint else "")
            raise click.ClickException(message) from exc


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="racetrackd")
def main() -> None:
    """racetrackd: Racetrack on one host, as one daemon."""


@main.command()
def serve() -> None:
    """Run the daemon in the foreground (HTTP + deployment worker) until interrupted."""
    from racetrackd import daemon

    sys.exit(daemon.serve(_settings()))


@main.command()
def start() -> None:
    """Start the daemon in the background and wait until it is ready."""
    settings = _settings()
    token_file = settings.data_dir / ADMIN_TOKEN_FILE
    first_start = not settings.admin_token and not token_file.exists()
    from racetrackd import daemon

    pid = daemon.start(settings)
    click.echo(f"racetrackd is running (pid {pid}) at {settings.public_url}")
    click.echo(f"logs: {settings.data_dir / daemon.LOG_FILE}; stop it with: racetrackd stop")
    if first_start and token_file.exists():  # shown this once; `racetrackd admin-token` prints it again
        click.echo(f"admin token (also in {token_file}, mode 0600): {token_file.read_text().strip()}")
        click.echo(f'log in with: rtd login --remote {settings.public_url} "$(racetrackd admin-token)"')


@main.command()
def stop() -> None:
    """Stop the background daemon (jobs keep running)."""
    from racetrackd import daemon

    pid = daemon.stop(_settings())
    click.echo("racetrackd was not running" if pid is None else f"racetrackd (pid {pid}) stopped")


@main.command()
def status() -> None:
    """Say whether the background daemon runs, where, and the memory its processes hold (PSS)."""
    from racetrackd import daemon, footprint

    settings = _settings()
    pid = daemon.running_pid(settings)
    if pid is not None:
        click.echo(f"racetrackd is running (pid {pid}) at {settings.public_url}")
        for line in footprint.measure(pid).describe():
            click.echo(line)
        return
    memory = daemon.reported_memory(settings)  # run in the foreground (serve): no pid file, but it answers
    if memory is None:
        click.echo("racetrackd is not running")
        sys.exit(3)  # as `systemctl status` for a unit that is not running
    processes = [p for p in memory.get("processes", []) if isinstance(p, dict)]
    click.echo(f"racetrackd is running at {settings.public_url} (in the foreground: no pid file)")
    click.echo(f"memory: {footprint.mib(int(memory.get('pss_bytes', 0)))} PSS in {len(processes)} processes")
    for process in processes:
        click.echo(f"  {process.get('role', '?'):<12} {footprint.mib(int(process.get('pss_bytes', 0))):>23}")


@main.command("admin-token")
def admin_token() -> None:
    """Print the bootstrap admin token (generated into the data dir on first use)."""
    click.echo(ensure_admin_token(_settings()))


@main.group("base-images")
def base_images_group() -> None:
    """Base images for job types, for hosts that cannot pull from a registry."""


JOB_TYPE_OPTION = click.option(
    "--job-type",
    type=click.Choice(sorted(base_images.KINDS)),
    default="python3",
    show_default=True,
    help="Job type the base image is for.",
)
BASE_IMAGE_SETTING = {
    "python3": ("python_base_image", "RACETRACK_PYTHON_BASE_IMAGE"),
    "golang": ("golang_base_image", "RACETRACK_GOLANG_BASE_IMAGE"),
    "rust": ("rust_base_image", "RACETRACK_RUST_BASE_IMAGE"),
}


@base_images_group.command("build")
@JOB_TYPE_OPTION
@click.option("--name", default=None, help="Image name to create (default: racetrackd/<job type>-base:bookworm).")
@click.option("--suite", default=base_images.DEFAULT_SUITE, show_default=True, help="Debian release.")
@click.option("--mirror", default=None, help="Debian mirror URL (default: the host's apt sources).")
def build_base_image(job_type: str, name: str | None, suite: str, mirror: str | None) -> None:
    """Build a base image from Debian packages (debootstrap + docker import)."""
    settings = _settings()
    kind = base_images.KINDS[job_type]
    from racetrackd.docker.runtime import DockerRuntime

    image = base_images.build_base_image(
        DockerRuntime(), kind, name or kind.local_name, suite, mirror, settings.data_dir / "tmp"
    )
    click.echo(f"built {image}; use it with {BASE_IMAGE_SETTING[job_type][1]}={image}")


@base_images_group.command("ensure")
@JOB_TYPE_OPTION
@click.option(
    "--rootfs",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="A root filesystem bootstrapped already (python3 -m racetrackd.docker.base_images bootstrap DIR): "
    "imported when a local build is needed, instead of bootstrapping one.",
)
def ensure_base_image(job_type: str, rootfs: Path | None) -> None:
    """Print a base image that is usable here: the configured one, or a local build."""
    settings = _settings()
    preferred = settings.plugin_settings[BASE_IMAGE_SETTING[job_type][0]]  # declared by the built-in plugin
    from racetrackd.docker.runtime import DockerRuntime

    click.echo(
        base_images.ensure_base_image(
            DockerRuntime(), base_images.KINDS[job_type], preferred, settings.data_dir / "tmp", rootfs=rootfs
        )
    )
