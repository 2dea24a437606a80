"""Hooks of the shell job type (see docs/plugins.md, "Hooks")."""

from __future__ import annotations

from typing import Any


class Plugin:
    def validate_job_manifest(self, manifest: dict[str, Any], job_type: str) -> list[tuple[str, str]]:
        """A shell job's script must be a .sh file: say which field is wrong, before anything is built."""
        script = str((manifest.get("jobtype_extra") or {}).get("script", ""))
        if not script.endswith(".sh"):
            return [("jobtype_extra.script", f"must name a .sh file, not {script!r}")]
        return []

    def job_runtime_env(self, job: dict[str, Any]) -> dict[str, str]:
        """Tell the script who it runs as."""
        return {"SHELL_JOB_IDENTITY": f"{job['name']} {job['version']} ({job['job_type_version']})"}
