"""`rtd init KIND NAME`: a new job's directory that validates, deploys and answers as it is.

The files come from cli/scaffolds/<KIND>/ (package data, so an installed rtd has them): each
`*.tmpl` is written without that suffix, with the job's name and owner filled in. The name is
checked by the manifest schema itself (jobmanifest), so a scaffold never holds a job.yaml that
`rtd validate` refuses.
"""

from __future__ import annotations

import subprocess
from importlib import resources
from pathlib import Path

import click

from cli.errors import EXIT_CONFLICT, EXIT_INVALID_INPUT, RtdError
from jobmanifest import ManifestInvalid, validate_manifest

KINDS = {
    "python3": "python3:latest",
    "golang": "golang:latest",
    "rust": "rust:latest",
    "dockerfile": "docker-proxy:latest",
}
TEMPLATE_SUFFIX = ".tmpl"
DEFAULT_OWNER = "owner@example.com"


def register(main: click.Group) -> None:
    main.add_command(init)


@click.command()
@click.argument("kind", type=click.Choice(sorted(KINDS)))
@click.argument("name")
@click.option("-d", "--directory", type=click.Path(path_type=Path), help="Where to write the job (default: ./NAME).")
@click.option("--owner-email", help="owner_email of job.yaml (default: git config user.email).")
def init(kind: str, name: str, directory: Path | None, owner_email: str | None) -> None:
    """Write a new KIND job called NAME into ./NAME: job.yaml, its code and a README.

    \b
    rtd init python3 hello && cd hello
    rtd submit . && rtd call hello --data '{"name": "you"}'
    """
    target = directory or Path(name)
    owner = owner_email or _git_email() or DEFAULT_OWNER
    _check_manifest_fields(kind, name, owner)
    written = write_scaffold(kind, name, owner, target)
    for path in written:
        click.echo(f"created {path}")
    click.echo(f'next: cd {target} && rtd submit . && rtd call {name} --data \'{{"name": "you"}}\'')


def write_scaffold(kind: str, name: str, owner_email: str, target: Path) -> list[Path]:
    """Write KIND's files for job NAME into TARGET (new or empty); the paths written, in order."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise RtdError(
            f"{target} already exists and is not an empty directory",
            "choose another NAME, or a new directory with --directory",
            exit_code=EXIT_CONFLICT,
        )
    target.mkdir(parents=True, exist_ok=True)
    written = []
    templates = resources.files("cli") / "scaffolds" / kind
    for template in sorted(templates.iterdir(), key=lambda item: item.name):
        if not template.name.endswith(TEMPLATE_SUFFIX):
            continue
        text = template.read_text().replace("__JOB_NAME__", name).replace("__OWNER_EMAIL__", owner_email)
        path = target / template.name.removesuffix(TEMPLATE_SUFFIX)
        path.write_text(text)
        written.append(path)
    return written


def _check_manifest_fields(kind: str, name: str, owner_email: str) -> None:
    """Refuse a NAME (or owner) the manifest schema would refuse, with the schema's own message."""
    try:
        validate_manifest({"name": name, "owner_email": owner_email, "jobtype": KINDS[kind]})
    except ManifestInvalid as exc:
        raise RtdError(
            "; ".join(str(error) for error in exc.errors), "rtd init KIND NAME", exit_code=EXIT_INVALID_INPUT
        ) from exc


def _git_email() -> str | None:
    """The user's git email, the usual owner of a new job; None when git is absent or has none."""
    try:
        result = subprocess.run(["git", "config", "user.email"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None
