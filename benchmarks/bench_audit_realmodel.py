"""Benchmark: the audit of the real aligned model, step by step, screened vs every head exact.

The model is Qwen2.5-Coder-0.5B-Instruct (24 layers x 14 heads), assembled by
``scripts/fetch_real_model.py``; without it the script says so and exits 0.
Each run audits the first ``--n`` built-in pairs into a fresh directory and
prints every step's wall time with the machine's load average beside it (the
2 cores are shared: compare times taken in the same run).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_audit_realmodel.py --n 24
    .venv/bin/python benchmarks/bench_audit_realmodel.py --n 6 --compare
    .venv/bin/python benchmarks/bench_audit_realmodel.py --knockout --decode

``--exact all`` runs the audit with every head measured exactly (the audit before
screening); ``--compare`` runs both in one process and says whether the findings
(gate, amplifiers, negative heads, the exact top heads) agree. ``--knockout`` and
``--decode`` time one knockout's DLA (its shared prompt prefix run once vs the
resumed passes over every position) and greedy decoding (key/value cache vs full passes) instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from patching.bundled import qwen_coder_gguf


def load() -> float:
    return os.getloadavg()[0]


def timed_audit(model: Any, pairs: list[Any], config: Any, out: Path) -> tuple[Any, list[tuple]]:
    """The audit of :func:`circuits.audit.pipeline.audit`, each step timed."""
    from circuits.audit.context import AuditContext
    from circuits.audit.pipeline import result_of, steps_for
    from circuits.store import StepStore
    from patching.fingerprint import fingerprint

    began = time.perf_counter()
    store = StepStore(out, context=fingerprint(model))
    ctx = AuditContext(model=model, pairs=pairs, config=config, store=store, progress=False)
    times = []
    for step in steps_for(config):
        reason = step.skip(ctx) if step.skip is not None else None
        t0, l0 = time.perf_counter(), load()
        if reason is None:
            step.run(ctx)
        times.append((step.name, time.perf_counter() - t0, l0, load(), reason))
        print(f"  {step.name}: {times[-1][1]:.1f} s (load {l0:.2f} -> {load():.2f})", flush=True)
    return result_of(ctx, seconds=time.perf_counter() - began, run=None), times


def knockout_timing(model: Any, pairs: list[Any]) -> None:
    """One band head's knockout DLA on the harmful and the control prompts (as the gate
    step and the cascade's null run it): from the shared chat-template prefix run once
    (the executor's default) against the same resumed passes over every position, with
    the largest difference."""
    import numpy as np

    import patching.executor
    from circuits.audit.context import greedy_answers
    from circuits.knockout import intervened_dla, knockouts
    from circuits.roles import depth_band
    from patching.chat import format_chat

    harmful = [format_chat(model.tokenizer, p.harmful) for p in pairs]
    control = [format_chat(model.tokenizer, p.control) for p in pairs]
    answers = greedy_answers(model, control)
    ids = [0, 1]
    band = depth_band(model.n_layers, (0.25, 0.65))
    sets = (harmful, control)
    for prompts in sets:  # keep both clean passes, as the audit does before its knockouts
        intervened_dla(model, prompts, ids, answers, knockouts([(band[0], 0)], prompts, "zero"))
    shared_prefix = patching.executor._shared_prefix

    def dla(layer: int, share: bool) -> tuple[Any, float]:
        patching.executor._shared_prefix = shared_prefix if share else lambda *a: None
        t0 = time.perf_counter()
        out = [
            intervened_dla(model, ps, ids, answers, knockouts([(layer, 3)], ps, "zero"))[0]
            for ps in sets
        ]
        patching.executor._shared_prefix = shared_prefix
        return np.concatenate(out), time.perf_counter() - t0

    n = len(pairs)
    print(f"\n## knockout DLA of one head, {n} harmful + {n} control prompts (clean pass kept)")
    print("| head | shared prefix s | resumed s | ratio | max diff | load |")
    print("|---|---|---|---|---|---|")
    for layer in (band[0], band[len(band) // 2], band[-1]):
        fast, t_fast = dla(layer, True)
        slow, t_slow = dla(layer, False)
        print(
            f"| L{layer}H3 | {t_fast:.1f} | {t_slow:.1f} | {t_slow / t_fast:.2f}x "
            f"| {np.abs(fast - slow).max():.1e} | {load():.2f} |",
            flush=True,
        )


def decode_timing(model: Any, pairs: list[Any]) -> None:
    """Greedy 8-token responses to 16 harmful prompts, clean and with two heads zeroed
    (attack success's decoding), with the key/value cache against full passes."""
    from patching.chat import format_chat
    from patching.decoding import greedy_decode
    from patching.interventions import Ablation

    prompts = [format_chat(model.tokenizer, p.harmful) for p in pairs[:16]]
    knocked = [[Ablation(19, 1), Ablation(20, 7)] for _ in prompts]
    print("\n## greedy decoding, 16 prompts x 8 tokens")
    print("| rows | cached s | full s | ratio | same tokens | load |\n|---|---|---|---|---|---|")
    for name, rows in (("clean", None), ("2 heads zeroed", knocked)):
        t0 = time.perf_counter()
        cached = greedy_decode(model, prompts, 8, rows)
        t1 = time.perf_counter()
        full = greedy_decode(model, prompts, 8, rows, use_cache=False)
        t2 = time.perf_counter()
        print(
            f"| {name} | {t1 - t0:.1f} | {t2 - t1:.1f} | {(t2 - t1) / (t1 - t0):.2f}x "
            f"| {cached == full} | {load():.2f} |"
        )


def findings(result: Any) -> dict[str, Any]:
    neg = result.negative_heads
    return {
        "gate": [h.label for h in result.gate],
        "amplifiers": [h.label for h in result.amplifiers],
        "top5 necessity": [h.label for h in result.necessity.top(5)],
        "top5 sufficiency": [h.label for h in result.sufficiency.top(5)],
        "negative heads": sorted(neg.heads) if neg is not None else None,
        "ablated": sorted(neg.ablated) if neg is not None else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--exact", choices=("screened", "all"), default="screened")
    parser.add_argument("--compare", action="store_true", help="run screened and all-exact")
    parser.add_argument("--out", type=Path, help="keep each audit's directory under OUT")
    parser.add_argument("--knockout", action="store_true", help="time one knockout only")
    parser.add_argument("--decode", action="store_true", help="time greedy decoding only")
    args = parser.parse_args()
    path = qwen_coder_gguf(required=False)
    if path is None:
        print("skipped: the real model is absent (run scripts/fetch_real_model.py)")
        return
    from circuits.audit.config import AuditConfig
    from patching.loading import load_model
    from patching.prompts import builtin_pairs

    t0 = time.perf_counter()
    model = load_model(str(path))
    print(f"model loaded in {time.perf_counter() - t0:.1f} s (load {load():.2f})", flush=True)
    pairs = builtin_pairs(args.n)
    if args.knockout or args.decode:
        if args.knockout:
            knockout_timing(model, pairs)
        if args.decode:
            decode_timing(model, pairs)
        return
    modes = ("screened", "all") if args.compare else (args.exact,)
    found = {}
    for mode in modes:
        config = AuditConfig(n=args.n, figures=False, **_exact_setting(mode))
        with tempfile.TemporaryDirectory() as tmp:
            out = args.out / f"{mode}-n{args.n}" if args.out else Path(tmp)
            result, times = timed_audit(model, pairs, config, out)
            if args.out:
                result.to_json(out / "audit.json")
        print(f"\n## exact={mode}, n={args.n}: {result.seconds:.1f} s in all")
        print("| step | s | load before | load after | note |\n|---|---|---|---|---|")
        for name, secs, l0, l1, reason in times:
            print(f"| {name} | {secs:.1f} | {l0:.2f} | {l1:.2f} | {reason or ''} |")
        found[mode] = (result.seconds, findings(result))
        for key, value in found[mode][1].items():
            print(f"- {key}: {value}")
        for check in result.screening.values():
            print(f"- {check.line()}")
    if args.compare:
        (s_time, s_found), (a_time, a_found) = found["screened"], found["all"]
        agree = {k: s_found[k] == a_found[k] for k in s_found}
        print(f"\nall-exact / screened time: {a_time / s_time:.2f}x; findings agree: {agree}")


def _exact_setting(mode: str) -> dict[str, Any]:
    from dataclasses import fields

    from circuits.audit.config import AuditConfig

    names = {f.name for f in fields(AuditConfig)}
    return {"exact": mode} if "exact" in names else {}


if __name__ == "__main__":
    main()
