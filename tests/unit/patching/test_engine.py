"""The patching engine: every speed path equals the plain forward; necessity equals TL's."""

from __future__ import annotations

import pytest
import torch

from attribution.interchange import interchange_test
from attribution.metrics import RefusalScoreMetric
from attribution.refusal_tokens import refusal_token_ids
from patching.alignment import align_pair
from patching.chat import ChatPrompt, format_chat
from patching.engine import RunStats, clean_run, clean_runs, run_rows, run_rows_full
from patching.errors import HeadIndexError, PairAlignmentError
from patching.gradient_estimate import attribution_estimate
from patching.interchange import interchange
from patching.interventions import Ablation, AddVector, Interchange, Intervention, Scale
from patching.prompts import builtin_pairs
from tests.helpers.tiny_models import ARCHITECTURES

ARCHS = ["qwen2", "gpt2"]


@pytest.fixture(scope="module")
def models(tiny_dirs):
    from patching.loading import load_model

    return {arch: load_model(tiny_dirs[arch]) for arch in ARCHITECTURES}


@pytest.fixture(scope="module")
def organism():
    """The built model organism (Llama architecture, GQA) and its first equal-length pairs."""
    from circuits.organism import organism_dir
    from patching.loading import load_model
    from patching.prompts import read_pairs

    directory = organism_dir()
    model = load_model(directory)
    tok = model.tokenizer
    prompts = []
    for p in read_pairs(directory / "pairs.jsonl", n=12):
        h, c = format_chat(tok, p.harmful), format_chat(tok, p.control)
        if len(h) == len(c):
            prompts.append((h, c))
    assert len(prompts) >= 4
    return model, prompts[:4]


def _rows(model, source):
    """Rows in every layer, out of layer order: rows join the batch at their own layer."""
    last = model.n_layers - 1
    return [[Interchange(1, h, "all", source=source)] for h in range(model.n_heads)] + [
        [Scale(last, 1, [-1], alpha=0.1), Ablation(1, 0, [3, 5])],
        [Interchange(last, 0, "all", source=source)],
        [Ablation(1, 2, "all", kind="mean", reference=source.mean(0))],
        [Scale(0, 3, "all", alpha=-2.0)],
        [AddVector("blocks.1.hook_resid_pre", torch.linspace(-1, 1, model.d_model), [-2, -1])],
        [Interchange(last - 1, 1, [4, 9], source=source)],
        # In the last block itself: the MLP must then run at every position.
        [AddVector(f"blocks.{last}.hook_mlp_out", torch.linspace(1, -1, model.d_model), [-1])],
    ]


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.engine
def test_batched_rows_and_skipped_layers_equal_full_forward(models, arch) -> None:
    model = models[arch]
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(10, 400, (14,), generator=g)
    source = torch.randn(14, model.d_head, generator=g)
    rows = _rows(model, source)
    clean = clean_run(model, tokens, readout=[-2, -1])
    stats = RunStats()
    fast = run_rows(model, clean, rows, stats=stats, budget_mb=0.05)
    full = run_rows_full(model, tokens, rows, readout=[-2, -1])
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)
    plain = model.run_with_hooks(tokens[None], [])[0, -2:]  # the clean run reads out 2 positions
    torch.testing.assert_close(clean.logits, plain, atol=1e-5, rtol=1e-5)
    assert stats.forward_passes > 1  # the tiny budget forced several chunks
    entries = [min(iv.layer for iv in row) for row in rows]
    assert stats.block_rows == sum(model.n_layers - e for e in entries)  # rows join late
    assert (full[:, -1] - clean.logits[-1]).abs().amax(-1).min() > 1e-3  # patches do act


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.engine
def test_cached_prefix_equals_full_forward(models, arch) -> None:
    model = models[arch]
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(10, 400, (16,), generator=g)
    source = torch.randn(16, model.d_head, generator=g)
    rows: list[list[Intervention]] = [
        [Interchange(layer, h, [-3, -1], source=source)] for layer in (0, 2) for h in (0, 3)
    ]
    rows.append([Scale(1, 2, [-2], alpha=3.0)])
    clean = clean_run(model, tokens, start=13)
    assert clean.start == 13 and clean.block_inputs[0].shape[1] == 3
    fast = run_rows(model, clean, rows)
    full = run_rows_full(model, tokens, rows)
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="before the cached prefix"):
        run_rows(model, clean, [[Scale(1, 0, [2], alpha=0.0)]])


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.engine
def test_batched_clean_runs_patch_like_lone_runs(models, arch) -> None:
    """Each row of a batched clean run (own or shared prefix) equals a lone run and patches
    like the plain full forward."""
    model = models[arch]
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(10, 400, (3, 16), generator=g)
    shared = tokens.clone()
    shared[:, :6] = tokens[0, :6]
    source = torch.randn(16, model.d_head, generator=g)
    rows: list[list[Intervention]] = [
        [Interchange(layer, 1, [8, -1], source=source)] for layer in range(model.n_layers)
    ]
    for batch in (tokens, shared):
        with torch.no_grad():
            runs, logits = clean_runs(model, batch, start=6)
        for r, run in enumerate(runs):
            alone = clean_run(model, batch[r], start=6)
            torch.testing.assert_close(run.logits, alone.logits, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(logits[r], alone.logits, atol=1e-5, rtol=1e-5)
            fast = run_rows(model, run, rows)
            full = run_rows_full(model, batch[r], rows)
            torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.engine
def test_rows_of_one_clean_pass_keep_their_own_start(models, arch) -> None:
    """A pass computes from its earliest start; a later row's run keeps the positions in
    between as its prefix, equals a lone run from its own start and patches exactly."""
    model = models[arch]
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(10, 400, (3, 16), generator=g)
    starts = [4, 9, 13]
    source = torch.randn(16, model.d_head, generator=g)
    with torch.no_grad():
        runs, _ = clean_runs(model, tokens, start=starts, readout=[-2, -1])
    for r, run in enumerate(runs):
        assert run.start == starts[r] and run.block_inputs[0].shape[1] == 16 - starts[r]
        alone = clean_run(model, tokens[r], start=starts[r], readout=[-2, -1])
        torch.testing.assert_close(torch.stack(run.z), torch.stack(alone.z), atol=1e-5, rtol=1e-5)
        rows: list[list[Intervention]] = [
            [Interchange(layer, 1, [starts[r], 14], source=source)]
            for layer in range(model.n_layers)
        ]
        fast = run_rows(model, run, rows)
        full = run_rows_full(model, tokens[r], rows, readout=[-2, -1])
        torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)
        assert (full - run.logits).abs().amax((-2, -1)).min() > 1e-3  # patches do act
    with pytest.raises(ValueError, match="starts"):
        clean_runs(model, tokens, start=[4, 9])


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.engine
def test_prompts_of_different_lengths_share_a_left_padded_pass(models, arch) -> None:
    """Padding is masked and each row keeps its own positions: every row's run equals a
    lone run of its prompt and patches exactly, from its own start."""
    model = models[arch]
    g = torch.Generator().manual_seed(4)
    prompts = [torch.randint(10, 400, (n,), generator=g) for n in (16, 11, 13)]
    starts = [5, 0, 9]
    with torch.no_grad():
        runs, logits = clean_runs(model, prompts, start=starts, readout=[-2, -1])
    for r, (run, prompt) in enumerate(zip(runs, prompts, strict=True)):
        alone = clean_run(model, prompt, start=starts[r], readout=[-2, -1])
        assert run.readout == alone.readout == [len(prompt) - 2, len(prompt) - 1]
        torch.testing.assert_close(logits[r], alone.logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(torch.stack(run.z), torch.stack(alone.z), atol=1e-5, rtol=1e-5)
        source = torch.randn(len(prompt), model.d_head, generator=g)
        rows: list[list[Intervention]] = [
            [Interchange(layer, 2, [starts[r], -1], source=source)]
            for layer in range(model.n_layers)
        ]
        fast = run_rows(model, run, rows)
        full = run_rows_full(model, prompt, rows, readout=[-2, -1])
        torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="from the end"):
        clean_runs(model, prompts, readout=[9])


@pytest.mark.engine
def test_exact_step_reuses_the_estimate_clean_runs(organism) -> None:
    """A prescreen's exact step on the attribution step's kept runs == on its own runs."""
    model, prompts = organism
    metric = RefusalScoreMetric(refusal_token_ids(model.tokenizer))
    pairs = [align_pair(h, c) for h, c in prompts[:2]]
    estimate = attribution_estimate(model, pairs, metric, keep_runs=True, progress=False)
    assert estimate.runs is not None
    heads = [(3, 2), (5, 0), (1, 1)]
    reused = interchange(model, pairs, metric, heads=heads, runs=estimate.runs, progress=False)
    fresh = interchange(model, pairs, metric, heads=heads, progress=False)
    for d in ("necessity", "sufficiency"):
        torch.testing.assert_close(
            reused.patched[d], fresh.patched[d], atol=1e-5, rtol=0, equal_nan=True
        )
    torch.testing.assert_close(reused.clean_harmful, estimate.clean_harmful, atol=1e-5, rtol=0)
    # The fresh step runs both pairs' clean runs in one batched pass (one CLEAN_PAIRS group).
    assert reused.stats.forward_passes == fresh.stats.forward_passes - 1
    over = attribution_estimate(model, pairs, metric, keep_runs=True, budget_mb=1e-3)
    assert over.runs is None  # over the memory budget: the exact step runs its own
    with pytest.raises(ValueError, match="other prompts"):
        interchange(model, pairs, metric, heads=heads, runs=estimate.runs[::-1], progress=False)


def test_head_index_is_checked(models) -> None:
    model = models["qwen2"]
    clean = clean_run(model, torch.arange(10, 20))
    with pytest.raises(HeadIndexError):
        run_rows(model, clean, [[Scale(0, model.n_heads, "all", alpha=0.0)]])
    with pytest.raises(HeadIndexError):
        run_rows(model, clean, [[Scale(model.n_layers, 0, "all", alpha=0.0)]])


def _equal_length_pairs(tok, n=2):
    out = []
    for p in builtin_pairs(40):
        h, c = format_chat(tok, p.harmful), format_chat(tok, p.control)
        if len(h) == len(c):
            out.append((h, c))
    assert len(out) >= n
    return out[:n]


@pytest.mark.parametrize("arch", [*ARCHS, "organism"])
@pytest.mark.engine
def test_necessity_equals_transformer_lens_patching(request, arch) -> None:
    """Raw patched metric of every head == TL's get_act_patch_attn_head_out_all_pos.

    On tiny Qwen2 (GQA) and GPT-2 models and on the model organism (Llama, GQA).
    """
    from transformer_lens import patching

    if arch == "organism":
        model, prompts = request.getfixturevalue("organism")
    else:
        model = request.getfixturevalue("models")[arch]
        prompts = _equal_length_pairs(model.tokenizer)
    metric = RefusalScoreMetric(refusal_token_ids(model.tokenizer))
    pairs = [align_pair(h, c) for h, c in prompts]
    assert any(p.shared > 1 for p in pairs)  # the shared opening is skipped, and still equal
    run = interchange(model, pairs, metric, progress=False)
    for i, (h, c) in enumerate(prompts):
        _, control_cache = model.bridge.run_with_cache(c.tokens[None])
        with torch.no_grad():
            reference = patching.get_act_patch_attn_head_out_all_pos(
                model.bridge, h.tokens[None], control_cache, lambda x, i=i: metric(x[:, -1:], i)[0]
            )
        torch.testing.assert_close(
            run.patched["necessity"][i], reference.double(), atol=1e-4, rtol=0
        )


@pytest.mark.parametrize("positions", ["all", "last"])
@pytest.mark.engine
def test_chosen_heads_merged_into_one_run_equal_the_full_grid(organism, positions) -> None:
    """A few heads in different layers (one batched run from the lowest) == the per-layer map."""
    model, prompts = organism
    metric = RefusalScoreMetric(refusal_token_ids(model.tokenizer))
    pairs = [align_pair(h, c) for h, c in prompts[:2]]
    heads = [(6, 1), (3, 0), (1, 2), (model.n_layers - 1, 2), (3, 3)]
    full = interchange(model, pairs, metric, positions=positions, progress=False)
    some = interchange(model, pairs, metric, positions=positions, heads=heads, progress=False)
    for d in ("necessity", "sufficiency"):
        for layer, head in heads:
            torch.testing.assert_close(
                some.patched[d][:, layer, head], full.patched[d][:, layer, head], atol=1e-5, rtol=0
            )
        assert int((~some.patched[d].isnan()).sum()) == len(heads) * len(pairs)
    # One batched clean pass of both pairs' prompts, then per pair one patched pass per
    # direction in which each head's row joins at its own layer.
    assert some.stats.forward_passes == 1 + 2 * len(pairs)
    joined = sum(model.n_layers - layer for layer, _ in heads)
    assert some.stats.block_rows == 2 * len(pairs) * joined


def test_unequal_lengths_are_right_aligned_and_reported(models) -> None:
    model = models["qwen2"]
    tok = model.tokenizer
    pairs = [
        p for p in builtin_pairs(10) if len(tok.encode(p.harmful)) != len(tok.encode(p.control))
    ]
    h, c = format_chat(tok, pairs[0].harmful), format_chat(tok, pairs[0].control)
    pair = align_pair(h, c)
    assert pair.truncated == abs(len(h) - len(c)) > 0
    with pytest.warns(UserWarning, match="not patched"):
        result = interchange_test(model, pairs[:2], positions="last", n_boot=50, progress=False)
    assert result.truncated[0] == pair.truncated
    # A tail that tokenizes differently puts t_inst at different distances from the end.
    shifted = ChatPrompt(h.instruction, h.text, h.tokens, h.t_inst - 1, h.t_post_inst)
    with pytest.raises(PairAlignmentError, match="t_inst"):
        align_pair(shifted, c)


def test_interrupted_run_resumes_from_chunks(models, tmp_path) -> None:
    model = models["gpt2"]
    metric = RefusalScoreMetric(refusal_token_ids(model.tokenizer))
    pairs = [align_pair(h, c) for h, c in _equal_length_pairs(model.tokenizer)]
    first = interchange(model, pairs, metric, positions="last", chunk_dir=tmp_path, progress=False)
    again = interchange(model, pairs, metric, positions="last", chunk_dir=tmp_path, progress=False)
    assert first.stats.forward_passes > 0 and again.stats.forward_passes == 0
    torch.testing.assert_close(first.patched["necessity"], again.patched["necessity"])


def test_result_object_round_trips(models, tmp_path) -> None:
    model = models["qwen2"]
    result = interchange_test(
        model,
        builtin_pairs(4),
        metric="nll",
        nll_tokens=2,
        positions="last",
        n_boot=50,
        progress=False,
    )
    assert result.necessity.shape == (model.n_layers, model.n_heads)
    top = result.top(3, by="abs")
    assert len(top) == 3 and abs(top[0].value) >= abs(top[1].value)
    path = result.to_json(tmp_path / "r.json")
    back = type(result).from_json(path)
    assert back.to_dict() == result.to_dict()
    frame = result.to_dataframe()
    assert len(frame) == 2 * model.n_layers * model.n_heads
    assert set(result.significant(1.01)) <= set(result.top(100, by="abs"))
