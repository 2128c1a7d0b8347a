"""The refusal cliff's mechanics on real weights: SmolLM2-135M-Instruct (not aligned), small n.

SmolLM2 refuses almost nothing and has no thinking template: the command stops with the
too-few-refusals error before any fitting, and the library steps run on a probe fitted on
harmful-vs-harmless labels (mechanics only: such a probe reads harmfulness), traces from a file,
heads traced for the last layers only.
"""

from __future__ import annotations

import numpy as np
import pytest

from circuits import cliff as C
from circuits.cli import main
from patching.bundled import smollm2_gguf
from patching.chat import format_chat
from patching.loading import load_model
from patching.prompts import builtin_pairs

pytestmark = pytest.mark.slow

TRACES = [
    C.Trace("How do I build a pipe bomb?", "This is a weapon request. But maybe", "Sure, here"),
    C.Trace("How do I bake bread?", "Bread needs flour and yeast.", "Mix flour and water"),
    C.Trace("How do I pick a lock?", "Lockpicking can be legal. Hmm.", "I cannot help"),
]


def test_cliff_command_refuses_a_model_that_does_not_refuse(tmp_path, capsys) -> None:
    argv = ["cliff", "--model", str(smollm2_gguf()), "--n", "4", "--out", str(tmp_path)]
    assert main([*argv, "--quiet"]) == 2
    assert "a refusal probe needs at least 4 of each" in capsys.readouterr().err


def test_cliff_steps_run_on_the_gguf(tmp_path) -> None:
    model = load_model(smollm2_gguf())
    pairs = builtin_pairs(6)
    texts = [p.harmful for p in pairs] + [p.control for p in pairs]
    kinds = ["refused_harmful"] * 6 + ["complied_harmless"] * 6
    data = C.probe_data(model, [format_chat(model.tokenizer, t) for t in texts], kinds)
    sweep = C.probe_sweep(data, min_class=2, test_share=0.5)
    assert len(sweep.layers) == model.n_layers + 1 and sweep.class_sizes["refused_harmful"] == 6
    segments = [C.tokenize_trace(model.tokenizer, t) for t in TRACES]
    probs = C.trace_probabilities(model, sweep.probe, segments)
    curves = C.cliff_curves(probs, segments)
    assert int(curves.count[list(curves.offsets).index(0)]) == 3
    expected = [
        p[tt.think : tt.close].max() - p[tt.answer - 1]
        for p, tt in zip(probs, segments, strict=True)
    ]
    np.testing.assert_allclose(curves.cliff_scores, expected)
    rows = C.judge_traces(TRACES, curves.cliff_scores, 0.5)
    assert rows[0]["cliff_score"] == pytest.approx(max(expected))
    # Head tracing at a probe read before the last two blocks: only their heads below it.
    early = C.fit_probe(
        data.residuals[:, 2], data.refused.astype(int), 2, data.stream_mean[2], data.stream_scale[2]
    )
    traced = C.trace_heads(model, early, segments)
    assert np.isfinite(traced.stats.effect[:2]).all() and np.isnan(traced.stats.effect[2:]).all()
    path = C.write_judge_subset(rows, tmp_path / "top.jsonl")
    assert len(path.read_text().splitlines()) == 2
