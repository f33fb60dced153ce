"""Processing steps, one per module, registered by name in one table.

Entries are ``"module:Class"`` strings imported on first use, so listing the tasks costs nothing
and a task whose optional dependency is missing fails only when it is used, saying what to install.
"""

from __future__ import annotations

import importlib

from neuropool.errors import ConfigError, MissingDependencyError
from neuropool.tasks.base import Params, Resources, Task, TaskContext

#: name -> (import path, what to install when the import fails)
TASKS: dict[str, tuple[str, str]] = {
    "decompress": ("neuropool.tasks.decompress:Decompress", "neuropool"),
    "decompress_lf": ("neuropool.tasks.decompress:DecompressLf", "neuropool"),
    "preprocess": ("neuropool.tasks.preprocess:Preprocess", "neuropool"),
    "sort": ("neuropool.tasks.sort:Sort", "neuropool"),
    "qc": ("neuropool.tasks.qc:QC", "neuropool"),
    "localize": ("neuropool.tasks.localize:Localize", "neuropool"),
    "export": ("neuropool.tasks.export:Export", "neuropool"),
    "nwb": ("neuropool.tasks.nwb:Nwb", "neuropool"),
    "lfp": ("neuropool.tasks.lfp:Lfp", "neuropool"),
    "raw_qc": ("neuropool.tasks.rawqc:RawQC", "neuropool"),
}

#: The standard per-probe pipeline, in dependency order. ``lfp`` and ``raw_qc`` depend on
#: ``decompress`` only (and on ``decompress_lf``, which only probes with a separate LF stream
#: have) and nothing depends on them; listed last, they are added to the graph after the sorting
#: branch, so when both become ready at once preprocess starts first.
STANDARD = ("decompress", "preprocess", "sort", "qc", "localize", "export", "nwb", "decompress_lf",
            "lfp", "raw_qc")

_loaded: dict[str, type[Task]] = {}


def register(name: str, target: str | type[Task], install: str = "") -> None:
    """Add a task to the table: a ``"module:Class"`` string or the class itself."""
    if isinstance(target, type):
        _loaded[name] = target
        TASKS[name] = (f"{target.__module__}:{target.__qualname__}", install)
    else:
        TASKS[name] = (target, install)
        _loaded.pop(name, None)


def get_task(name: str) -> type[Task]:
    """The task class registered as ``name``."""
    if name in _loaded:
        return _loaded[name]
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    target, install = TASKS[name]
    module, _, cls = target.partition(":")
    try:
        obj = getattr(importlib.import_module(module), cls)
    except ImportError as e:
        raise MissingDependencyError(
            f"task {name!r} needs a package that is not installed ({e.name}); "
            f"install it with: pip install {install or e.name}"
        ) from e
    _loaded[name] = obj
    return obj


__all__ = ["TASKS", "STANDARD", "Params", "Resources", "Task", "TaskContext", "get_task", "register"]
