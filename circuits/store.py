"""A resumable store of an audit's steps: one JSON file per finished step.

Steps are stored under ``steps/run-<fp>/`` where ``<fp>`` hashes the run's
context: the model's :func:`patching.fingerprint.fingerprint` (its weights,
config, tokenizer and chat template, dtype, device kind and the toolkit's
version). Each step is ``<name>-<key>.json`` where the key hashes everything
else the step depends on (the prompts, the settings it reads and the results of
the steps it uses); the file records those deps and the context beside the
result, so a user can see what it belongs to, and ``run.json`` records the
context once more for the whole folder.

Rerunning an audit loads every step whose file exists and computes only the
missing ones, so an interrupted run picks up where it stopped and gives the
same result; changing a setting changes the keys of exactly the steps that
depend on it, and only those are recomputed. Replaced weights, another dtype or
device, or a new toolkit version change the run folder: nothing stored for
another model is reused (it stays on disk, and :meth:`StepStore.notes` says so).
Files are written to a temporary name and renamed, so a step is either stored
whole or not at all; a file that cannot be read anyway (a disk fault, an edit)
is set aside as ``<file>.corrupt`` with a warning naming it, and recomputed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patching.fingerprint import differences, digest, set_aside


@dataclass
class StepStore:
    """Load-or-compute for named steps keyed by their dependencies.

    ``root=None`` keeps nothing on disk (each step computed once per store).
    ``context`` is folded into every step's key (the model's fingerprint).
    ``computed`` and ``loaded`` list step names as they happen, each distinct
    step once (for progress and tests); ``set_aside`` lists unreadable files.
    """

    root: Path | None = None
    context: dict[str, Any] = field(default_factory=dict)
    computed: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    set_aside: list[str] = field(default_factory=list)
    _done: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    @property
    def run_dir(self) -> Path | None:
        """This context's folder of steps."""
        if self.root is None:
            return None
        return self.root / "steps" / f"run-{digest(self.context)}"

    def path(self, name: str, deps: Any) -> Path | None:
        run = self.run_dir
        return None if run is None else run / f"{name}-{digest(deps)}.json"

    def folder(self, name: str, deps: Any) -> Path | None:
        """A directory for a step's own partial results (e.g. interchange chunks)."""
        path = self.path(name, deps)
        return None if path is None else path.with_suffix(".parts")

    def stored(self) -> int:
        """How many finished steps of this context are on disk."""
        run = self.run_dir
        return 0 if run is None or not run.is_dir() else len(list(run.glob("*-*.json")))

    def other_contexts(self) -> list[dict[str, Any]]:
        """The contexts of the other run folders under ``root`` (other weights, dtype...)."""
        run = self.run_dir
        if run is None or not run.parent.is_dir():
            return []
        out = []
        for other in sorted(run.parent.glob("run-*/run.json")):
            if other.parent == run:
                continue
            try:
                data = json.loads(other.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and isinstance(data.get("context"), dict):
                out.append(data["context"])
        return out

    def changed(self) -> list[str]:
        """The context fields in which other runs stored under ``root`` differ from this one."""
        return sorted({k for c in self.other_contexts() for k in differences(c, self.context)})

    def notes(self) -> list[str]:
        """What this store reused and set aside, in words (for the caller to show)."""
        if self.root is None:
            return []
        lines = []
        total = len(self.loaded) + len(self.computed)
        if self.loaded:
            lines.append(f"resumed {self.root}: {len(self.loaded)} of {total} steps reused")
        elif changed := self.changed():
            lines.append(
                f"{self.root} holds steps of another run ({', '.join(changed)} differ); "
                f"none reused, all {total} steps computed"
            )
        if self.set_aside:
            lines.append(
                f"set aside {len(self.set_aside)} unreadable file(s) and recomputed them: "
                + ", ".join(self.set_aside)
            )
        return lines

    def _load(self, path: Path, name: str, deps: Any) -> dict[str, Any] | None:
        """The stored result at ``path``, or ``None`` (file set aside) if unusable."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            why = f"not valid JSON: {exc}"
        else:
            if not isinstance(data, dict) or not isinstance(data.get("result"), dict):
                why = "no stored result in it"
            elif data.get("name") != name or digest(data.get("deps")) != digest(deps):
                why = "it records other deps than its name says"
            else:
                return dict(data["result"])
        self.set_aside.append(str(set_aside(path, why)))
        return None

    def _save(self, path: Path, name: str, deps: Any, result: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        run_file = path.parent / "run.json"
        if not run_file.is_file():
            tmp = run_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"context": self.context}, indent=1, default=str))
            tmp.replace(run_file)
        record = {"name": name, "deps": deps, "context": self.context, "result": result}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, default=str), encoding="utf-8")
        tmp.replace(path)

    def step(self, name: str, deps: Any, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The stored result of ``name`` for ``deps``, computing and saving it if missing."""
        key = f"{name}-{digest(deps)}"
        if key in self._done:
            return dict(self._done[key])
        path = self.path(name, deps)
        result: dict[str, Any] | None = None
        if path is not None and path.is_file():
            result = self._load(path, name, deps)
        if result is not None:
            self.loaded.append(name)
        else:
            # Round-trip through JSON so a computed and a loaded result are identical.
            result = dict(json.loads(json.dumps(compute())))
            self.computed.append(name)
            if path is not None:
                self._save(path, name, deps, result)
        self._done[key] = result
        return dict(result)
