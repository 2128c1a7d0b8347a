"""Benchmark: full layer x head necessity map, TransformerLens's patching vs this engine.

A randomly initialised GPT-2-architecture model (12 layers, d_model 768, 12 heads)
and n = 8 equal-length pairs of the built-in set (padded toward ~40 tokens). The
same map is computed with ``transformer_lens.patching.get_act_patch_attn_head_out_*``
(one forward per head) and with :func:`patching.interchange.interchange`; the
script checks they agree and prints wall time, forward passes, peak memory and
the speed-up, for all positions, the last position, and prescreen + exact top 10%.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_interchange.py

Both methods run in one process under the same allocator settings: glibc's
malloc is told to keep freed memory (``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_``, set by re-executing the script unless already set
or ``--system-malloc`` is given). PyTorch's CPU performance guide recommends an
allocator that reuses memory (jemalloc, TCMalloc) for the same reason: with
glibc's defaults, large temporaries are handed back to the system and
page-faulted in afresh on the next pass.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

KEEP_FREED = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "4294967296"}
if "--system-malloc" not in sys.argv and not all(k in os.environ for k in KEEP_FREED):
    os.environ.update(KEEP_FREED)  # glibc reads these at start-up: run again with them
    os.execv(sys.executable, [sys.executable, *sys.argv])

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TQDM_DISABLE", "1")  # TL's per-head progress bars would flood the table
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
torch.set_flush_denormal(True)

from attribution.metrics import RefusalScoreMetric  # noqa: E402
from attribution.refusal_tokens import refusal_token_ids  # noqa: E402
from patching.alignment import align_pair  # noqa: E402
from patching.chat import format_chat  # noqa: E402
from patching.engine import clean_runs  # noqa: E402
from patching.gradient_estimate import attribution_estimate  # noqa: E402
from patching.interchange import interchange  # noqa: E402
from patching.interventions import Positions  # noqa: E402
from patching.loading import load_model  # noqa: E402
from patching.prompts import builtin_pairs  # noqa: E402


def build(directory: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    from tests.helpers.tiny_models import build_tokenizer

    tok = build_tokenizer(directory)
    torch.manual_seed(0)
    config = GPT2Config(
        n_embd=768,
        n_layer=12,
        n_head=12,
        n_positions=256,
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    GPT2LMHeadModel(config).eval().save_pretrained(str(directory))
    return directory


def pairs_of_length(tok, n: int, target: int = 40):
    """n equal-length pairs, the ones closest to ``target`` tokens (padded with a suffix)."""
    found = []
    for p in builtin_pairs():
        pad = ""
        h, c = format_chat(tok, p.harmful), format_chat(tok, p.control)
        if len(h) == len(c):
            while len(h) < target - 4:
                pad += " now please"
                h, c = format_chat(tok, p.harmful + pad), format_chat(tok, p.control + pad)
            if len(h) == len(c):
                found.append((h, c))
    return found[:n]


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tl_map(model, prompts, metric, last: bool):
    from transformer_lens import patching

    fn = (
        patching.get_act_patch_attn_head_out_by_pos
        if last
        else patching.get_act_patch_attn_head_out_all_pos
    )
    maps = []
    for i, (h, c) in enumerate(prompts):
        _, cache = model.bridge.run_with_cache(c.tokens[None])

        def score(x: torch.Tensor, i: int = i) -> torch.Tensor:
            return metric(x[:, -1:], i)[0]

        with torch.no_grad():
            if last:
                # TL patches every position separately; take the last-position column only
                # would still run them all, so index_df restricts it to the last position.
                import pandas as pd

                n = len(h)
                rows = [
                    (layer, n - 1, head)
                    for layer in range(model.n_layers)
                    for head in range(model.n_heads)
                ]
                index_df = pd.DataFrame(rows, columns=["layer", "pos", "head"])
                out = patching.generic_activation_patch(
                    model.bridge,
                    h.tokens[None],
                    cache,
                    score,
                    patching.layer_pos_head_vector_patch_setter,
                    "z",
                    index_df=index_df,
                )
                out = out.view(model.n_layers, model.n_heads)
            else:
                out = fn(model.bridge, h.tokens[None], cache, score)
        maps.append(out.double())
    passes = len(prompts) * (1 + model.n_layers * model.n_heads)
    return torch.stack(maps), passes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument(
        "--skip-last",
        action="store_true",
        help="skip the last-position row (a quicker check of the prescreen row; the "
        "README table comes from a full run)",
    )
    parser.add_argument(
        "--system-malloc",
        action="store_true",
        help="keep glibc's default allocator settings (see the module docstring)",
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(build(Path(tmp)))
    tok = model.tokenizer
    prompts = pairs_of_length(tok, args.pairs)
    pairs = [align_pair(h, c) for h, c in prompts]
    metric = RefusalScoreMetric(refusal_token_ids(tok))
    print(
        f"model: GPT-2 arch, {model.n_layers} layers, d_model {model.d_model}, "
        f"{model.n_heads} heads; {len(pairs)} pairs of "
        f"{np.mean([len(h) for h, _ in prompts]):.0f} tokens"
    )
    # The engine's self-check (one extra forward of four rows, once per model per
    # process) is timed on its own here, then left to run inside the first engine row.
    t = time.perf_counter()
    clean_runs(model, [prompts[0][0].tokens], start=len(prompts[0][0]) - 1)
    check = model.engine_check
    assert check is not None and check.passed, check
    self_check_s = time.perf_counter() - t
    model.engine_check = None
    rows = []
    maps: list[tuple[str, Positions]] = [("all positions", "all"), ("last position", "last")]
    for label, positions in maps[:1] if args.skip_last else maps:
        t = time.perf_counter()
        ref, tl_passes = tl_map(model, prompts, metric, last=positions == "last")
        tl_s = time.perf_counter() - t
        t = time.perf_counter()
        run = interchange(
            model, pairs, metric, positions=positions, directions=("necessity",), progress=False
        )
        ours_s = time.perf_counter() - t
        err = float((run.patched["necessity"] - ref).abs().max())
        rows.append((label, tl_s, tl_passes, ours_s, run.stats.forward_passes, err, ""))
        if positions == "all":
            exact_all = run
    # Prescreen: attribution estimate for all heads, exact interchange of the top 10%.
    t = time.perf_counter()
    est = attribution_estimate(
        model, pairs, metric, directions=("necessity",), keep_runs=True, progress=False
    )
    drop = (est.clean_harmful[:, None, None] - est.patched["necessity"]).mean(0).abs()
    k = math.ceil(0.1 * model.n_layers * model.n_heads)
    top = torch.argsort(drop.flatten(), descending=True)[:k]
    heads = [(int(i) // model.n_heads, int(i) % model.n_heads) for i in top]
    attribution_s = time.perf_counter() - t
    pre = interchange(
        model, pairs, metric, heads=heads, directions=("necessity",), runs=est.runs, progress=False
    )
    pre_s = time.perf_counter() - t
    exact_drop = (exact_all.clean_harmful[:, None, None] - exact_all.patched["necessity"]).mean(0)
    true_top5 = set(torch.argsort(exact_drop.abs().flatten(), descending=True)[:5].tolist())
    inside = len(true_top5 & set(top.tolist()))
    mask = ~torch.isnan(pre.patched["necessity"])
    err = float((pre.patched["necessity"][mask] - exact_all.patched["necessity"][mask]).abs().max())
    rows.append(
        (
            "prescreen + exact top 10%",
            rows[0][1],
            rows[0][2],
            pre_s,
            pre.stats.forward_passes + est.stats.forward_passes,
            err,
            f"exact top-5 inside: {inside}/5; attribution {attribution_s:.2f} s, exact "
            f"{pre_s - attribution_s:.2f} s",
        )
    )
    print("\n| map | TL s | TL passes | engine s | engine passes | speed-up | max diff | note |")
    print("|---|---|---|---|---|---|---|---|")
    for label, tl_s, tl_p, s, p, e, note in rows:
        print(
            f"| {label} | {tl_s:.1f} | {tl_p} | {s:.2f} | {p} | {tl_s / s:.1f}x "
            f"| {e:.1e} | {note} |"
        )
    print(
        f"\nengine self-check: {self_check_s:.2f} s with its clean run (max |diff| "
        f"{check.max_error:.1e} logits), once per model per process, inside the first engine row"
    )
    malloc = "glibc defaults" if args.system_malloc else "freed memory kept"
    print(f"\npeak memory (RSS): {peak_mb():.0f} MB; allocator: {malloc}")


if __name__ == "__main__":
    main()
