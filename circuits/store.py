"""A resumable store of an audit's steps: one JSON file per finished step.

Each step is saved as ``steps/<name>-<key>.json`` where the key is a hash of
everything the step depends on (the model, the prompts, the settings it reads
and the results of the steps it uses). Rerunning an audit loads every step
whose file exists and computes only the missing ones, so an interrupted run
picks up where it stopped and gives the same result; changing a setting changes
the keys of exactly the steps that depend on it, and only those are recomputed.
Files are written to a temporary name and renamed, so a step is either stored
whole or not at all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def digest(value: Any) -> str:
    """A short, stable hash of any JSON-serialisable value."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class StepStore:
    """Load-or-compute for named steps keyed by their dependencies.

    ``root=None`` keeps nothing on disk (every step computed once per call).
    ``computed`` and ``loaded`` list step names as they happen (for progress and tests).
    """

    root: Path | None = None
    computed: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)

    def path(self, name: str, deps: Any) -> Path | None:
        if self.root is None:
            return None
        return self.root / "steps" / f"{name}-{digest(deps)}.json"

    def folder(self, name: str, deps: Any) -> Path | None:
        """A directory for a step's own partial results (e.g. interchange chunks)."""
        path = self.path(name, deps)
        return None if path is None else path.with_suffix(".parts")

    def step(self, name: str, deps: Any, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The stored result of ``name`` for ``deps``, computing and saving it if missing."""
        path = self.path(name, deps)
        if path is not None and path.is_file():
            self.loaded.append(name)
            return dict(json.loads(path.read_text()))
        result = compute()
        self.computed.append(name)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(result))
            tmp.replace(path)
        # Round-trip through JSON so a computed and a loaded result are identical.
        return dict(json.loads(json.dumps(result)))
