"""What produced an output directory: the run record, shared by every command.

A figure in a paper must be traceable to the command, the prompt pairs, the
settings and the library versions that made it. :func:`run_record` gathers
them in one dict; each command writes it as ``DIR/run.json`` and embeds it
under a ``"run"`` key in its main result file (``dla.json``, ``screen.json``,
``audit.json``), so a result file copied elsewhere still says where it came
from.

The record holds:

- ``argv`` / ``command_line``: the exact command (``sys.argv`` for the console
  script), and the working directory it ran in;
- ``pairs``: where the pairs came from (a file path, ``"builtin"``), the file's
  sha256 when it is a file, the sha256 of the pairs actually used (after
  ``--n`` sampling) and their number;
- ``n``, ``seed``, ``dtype``, ``device`` as asked for, and the model's actual
  dtype and device;
- ``versions``: Python and the libraries the numbers depend on
  (:func:`patching.compat.versions`, the same as the engine's self-check reports);
- anything in ``extra`` (for instance the engine's self-check result).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from patching.compat import versions  # one definition, shared with the engine's self-check

RUN_FILE = "run.json"


def file_sha256(path: str | Path) -> str:
    """The sha256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pairs_sha256(pairs: Sequence[Any]) -> str:
    """A digest of the pairs' content (texts, category, variant), in order."""
    rows = [
        [p.harmful, p.control, getattr(p, "category", None), getattr(p, "variant", None)]
        for p in pairs
    ]
    text = json.dumps(rows, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def pairs_record(pairs: Sequence[Any] | None, source: str | Path | None) -> dict[str, Any] | None:
    """Where the pairs came from and digests that pin them down."""
    if pairs is None:
        return None
    path = Path(source) if source is not None and str(source) != "builtin" else None
    return {
        "source": str(path.resolve()) if path is not None else "builtin",
        "file_sha256": file_sha256(path) if path is not None and path.is_file() else None,
        "sha256": pairs_sha256(pairs),
        "n": len(pairs),
    }


def _model_record(model: Any) -> dict[str, Any] | None:
    if model is None:
        return None
    return {
        "name": str(model.name),
        "architecture": str(model.architecture),
        "shape": {
            "n_layers": model.n_layers,
            "n_heads": model.n_heads,
            "n_kv_heads": model.n_kv_heads,
            "d_model": model.d_model,
        },
        "dtype": str(model.dtype).removeprefix("torch."),
        "device": str(model.device),
    }


def run_record(
    args: argparse.Namespace,
    pairs: Sequence[Any] | None,
    model: Any,
    *,
    pairs_source: str | Path | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run record of a command (see the module docstring); ``extra`` is merged in.

    Args:
        args: the parsed command line; ``args.argv`` (set by :func:`circuits.cli.main`)
            is the exact command, else ``sys.argv``.
        pairs: the pairs the run used (``None`` for commands without pairs).
        model: the loaded :class:`~patching.model.HookedModel` (or ``None``).
        pairs_source: the pair file read, or ``"builtin"``; default ``args.pairs``.
    """
    argv = [str(a) for a in (getattr(args, "argv", None) or sys.argv)]
    if pairs_source is None:
        pairs_source = getattr(args, "pairs", None) or "builtin"
    record: dict[str, Any] = {
        "argv": argv,
        "command_line": shlex.join(argv),
        "cwd": os.getcwd(),
        "command": getattr(args, "command", None),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model_source": getattr(args, "model", None),
        "model": _model_record(model),
        "pairs": pairs_record(pairs, pairs_source),
        "n": getattr(args, "n", None),
        "sample": bool(getattr(args, "sample", False)),  # --n pairs drawn with --seed
        "seed": getattr(args, "seed", None),
        "dtype": getattr(args, "dtype", None),
        "device": getattr(args, "device", None),
        "versions": versions(),
    }
    record.update(extra or {})
    return record


def write_run_record(record: dict[str, Any], out: str | Path) -> Path:
    """Write ``record`` as ``out/run.json``."""
    path = Path(out) / RUN_FILE
    path.write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")
    return path
