"""Cliff-as-a-Judge: traces ranked by cliff score, the top share written as JSONL
(docs/science.md#refusal-cliff).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Float

from circuits.cliff.traces import Trace


def judge_traces(
    traces: Sequence[Trace], scores: Float[np.ndarray, " trace"], top_frac: float
) -> list[dict[str, Any]]:
    """The ``top_frac`` share of traces with the largest cliff scores (at least one),
    largest first, each row with its ``cliff_score``."""
    if not 0.0 < top_frac <= 1.0:
        raise ValueError(f"top fraction {top_frac}: pass a share in (0, 1], e.g. 0.1")
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep = order[: max(1, round(top_frac * len(traces)))]
    return [{**traces[i].to_dict(), "cliff_score": float(scores[i])} for i in keep]


def write_judge_subset(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    out = Path(path)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out
