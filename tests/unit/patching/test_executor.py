"""The executor, the decoding loop and the left-padded decomposition equal plain forward passes."""

from __future__ import annotations

import pytest
import torch

from patching.components import decompose_residual
from patching.decoding import ForceAbove, LogitBias, greedy_decode
from patching.engine import run_rows_full
from patching.executor import run, run_and_cache
from patching.interventions import Ablation, AddVector, Intervention, Scale, z_hook

# Left padding leans on how transformers builds masks and position ids: the range leg runs these.
pytestmark = pytest.mark.engine

ARCHS = ["qwen2", "gpt2", "gemma2"]


@pytest.fixture(scope="module")
def models(tiny_dirs):
    from patching.loading import load_model

    return {arch: load_model(tiny_dirs[arch]) for arch in ARCHS}


def _prompts(n: tuple[int, ...] = (9, 14, 11, 14), seed: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(10, 400, (k,), generator=g) for k in n]


def _rows(model) -> list[list[Intervention]]:
    last = model.n_layers - 1
    steer = torch.linspace(-1, 1, model.d_model)
    return [
        [Ablation(1, 0)],
        [Scale(0, 2, "all", alpha=3.0), Ablation(last, 1, [-1])],
        [],
        [AddVector("blocks.1.hook_resid_pre", steer, [-2, -1]), Scale(last, 0, alpha=0.0)],
    ]


@pytest.mark.parametrize("arch", ARCHS)
def test_run_equals_each_prompt_alone(models, arch) -> None:
    """Knockouts, scaling and steering on left-padded prompts == one plain pass per prompt."""
    model = models[arch]
    prompts, rows = _prompts(), _rows(model)
    logits = run(model, prompts, rows, readout=[-2, -1], batch_size=3)
    for prompt, row, got in zip(prompts, rows, logits, strict=True):
        alone = run_rows_full(model, prompt, [row], readout=[-2, -1])[0]
        torch.testing.assert_close(got, alone, atol=1e-5, rtol=1e-5)
    clean = run(model, prompts)
    assert (clean[0] - logits[0, -1:]).abs().max() > 1e-4  # the knockout does act


@pytest.mark.parametrize("arch", ARCHS[:2])
def test_cache_is_of_the_intervened_run(models, arch) -> None:
    """Captured head outputs are those after the interventions, at the prompt's own positions."""
    model = models[arch]
    prompts = _prompts((7, 12))
    rows: list[list[Intervention]] = [[Ablation(1, 2)], [Scale(0, 1, alpha=2.0)]]
    names = [z_hook(1), "blocks.2.hook_resid_pre"]
    _, caches = run_and_cache(model, prompts, rows, names=names)
    _, last = run_and_cache(model, prompts, rows, names=names, at=[-1])
    for prompt, row, cache, at_last in zip(prompts, rows, caches, last, strict=True):
        _, (alone,) = run_and_cache(model, [prompt], [row], names=names)
        for name in names:
            assert cache[name].shape[0] == len(prompt)
            torch.testing.assert_close(cache[name], alone[name], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(at_last[name], alone[name][-1:], atol=1e-5, rtol=1e-5)
    assert torch.count_nonzero(caches[0][z_hook(1)][:, 2]) == 0


def _naive_decode(model, prompt, n_tokens, row, *, prompt_only: bool) -> list[int]:
    """The loop decoding replaced: one plain full pass per token, no batching, no padding."""
    seq, out = prompt, []
    for _ in range(n_tokens):
        fixed: list[Intervention] = []
        for iv in row:  # positions of the prompt only: pin them before the sequence grows
            if prompt_only and isinstance(iv, Scale):
                fixed.append(Scale(iv.layer, iv.head, list(range(len(prompt))), alpha=iv.alpha))
            else:
                fixed.append(iv)
        nxt = int(run_rows_full(model, seq, [fixed])[0, -1].argmax())
        out.append(nxt)
        seq = torch.cat([seq, torch.tensor([nxt])])
    return out


@pytest.mark.parametrize("arch", ARCHS[:2])
def test_greedy_decode_equals_the_plain_loop(models, arch) -> None:
    model = models[arch]
    prompts = _prompts((8, 13, 10))
    rows: list[list[Intervention]] = [[Scale(1, h, alpha=4.0) for h in range(3)]] * 3
    assert greedy_decode(model, prompts, 5, stop_at_eos=False) == [
        _naive_decode(model, p, 5, [], prompt_only=False) for p in prompts
    ]
    for mode in ("every_step", "prompt"):
        got = greedy_decode(model, prompts, 5, rows, intervene=mode, stop_at_eos=False)  # type: ignore[arg-type]
        want = [
            _naive_decode(model, p, 5, r, prompt_only=mode == "prompt")
            for p, r in zip(prompts, rows, strict=True)
        ]
        assert got == want


def test_greedy_decode_stops_at_eos(models) -> None:
    model = models["qwen2"]
    eos = model.tokenizer.eos_token_id
    full = greedy_decode(model, _prompts(), 6, stop_at_eos=False)
    stopped = greedy_decode(model, _prompts(), 6)
    for f, s in zip(full, stopped, strict=True):
        assert s == (f[: f.index(eos) + 1] if eos in f else f)


@pytest.mark.parametrize("arch", ARCHS[:2])
@pytest.mark.parametrize("use_cache", [True, False])
def test_first_token_edit_is_the_argmax_of_the_biased_logits(models, arch, use_cache) -> None:
    """The first token is the argmax of logits + bias (by hand); later steps are unedited."""
    model = models[arch]
    prompts = _prompts((8, 13, 10, 13))
    logits = run(model, prompts)[:, -1].double().numpy()
    ids = tuple(int(i) for i in logits[0].argsort()[-12:-4])  # near the top, not the top
    biases = [30.0, -3.0, 0.5]
    edits = [*(LogitBias(ids, b) for b in biases), None]
    got = greedy_decode(
        model, prompts, 4, first_token=edits, stop_at_eos=False, use_cache=use_cache
    )
    for i, row in enumerate(logits):
        biased = row.copy()
        if edits[i] is not None:
            biased[list(ids)] += biases[i]
        assert got[i][0] == int(biased.argmax())
        # Only the first position is edited: the rest is the plain continuation of it.
        rest = greedy_decode(
            model, [torch.cat([prompts[i], torch.tensor(got[i][:1])])], 3, stop_at_eos=False
        )[0]
        assert got[i][1:] == rest
    assert any(got[i][0] in ids for i in range(3))  # the bias did change a choice


def test_force_above_and_infinite_biases(models) -> None:
    model = models["qwen2"]
    prompts = _prompts((9, 11))
    logits = run(model, prompts)[:, -1].double()
    ids = (5, 50, 120)
    p = torch.softmax(logits, dim=-1)[:, list(ids)].sum(dim=-1)
    in_set = [ids[int(logits[r, list(ids)].argmax())] for r in range(2)]
    outside = logits.clone()
    outside[:, list(ids)] = float("-inf")
    for edits, want in (
        ([ForceAbove(ids, 0.0)] * 2, in_set),
        ([ForceAbove(ids, float(p.max()) + 1e-9)] * 2, outside.argmax(-1).tolist()),
        ([LogitBias(ids, float("inf"))] * 2, in_set),
        ([LogitBias(ids, float("-inf"))] * 2, outside.argmax(-1).tolist()),
    ):
        assert [t[0] for t in greedy_decode(model, prompts, 1, first_token=edits)] == want
    with pytest.raises(ValueError, match="1 first-token edits for 2 prompts"):
        greedy_decode(model, prompts, 1, first_token=[None])


@pytest.mark.parametrize("arch", ARCHS)
def test_left_padded_decomposition_equals_each_prompt_alone(models, arch) -> None:
    """One left-padded pass decomposes each prompt as its own pass does; the identity holds."""
    model = models[arch]
    prompts, rows = _prompts(), [*_rows(model)[:2], [], []]
    batch = decompose_residual(model, prompts, rows=rows)
    for r, prompt in enumerate(prompts):
        alone = decompose_residual(model, prompt[None], rows=[rows[r]])
        for field in ("heads", "attn_bias", "mlps", "embed", "resid_final", "logits"):
            torch.testing.assert_close(
                getattr(batch, field)[r], getattr(alone, field)[0], atol=1e-5, rtol=1e-5
            )
    torch.testing.assert_close(batch.total(), batch.resid_final, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2"])
def test_left_padding_stays_finite_in_float64(tiny_dirs, arch) -> None:
    """Fully masked padding rows give NaN patterns in float64; they must not reach real rows."""
    from patching.engine import clean_runs
    from patching.loading import load_model

    model = load_model(tiny_dirs[arch], dtype="float64")
    prompts = _prompts((6, 13))
    logits = run(model, prompts, [[Scale(1, 0, alpha=2.0)], []])
    runs, clean = clean_runs(model, prompts, start=[2, 4])
    for r, prompt in enumerate(prompts):
        row: list[Intervention] = [Scale(1, 0, alpha=2.0)] if r == 0 else []
        alone = run_rows_full(model, prompt, [row])[0]
        torch.testing.assert_close(logits[r], alone, atol=1e-9, rtol=1e-9)
        plain = run_rows_full(model, prompt, [[]])[0]
        torch.testing.assert_close(clean[r], plain, atol=1e-9, rtol=1e-9)
        assert torch.isfinite(torch.stack(runs[r].z)).all()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("intervene", ["every_step", "prompt"])
def test_cached_decoding_equals_full_passes(models, arch, intervene) -> None:
    """Decoding with a key/value cache == recomputing every step, under "all"-position edits."""
    model = models[arch]
    prompts = _prompts((9, 14, 11))
    steer = torch.linspace(-1, 1, model.d_model)
    rows: list[list[Intervention]] = [
        [Ablation(1, 0)],
        [Scale(0, 1, alpha=3.0), AddVector("blocks.1.hook_resid_pre", steer)],
        [],
    ]
    _assert_decoding_equals_full_passes(model, prompts, rows, intervene, forced=(5, 1))


def _assert_decoding_equals_full_passes(
    model, prompts, rows, intervene, *, forced: tuple[int, int]
) -> None:
    """Greedy tokens with and without the cache, with and without ``rows``; then each cached
    step's logits against a full pass, on sequences whose next tokens are forced to vary
    (greedy tokens of a random tiny model repeat, which would test little): ``forced`` is
    (steps, seed)."""
    from patching.decoding import cached_steps
    from patching.executor import forward_batch, prompt_labels

    for use in (rows, None):
        cached = greedy_decode(model, prompts, 6, use, intervene=intervene, stop_at_eos=False)
        full = greedy_decode(
            model, prompts, 6, use, intervene=intervene, stop_at_eos=False, use_cache=False
        )
        assert cached == full
    steps, seed = forced
    tokens = torch.randint(
        10, 400, (steps, len(prompts)), generator=torch.Generator().manual_seed(seed)
    )
    seqs = [p.clone() for p in prompts]
    lengths = [len(p) for p in prompts]

    def check(logits: torch.Tensor) -> torch.Tensor | None:
        full = forward_batch(
            model,
            seqs,
            rows,
            [{"last": len(q) - 1} for q in seqs],
            intervene_lengths=lengths if intervene == "prompt" else None,
        ).logits[:, -1]
        torch.testing.assert_close(logits, full, atol=1e-5, rtol=1e-5)
        step = len(seqs[0]) - lengths[0]
        if step == steps:
            return None
        seqs[:] = [torch.cat([q, tokens[step, r : r + 1]]) for r, q in enumerate(seqs)]
        return tokens[step]

    cached_steps(model, [prompt_labels(p) for p in prompts], 10, rows, intervene, check)
    assert len(seqs[0]) - lengths[0] == steps


@pytest.mark.parametrize("arch", ARCHS[:2])
@pytest.mark.parametrize("shared", [False, True])
def test_a_pass_stopped_at_a_block_captures_what_the_full_pass_does(
    models, arch, shared, suffix_passes
) -> None:
    """``until``: full, resumed and shared-prefix passes stopped at block 2's input capture
    what a whole pass does there (and before), and return no logits."""
    from patching.executor import forward_batch

    model = models[arch]
    prompts = _prompts((9, 14, 11, 14))
    if shared:  # a common prefix: the resumed pass runs it once (the shared-prefix path)
        prompts = [torch.cat([prompts[0][:6], p]) for p in prompts]
    names = {"z": z_hook(0), "r": "blocks.2.hook_resid_pre", "z1": z_hook(1)}
    at = [[len(p) - 1] for p in prompts]
    rows: list[list[Intervention]] = [[Scale(1, 2, "all", alpha=0.1)] for _ in prompts]
    whole = forward_batch(model, prompts, capture=names, at=at, keep_blocks=True)
    stopped = forward_batch(model, prompts, capture=names, at=at, until=2)
    assert stopped.logits.shape == (len(prompts), 0, model.d_vocab)
    knocked = forward_batch(model, prompts, rows, capture=names, at=at)
    resumed = forward_batch(
        model, prompts, rows, capture=names, at=at, until=2, resume=whole.blocks
    )
    if arch == "qwen2":  # GPT-2's block calls have no cache to run a prefix once into
        assert bool(suffix_passes) == shared
    assert resumed.logits.shape[1] == 0
    assert resumed.cache is not None and knocked.cache is not None
    for got, want in zip(resumed.cache, knocked.cache, strict=True):
        for key in names:
            torch.testing.assert_close(got[key], want[key], atol=1e-5, rtol=1e-5)
    assert stopped.cache is not None and whole.cache is not None
    for got, want in zip(stopped.cache, whole.cache, strict=True):
        for key in names:
            torch.testing.assert_close(got[key], want[key], atol=1e-5, rtol=1e-5)
    # The scaling acts on block 2's input: the comparison is not of clean runs.
    assert (knocked.cache[0]["r"] - whole.cache[0]["r"]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="until=9"):
        forward_batch(model, prompts, until=9)
    with pytest.raises(ValueError, match="keep_blocks"):
        forward_batch(model, prompts, until=2, keep_blocks=True)


@pytest.mark.parametrize("arch", ARCHS)
def test_the_last_mlp_runs_at_the_read_out_only_when_nothing_else_reads_it(models, arch) -> None:
    """A decomposition (captures at its read-out position) runs the last block's MLP at that
    position only, with the same terms as a pass that runs it everywhere; a capture at other
    positions, or a raw hook, keeps every position."""
    from patching.executor import forward_batch

    model = models[arch]
    last = model.n_layers - 1
    prompts, rows = _prompts(), [*_rows(model)[:1], [], [Scale(1, 0, alpha=0.5)], []]
    seen: list[int] = []
    handle = model.bridge.blocks[last].mlp.register_forward_pre_hook(
        lambda module, args: seen.append(int(args[0].shape[1]))
    )
    try:
        trimmed = decompose_residual(model, prompts, rows=rows)
        assert seen and set(seen) == {1}
        seen.clear()
        everywhere = decompose_residual(
            model, prompts, rows=rows, interventions=[("hook_embed", lambda x, hook: x)]
        )
        assert set(seen) == {max(map(len, prompts))}
        for field in (
            "heads",
            "attn_bias",
            "mlps",
            "embed",
            "resid_final",
            "final_scale",
            "logits",
        ):
            torch.testing.assert_close(
                getattr(trimmed, field), getattr(everywhere, field), atol=1e-5, rtol=1e-5
            )
        seen.clear()
        names = {"mlp": f"blocks.{last}.hook_mlp_out"}
        whole = forward_batch(model, prompts, capture=names)
        assert set(seen) == {max(map(len, prompts))}
        assert whole.cache is not None and (whole.cache[0]["mlp"][:-1] != 0).any()
    finally:
        handle.remove()


@pytest.mark.parametrize("arch", ARCHS)
def test_unembedding_captured_normalised_residuals_gives_the_pass_logits(models, arch) -> None:
    """Rows captured at the final norm's output and unembedded later (many passes' rows at
    once) give the logits the pass computes, soft-cap included (Gemma-2)."""
    from patching.executor import forward_batch
    from patching.rows import FINAL_NORMED, unembed

    model = models[arch]
    prompts = _prompts()
    at = [[len(p) - 1] for p in prompts]
    out = forward_batch(model, prompts, capture={"n": FINAL_NORMED}, at=at)
    assert out.cache is not None
    normed = torch.cat([c["n"] for c in out.cache])
    torch.testing.assert_close(unembed(model, normed), out.logits[:, -1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("intervene", ["every_step", "prompt"])
def test_decoding_runs_a_shared_prefix_once_per_distinct_row(
    models, arch, intervene, monkeypatch
) -> None:
    """Prompts that share their opening decode from one prefix pass per distinct row of
    interventions (left padding then sits between the prefix and each prompt's own
    tokens): every step's tokens and logits equal full passes."""
    import patching.decoding

    model = models[arch]
    opening = _prompts((7,), seed=5)[0]
    prompts = [torch.cat([opening, p]) for p in _prompts((4, 9, 6, 9, 2))]
    rows: list[list[Intervention]] = [
        [Ablation(1, 0)],
        [Scale(0, 1, alpha=3.0)],
        [],
        [Ablation(1, 0)],
        [Scale(0, 1, alpha=3.0), Ablation(1, 2, kind="zero")],
    ]
    cuts: list[int] = []
    real = patching.decoding._shared_prefix

    def spy(*args):
        cut, cache = real(*args)
        cuts.append(cut)
        return cut, cache

    monkeypatch.setattr(patching.decoding, "_shared_prefix", spy)
    _assert_decoding_equals_full_passes(model, prompts, rows, intervene, forced=(3, 2))
    # The cached decodings (with and without rows, and the forced steps) ran from the
    # shared prefix; full-pass decodings do not run one.
    assert cuts == [len(opening)] * 3
