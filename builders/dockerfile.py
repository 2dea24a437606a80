"""Render Dockerfile templates, strictly: a misspelt variable is an error.

Two kinds of template, kept apart because they are trusted differently:
- a job type's template (`render_dockerfile`), installed by an admin with the plugin: a normal
  Jinja environment, which may include the shared fragments in templates/dockerfile;
- a job's own Dockerfile (`render_job_dockerfile`, the `dockerfile` job type), written by whoever
  may deploy: user input, rendered in Jinja's immutable sandbox with no globals, no loader beyond
  that one file, and only the variables docs/dockerfile-jobs.md lists. Jinja's normal environment
  would let `{{ cycler.__init__.__globals__.os }}` run code in the daemon.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox

from racetrackd import resources
from racetrackd.errors import JobTypeError, ValidationError

SHARED_TEMPLATES_DIR = resources.dockerfile_templates_dir()
PACKAGE_INDEX_TEMPLATE = "package_index.j2"
# What a job's own Dockerfile may use (docs/dockerfile-jobs.md lists them); nothing else is defined.
JOB_DOCKERFILE_VARIABLES = (
    "base_image",
    "job_name",
    "job_version",
    "build_env",
    "jobtype_extra",
    "manifest",
    "build",
    "package_index",
)
JOB_DOCKERFILE_BUILD_KEYS = ("secrets_url",)  # of `build`: the rest is the daemon's configuration
# A rendered Dockerfile, and any string or list a template multiplies up, stays below this: a job's
# template must not exhaust the daemon's memory.
MAX_RENDERED_CHARS = 1024**2
MAX_EXPONENT = 64


def render_dockerfile(plugin_dir: Path, template_name: str, variables: dict[str, Any]) -> str:
    """Render a job type's `template_name` from `plugin_dir`; shared fragments in templates/dockerfile can
    be included. Only for templates an admin installed, never for a job's files."""
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(
            [
                jinja2.FileSystemLoader(str(plugin_dir)),
                jinja2.FileSystemLoader(str(SHARED_TEMPLATES_DIR)),
            ]
        ),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # a Dockerfile, not HTML
    )
    env.filters["docker_quote"] = docker_quote
    env.filters["shell_quote"] = shell_quote
    env.filters["label_pairs"] = label_pairs
    try:
        return env.get_template(template_name).render(**variables)
    except jinja2.TemplateError as exc:
        raise JobTypeError(f"job type template {template_name} failed to render: {exc}") from exc


def job_dockerfile_variables(variables: dict[str, Any]) -> dict[str, Any]:
    """The documented subset of a plugin template's variables, for a job's own Dockerfile; the shared
    package-index fragment comes pre-rendered (by the trusted environment) as `package_index`."""
    chosen = {name: variables[name] for name in JOB_DOCKERFILE_VARIABLES if name in variables}
    chosen["build"] = {key: variables["build"].get(key) for key in JOB_DOCKERFILE_BUILD_KEYS}
    chosen["package_index"] = render_dockerfile(SHARED_TEMPLATES_DIR, PACKAGE_INDEX_TEMPLATE, variables)
    return chosen


def render_job_dockerfile(source: str, name: str, variables: dict[str, Any], field: str) -> str:
    """Render a job's own Dockerfile `source` (its path `name`, given by manifest field `field`) in the
    sandbox; ValidationError naming the field and the problem when it is not a safe, valid template."""
    env = _JobDockerfileSandbox(
        loader=_OneFileLoader(name, source),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # a Dockerfile, not HTML
        cache_size=0,  # so that the loader is asked (and refuses) every time, even for the file itself
    )
    env.globals.clear()  # range, dict, cycler, joiner, namespace, lipsum: none is documented
    env.filters["docker_quote"] = docker_quote
    try:
        rendered = env.get_template(name).render(**variables)
    except jinja2.sandbox.SecurityError as exc:
        raise ValidationError(
            f"{field}: {name} uses what a job's Dockerfile may not: {exc}",
            hint="see docs/dockerfile-jobs.md for the variables a Dockerfile may use",
        ) from None
    except jinja2.TemplateError as exc:
        raise ValidationError(
            f"{field}: {name} failed to render: {exc}",
            hint="see docs/dockerfile-jobs.md for the variables a Dockerfile may use",
        ) from None
    if len(rendered) > MAX_RENDERED_CHARS:
        raise ValidationError(f"{field}: {name} renders to more than {MAX_RENDERED_CHARS} characters")
    return rendered


class _OneFileLoader(jinja2.BaseLoader):
    """Serves the job's one Dockerfile, once: no includes, imports or extends of anything (itself neither)."""

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source: str | None = source

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        if template != self.name or self.source is None:
            raise jinja2.TemplateNotFound(
                template, f"{template!r}: a job's Dockerfile cannot include, import or extend other templates"
            )
        source, self.source = self.source, None
        return source, None, None


class _JobDockerfileSandbox(jinja2.sandbox.ImmutableSandboxedEnvironment):
    """The immutable sandbox, with `*` and `**` bounded so that a template cannot exhaust memory."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT:
            raise jinja2.sandbox.SecurityError(f"an exponent over {MAX_EXPONENT}")
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                if (
                    isinstance(sequence, (str, list, tuple))
                    and isinstance(count, int)
                    and len(sequence) * count > MAX_RENDERED_CHARS
                ):
                    raise jinja2.sandbox.SecurityError(f"a repetition longer than {MAX_RENDERED_CHARS}")
        return super().call_binop(context, operator, left, right)


def shell_quote(value: object) -> str:
    """Quote a value as one word of a RUN line's shell command. A line break cannot be quoted there
    (it ends the Dockerfile instruction), so a value holding a control character is an error."""
    text = str(value)
    if any(ord(char) < 32 or ord(char) == 127 for char in text):
        raise jinja2.TemplateRuntimeError(f"shell_quote: {text!r} holds a control character")
    return shlex.quote(text)


def docker_quote(value: object) -> str:
    """Quote a value for ENV/LABEL instructions: Docker unescapes backslashes and expands `$`."""
    text = (
        str(value)
        .replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("$", "\\$")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
    )
    return f'"{text}"'


# A parser directive that changes the escape character (`# escape=``): quoting a LABEL line for it
# is another job, so such a Dockerfile gets its labels through the build API instead.
_ESCAPE_DIRECTIVE = re.compile(r"#\s*escape\s*=", re.IGNORECASE)


def with_label_instruction(dockerfile: str, labels: dict[str, str]) -> str | None:
    """`dockerfile` with `labels` set by ONE LABEL instruction at its end, or None when that cannot be
    done safely (an escape directive, or a last line that continues onto the next).

    Why not the build API's `labels`: the classic builder (what the Docker SDK drives) turns each of
    them into a LABEL step of its own, each a container created and committed after the job's code.
    One instruction holding them all is one step: on a code-only redeploy the steps above are cached,
    so this and the code's COPY are all that is built.
    """
    if not labels:
        return dockerfile
    for line in dockerfile.splitlines():
        stripped = line.strip()
        if not stripped.startswith("#"):
            break  # parser directives come first, before any instruction or blank line
        if _ESCAPE_DIRECTIVE.match(stripped):
            return None
    body = dockerfile.rstrip()
    if body.endswith("\\"):
        return None
    return f"{body}\nLABEL {label_pairs(labels)}\n"


def label_pairs(labels: dict[str, str]) -> str:
    """`labels` as a LABEL instruction's arguments, quoted, in one order (the `label_pairs` filter)."""
    return " ".join(f"{docker_quote(key)}={docker_quote(value)}" for key, value in sorted(labels.items()))
