"""Render a job type's Jinja Dockerfile template, strictly: a misspelt variable is an error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from racetrackd.errors import JobTypeError

SHARED_TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates" / "dockerfile"


def render_dockerfile(plugin_dir: Path, template_name: str, variables: dict[str, Any]) -> str:
    """Render `template_name` from `plugin_dir`; shared fragments in templates/dockerfile can be included."""
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader([
            jinja2.FileSystemLoader(str(plugin_dir)),
            jinja2.FileSystemLoader(str(SHARED_TEMPLATES_DIR)),
        ]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 (a Dockerfile, not HTML)
    )
    env.filters["docker_quote"] = docker_quote
    try:
        return env.get_template(template_name).render(**variables)
    except jinja2.TemplateError as exc:
        raise JobTypeError(f"job type template {template_name} failed to render: {exc}") from exc


def docker_quote(value: object) -> str:
    """Quote a value for ENV/LABEL instructions: Docker unescapes backslashes and expands `$`."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("\n", "\\n")
    return f'"{text}"'
