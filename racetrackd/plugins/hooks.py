"""Plugin hooks: the optional `plugin.py` of a job-type plugin, and the one safe way to call it.

`plugin.py` defines `class Plugin` whose methods (all optional) are the hooks in `HOOKS`. They run
inside the daemon's processes: a plugin is code, trusted like the daemon itself (only admins may
install one). A hook never takes the daemon down: an exception in it is logged and turned into
a warning the caller reports (on the deployment, or in the audit log); only
`validate_job_manifest`'s answer ("these fields are wrong") can refuse a deployment.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from pluginbundle import HOOKS_FILE, PluginInvalid

log = logging.getLogger(__name__)

# name -> what it is for; docs/plugins.md documents each (a unit test holds them together).
HOOKS = {
    "validate_job_manifest": "check a job's manifest before its deployment is queued",
    "job_runtime_env": "extra environment variables for the job's containers",
    "post_job_deploy": "act after a job of this type is deployed",
    "post_job_delete": "act after a job of this type is deleted",
}


class PluginHooks:
    """The hooks one plugin's `plugin.py` provides."""

    def __init__(self, plugin: str, instance: object) -> None:
        self.plugin = plugin  # "name version", for messages
        self.instance = instance

    @classmethod
    def load(cls, plugin_dir: Path, plugin: str) -> PluginHooks | None:
        """Import `plugin_dir/plugin.py` and make its `Plugin`; None when there is no plugin.py.

        PluginInvalid when it cannot be imported, has no `Plugin` class, or names a method that is
        not a hook (a misspelt hook would otherwise never run, silently)."""
        path = plugin_dir / HOOKS_FILE
        if not path.is_file():
            return None
        module_name = "racetrackd_plugin_" + re.sub(r"\W", "_", f"{plugin}_{abs(hash(str(plugin_dir)))}")
        try:
            module = _import(path, module_name)
            plugin_class = getattr(module, "Plugin", None)
            if not inspect.isclass(plugin_class):
                raise PluginInvalid(f"{HOOKS_FILE}: defines no class Plugin")
            unknown = [
                name
                for name, _ in inspect.getmembers(plugin_class, callable)
                if not name.startswith("_") and name not in HOOKS
            ]
            if unknown:
                raise PluginInvalid(
                    f"{HOOKS_FILE}: Plugin.{unknown[0]} is not a hook (hooks: {', '.join(HOOKS)}; "
                    "start helper names with _)"
                )
            instance = plugin_class()
        except PluginInvalid:
            raise
        except Exception as exc:  # any error in plugin code makes the plugin broken, not the daemon
            raise PluginInvalid(f"{HOOKS_FILE} failed to load: {type(exc).__name__}: {exc}") from exc
        finally:
            sys.modules.pop(module_name, None)
        return cls(plugin, instance)

    def validate_job_manifest(
        self, manifest: dict[str, Any], job_type: str
    ) -> tuple[list[tuple[str, str]], str | None]:
        """(field errors, warning). The hook returns `(field, message)` pairs or raises ValueError(message)
        (then the field is `jobtype_extra`); any other exception is a plugin fault, reported as a warning."""
        hook = getattr(self.instance, "validate_job_manifest", None)
        if hook is None:
            return [], None
        try:
            result = hook(manifest, job_type)
        except ValueError as exc:
            return [("jobtype_extra", str(exc))], None
        except Exception as exc:  # noqa: BLE001 (a plugin's bug must not block or crash deployments)
            return [], self._failed("validate_job_manifest", exc)
        errors: list[tuple[str, str]] = []
        for item in result or []:
            if isinstance(item, (tuple, list)) and len(item) == 2:
                errors.append((str(item[0]), str(item[1])))
            else:
                return [], self._failed("validate_job_manifest", TypeError(f"returned {item!r}, not (field, message)"))
        return errors, None

    def job_runtime_env(self, job: dict[str, Any]) -> tuple[dict[str, str], str | None]:
        """(variables, warning); the hook returns a mapping of names to text."""
        hook = getattr(self.instance, "job_runtime_env", None)
        if hook is None:
            return {}, None
        try:
            result = hook(job)
            if not isinstance(result, dict) or not all(
                isinstance(k, str) and k and isinstance(v, str) for k, v in result.items()
            ):
                raise TypeError(f"returned {type(result).__name__}, not a mapping of names to strings")
        except Exception as exc:  # noqa: BLE001 (a plugin's bug must not fail the deployment)
            return {}, self._failed("job_runtime_env", exc)
        return dict(result), None

    def notify(self, hook_name: str, job: dict[str, Any]) -> str | None:
        """Call `post_job_deploy` or `post_job_delete`; returns a warning when it failed."""
        hook = getattr(self.instance, hook_name, None)
        if hook is None:
            return None
        try:
            hook(job)
        except Exception as exc:  # noqa: BLE001 (the job is deployed/deleted either way)
            return self._failed(hook_name, exc)
        return None

    def _failed(self, hook_name: str, exc: Exception) -> str:
        message = f"plugin {self.plugin}: hook {hook_name} failed: {type(exc).__name__}: {exc}"
        log.warning("%s", message, exc_info=True)
        return message


def _import(path: Path, module_name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginInvalid(f"{HOOKS_FILE}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and typing look the module up while it runs
    spec.loader.exec_module(module)
    return module
