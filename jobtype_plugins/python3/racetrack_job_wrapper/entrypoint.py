"""Find and instantiate the job's entrypoint class from a file path."""

from __future__ import annotations

import glob
import importlib.util
import inspect
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from racetrack_job_wrapper import endpoint_config


def add_job_paths(job_dir: str) -> None:
    """Let job code import its own modules and its own requirements (from the job venv).

    Called after the wrapper's own imports are done, so the job's pinned versions win for the
    job without replacing anything the wrapper already loaded.
    """
    venv = os.environ.get("JOB_VENV")
    site_dirs = sorted(glob.glob(f"{venv}/lib/python3*/site-packages")) if venv else []
    for path in reversed([job_dir, *site_dirs]):
        if path not in sys.path:
            sys.path.insert(0, path)


def load_entrypoint(entrypoint_path: str, class_name: str | None) -> Any:
    """Import `entrypoint_path` as a module and return an instance of its entrypoint class."""
    path = Path(entrypoint_path)
    if not path.is_file():
        raise FileNotFoundError(f"entrypoint file {entrypoint_path} not found in {Path.cwd()}")
    add_job_paths(str(path.resolve().parent))
    # The file's own name, as Racetrack does, unless that would replace a loaded module
    # (an entrypoint called json.py must not swap out the json the wrapper uses).
    module_name = path.stem if path.stem not in sys.modules else "racetrack_job_entrypoint"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {entrypoint_path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    cls = _find_class(module, class_name, entrypoint_path)
    return cls()


def _find_class(module: Any, class_name: str | None, entrypoint_path: str) -> type:
    if class_name:
        cls = getattr(module, class_name, None)
        if not inspect.isclass(cls):
            raise AttributeError(f"class {class_name} not found in {entrypoint_path}")
        return cls
    candidates = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj) and obj.__module__ == module.__name__ and callable(getattr(obj, "perform", None))
    ]
    if len(candidates) != 1:
        names = ", ".join(c.__name__ for c in candidates) or "none"
        raise AttributeError(
            f"expected exactly one class with a perform() method in {entrypoint_path}, found {names}; "
            "set jobtype_extra.entrypoint_class"
        )
    return candidates[0]


class Conventions:
    """What a loaded entrypoint offers, by Racetrack's conventions; every method is optional but perform."""

    MAX_EXAMPLE_BYTES = 1024 * 1024

    def __init__(self, instance: Any) -> None:
        if not callable(getattr(instance, "perform", None)):
            raise AttributeError(f"{type(instance).__name__} has no perform() method")
        self.instance = instance
        self.perform = instance.perform
        self.auxiliary_endpoints = self._auxiliary_endpoints()
        self.auxiliary_routes = endpoint_config.routes_of(instance)  # auxiliary_endpoints_v2()
        self.static_endpoints = self._static_endpoints()
        webview = getattr(instance, "webview_app", None)
        self.webview_factory = webview if callable(webview) else None
        self.metrics_function = (
            getattr(instance, "metrics", None) if callable(getattr(instance, "metrics", None)) else None
        )

    def input_examples(self) -> dict[str, Any]:
        """`{endpoint: example}` from docs_input_examples(), with docs_input_example() for /perform."""
        examples: dict[str, Any] = {}
        many = getattr(self.instance, "docs_input_examples", None)
        if callable(many):
            examples.update(many() or {})
        one = getattr(self.instance, "docs_input_example", None)
        if callable(one) and "/perform" not in examples:
            examples["/perform"] = one()
        for endpoint, example in examples.items():
            if len(json.dumps(example, default=str)) > self.MAX_EXAMPLE_BYTES:
                raise ValueError(f"input example of {endpoint} is larger than 1 MB")
        return examples

    def _auxiliary_endpoints(self) -> dict[str, Callable[..., Any]]:
        declared = getattr(self.instance, "auxiliary_endpoints", None)
        endpoints = declared() if callable(declared) else {}
        result = {}
        for path, handler in (endpoints or {}).items():
            if not callable(handler):
                raise TypeError(f"auxiliary endpoint {path} is not callable")
            result["/" + str(path).strip("/")] = handler
        return result

    def _static_endpoints(self) -> dict[str, tuple[str, str | None]]:
        declared = getattr(self.instance, "static_endpoints", None)
        endpoints = declared() if callable(declared) else {}
        result: dict[str, tuple[str, str | None]] = {}
        for path, target in (endpoints or {}).items():
            if isinstance(target, (tuple, list)):
                result["/" + str(path).strip("/")] = (str(target[0]), str(target[1]) if len(target) > 1 else None)
            else:
                result["/" + str(path).strip("/")] = (str(target), None)
        return result

    def user_metrics(self) -> list[dict[str, Any]]:
        return list(self.metrics_function() or []) if self.metrics_function else []
