"""Cipher contrast on the exact organism: every number against a lone run, and the truth.

The organism's gate (L3H2) reads plain-text harmful topic words; the cipher variant swaps
the topic word for its ROT13 twin (same meaning, no harmful flag). So, by construction:
the cipher prompts are answered, the gate's interchange necessity collapses to 0 under
cipher, the amplifiers (which read the gate's HARM feature) are the cipher-sensitive heads
of DLA while the gate's own DLA is 0, and the plain gate output clamped into the cipher run
restores every refusal (``circuits/organism/ground_truth.py``: "cipher",
"cipher gate injection").
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from attribution.metrics import greedy_token, refusal_direction, refusal_score
from attribution.refusal_tokens import refusal_token_ids
from circuits.cipher import CipherContrast, cipher_contrast, parse_head
from circuits.cli import main
from patching.chat import format_chat
from patching.decoding import INTERVENE, greedy_decode
from patching.errors import OptionError, PairError
from patching.interventions import Clamp
from tests.helpers.figures import assert_units

N = 6


@pytest.fixture(scope="module")
def organism():
    from circuits.organism import load_ground_truth, organism_dir
    from patching.loading import load_model
    from patching.prompts import read_pairs

    d = organism_dir()
    plain = read_pairs(d / "pairs.jsonl", n=N)
    cipher = read_pairs(d / "pairs_cipher.jsonl", n=N)
    return load_model(d), plain, cipher, load_ground_truth(d)


@pytest.fixture(scope="module")
def result(organism) -> CipherContrast:
    model, plain, cipher, truth = organism
    return cipher_contrast(model, plain, cipher, gate=truth.gate, n_boot=200, progress=False)


def _lone(model, text: str) -> tuple[torch.Tensor, dict]:
    """Logits and cache of one unbatched, unhooked ``run_with_cache`` of ``text``."""
    tokens = format_chat(model.tokenizer, text).tokens[None].to(model.device)
    with torch.no_grad():
        logits, cache = model.bridge.run_with_cache(tokens)
    return logits[0, -1], cache


def _lone_dla(model, text: str, answer: torch.Tensor) -> np.ndarray:
    """Per-head DLA from ``hook_z``, ``W_O`` and an RMS of the final residual computed here."""
    _, cache = _lone(model, text)
    final = cache[f"blocks.{model.n_layers - 1}.hook_resid_post"][0, -1].double()
    scale = torch.sqrt(final.pow(2).mean() + 1e-6)
    ids = refusal_token_ids(model.tokenizer)
    direction = refusal_direction(model.W_U, ids, answer.view(1))[0]
    out = np.zeros((model.n_layers, model.n_heads))
    for layer in range(model.n_layers):
        z = cache[f"blocks.{layer}.attn.hook_z"][0, -1].double()  # [head, d_head]
        heads = torch.einsum("hd,hdm->hm", z, model.W_O(layer).double())
        out[layer] = ((heads / scale * model.final_norm_gain.double()) @ direction).cpu().numpy()
    return out


def test_per_head_dla_and_contrast_equal_lone_runs(organism, result) -> None:
    model, plain, cipher, _ = organism
    plain_dla, cipher_dla = [], []
    for p, c in zip(plain, cipher, strict=True):
        answer = greedy_token(_lone(model, p.control)[0][None])
        plain_dla.append(_lone_dla(model, p.harmful, answer))
        cipher_dla.append(_lone_dla(model, c.harmful, answer))
    np.testing.assert_allclose(result.plain_heads, plain_dla, atol=1e-4)
    np.testing.assert_allclose(result.cipher_heads, cipher_dla, atol=1e-4)
    hand = np.mean(plain_dla, axis=0) - np.mean(cipher_dla, axis=0)
    np.testing.assert_allclose(result.difference, hand, atol=1e-4)
    np.testing.assert_allclose(result.contrast, np.abs(hand), atol=1e-4)
    ranked = [(s.layer, s.head) for s in result.top(3)]
    order = np.argsort(-np.abs(hand).ravel())[:3]
    assert ranked == [divmod(int(i), model.n_heads) for i in order]
    low, high = result.difference_ci
    assert np.all(low <= result.difference + 1e-12) and np.all(result.difference <= high + 1e-12)


def test_organism_truth_cipher_contrast_ranks_the_gates_readers_first(organism, result) -> None:
    _, _, _, truth = organism
    top = result.top(len(truth.amplifiers))
    assert {(s.layer, s.head) for s in top} == set(truth.amplifiers)
    assert all(s.value > 1.0 and s.ci_low > 0 for s in top)
    # The gate writes a feature the unembedding ignores: 0 on both, as planted.
    layer, head = truth.gate
    assert abs(result.plain_heads[:, layer, head]).max() < 1e-4
    assert abs(result.cipher_heads[:, layer, head]).max() < 1e-4


def test_organism_truth_refusal_rates_necessity_collapse_and_injection(result) -> None:
    assert result.refusal_rate("plain") == 1.0
    assert result.refusal_rate("cipher") == 0.0
    assert result.refusal_rate("control") == 0.0
    nec = result.necessity
    assert nec is not None
    assert nec.necessity_plain == pytest.approx(1.0, abs=0.05)
    assert nec.collapse_pct >= 90.0 and nec.collapse_ci_pct[0] >= 90.0
    assert [i.variant for i in result.injections] == ["last_position", "every_step"]
    for inj in result.injections:
        assert result.restored_share(inj) >= 0.9
        assert all(inj.first_token_refusal)


def _hooked_logits(model, text: str, layer: int, head: int, value: torch.Tensor) -> torch.Tensor:
    """Lone run with the head's output at the last position set to ``value``."""
    tokens = format_chat(model.tokenizer, text).tokens[None].to(model.device)

    def hook(z, hook):
        z = z.clone()
        z[0, -1, head] = value
        return z

    with torch.no_grad():
        logits = model.bridge.run_with_hooks(
            tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", hook)]
        )
    return logits[0, -1]


def test_injection_and_necessity_equal_lone_hooked_runs(organism, result) -> None:
    model, plain, cipher, truth = organism
    layer, head = truth.gate
    ids = refusal_token_ids(model.tokenizer)
    nec = result.necessity
    assert nec is not None
    for i, (p, c) in enumerate(zip(plain, cipher, strict=True)):
        plain_z = _lone(model, p.harmful)[1][f"blocks.{layer}.attn.hook_z"][0, -1, head]
        injected = _hooked_logits(model, c.harmful, layer, head, plain_z)
        score = float(refusal_score(injected[None], ids)[0])
        assert result.injections[0].injected_score[i] == pytest.approx(score, abs=1e-4)
        assert result.injections[0].first_token_refusal[i] == (int(injected.argmax()) in ids)
        clean = float(refusal_score(_lone(model, c.harmful)[0][None], ids)[0])
        control_z = _lone(model, c.control)[1][f"blocks.{layer}.attn.hook_z"][0, -1, head]
        patched = _hooked_logits(model, c.harmful, layer, head, control_z)
        drop = clean - float(refusal_score(patched[None], ids)[0])
        assert nec.cipher_drop[i] == pytest.approx(drop, abs=1e-4)


def test_clamped_decoding_cached_equals_full_passes(organism) -> None:
    model, plain, cipher, truth = organism
    layer, head = truth.gate
    prompts = [format_chat(model.tokenizer, c.harmful) for c in cipher[:3]]
    z = _lone(model, plain[0].harmful)[1][f"blocks.{layer}.attn.hook_z"][0, -1, head]
    rows = [[Clamp(layer, head, value=z, start=len(p) - 1)] for p in prompts]
    for mode in INTERVENE:
        cached = greedy_decode(model, prompts, 6, rows, intervene=mode)
        assert cached == greedy_decode(model, prompts, 6, rows, intervene=mode, use_cache=False)


def test_result_round_trips_through_json(result, tmp_path: Path) -> None:
    path = result.to_json(tmp_path / "cipher.json")
    data = json.loads(path.read_text())
    assert CipherContrast.from_dict(data).to_dict() == data
    assert data["refusal_rate"] == {"plain": 1.0, "cipher": 0.0, "control": 0.0}
    assert set(data["injection"]) == {"last_position", "every_step"}
    assert data["necessity"]["collapse_pct"] == pytest.approx(result.necessity.collapse_pct)
    assert len(data["ranked_heads"]) == result.n_layers * result.n_heads


def test_mismatched_pairs_and_bad_heads_are_refused(organism) -> None:
    model, plain, cipher, _ = organism
    with pytest.raises(PairError, match="cipher pairs"):
        cipher_contrast(model, plain, cipher[:-1], progress=False)
    with pytest.raises(OptionError, match=r"LAYER\.HEAD"):
        parse_head("3-2")
    with pytest.raises(OptionError, match="8 layers"):
        parse_head("9.0", model)


def test_command_writes_json_and_report(tmp_path: Path) -> None:
    out = tmp_path / "cipher"
    argv = ["cipher", "--n", "4", "--gate", "3.2", "--n-boot", "100", "--quiet"]
    assert main([*argv, "--out", str(out)]) == 0
    data = json.loads((out / "cipher.json").read_text())
    assert data["gate"] == [3, 2] and data["gate_source"] == "given by --gate"
    assert data["injection"]["every_step"]["restored_share"] == 1.0
    assert "plotly" in (out / "report.html").read_text()


def test_command_finds_the_gate_itself(tmp_path: Path) -> None:
    out = tmp_path / "found"
    assert main(["cipher", "--n", "4", "--n-boot", "50", "--quiet", "--out", str(out)]) == 0
    assert json.loads((out / "cipher.json").read_text())["gate"] == [3, 2]


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--gate", "x"], "LAYER.HEAD"),
        (["--template", "no placeholders"], "missing"),
        (["--cipher-key", "abc"], "permutation"),
    ],
)
def test_command_refuses_bad_options_before_loading(tmp_path, capsys, extra, says) -> None:
    assert main(["cipher", "--out", str(tmp_path / "x"), *extra]) == 2
    assert says in capsys.readouterr().err


def test_every_cipher_figure_names_its_units(result) -> None:
    from circuits.cipher_views import cipher_figures, cipher_summary

    figures = cipher_figures(result)
    assert set(figures) == {"cipher_heatmap", "cipher_top_heads", "cipher_behaviour"}
    for stem, fig in figures.items():
        assert_units(stem, fig)
    heat = figures["cipher_heatmap"].data[0]
    np.testing.assert_allclose(np.asarray(heat.z, dtype=float), result.difference)
    bars = {b.name: list(b.y) for b in figures["cipher_behaviour"].data}
    assert bars["refusal"][:3] == [100.0, 0.0, 0.0]  # plain, cipher, control
    assert any("collapse 100%" in line for line in cipher_summary(result))


def test_every_step_injection_equals_a_lone_clamped_generation(organism) -> None:
    """Greedy tokens with the gate held at the plain value from the prompt's last position on,
    by a hand-written loop of lone hooked passes (no executor, no cache)."""
    model, plain, cipher, truth = organism
    layer, head = truth.gate
    for p, c in list(zip(plain, cipher, strict=True))[:2]:
        value = _lone(model, p.harmful)[1][f"blocks.{layer}.attn.hook_z"][0, -1, head]
        prompt = format_chat(model.tokenizer, c.harmful)
        start = len(prompt) - 1

        def hold(z, hook, start=start, value=value):
            z = z.clone()
            z[0, start:, head] = value
            return z

        tokens = prompt.tokens[None].to(model.device)
        made: list[int] = []
        with torch.no_grad():
            for _ in range(6):
                logits = model.bridge.run_with_hooks(
                    tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", hold)]
                )
                nxt = int(logits[0, -1].argmax())
                made.append(nxt)
                if nxt == model.tokenizer.eos_token_id:
                    break
                tokens = torch.cat([tokens, torch.tensor([[nxt]], device=model.device)], dim=1)
        rows = [[Clamp(layer, head, value=value, start=start)]]
        assert greedy_decode(model, [prompt], 6, rows, intervene="every_step") == [made]
        assert made[0] in refusal_token_ids(model.tokenizer)  # the refusal is restored


# -- review fixes: selection labels and undefined ratios ---------------------------
def test_cipher_necessity_against_its_own_gap_matches_lone_runs(organism, result) -> None:
    """Organism truth: the cipher prompts carry no refusal, so the ratio to their own gap is
    undefined (NaN), not a number; the gap itself equals lone-run refusal scores."""
    model, _, cipher, _ = organism
    ids = refusal_token_ids(model.tokenizer)
    nec = result.necessity
    assert nec is not None
    for i, c in enumerate(cipher):
        harm = float(refusal_score(_lone(model, c.harmful)[0][None], ids)[0])
        ctrl = float(refusal_score(_lone(model, c.control)[0][None], ids)[0])
        assert nec.cipher_gap[i] == pytest.approx(harm - ctrl, abs=1e-4)
    assert nec.cipher_gap.mean() <= nec.floor
    own = nec.necessity_cipher_own
    assert np.isnan(own.value) and np.isnan(own.ci_low) and np.isnan(own.ci_high)
    # JSON writes an undefined number as null, never as a number.
    data = nec.to_dict()
    assert data["necessity_cipher_own"] is None and data["necessity_cipher_own_ci"] == [None, None]
    assert not nec.selected_on_pairs


def test_undefined_ratios_are_nan_not_numbers() -> None:
    from circuits.cipher import GateNecessity

    gap = np.array([4.0, 5.0, 6.0, 5.0])
    # The gate carries no plain refusal (plain drop <= 0): collapse and necessities are NaN.
    nec = GateNecessity([0, 0], np.array([-0.01, 0.0, 0.01, -0.02]), np.ones(4), gap, gap)
    assert np.isnan(nec.collapse_pct) and all(np.isnan(nec.collapse_ci_pct))
    assert nec.necessity_plain == pytest.approx(-0.02 / 4 / 5.0)
    # Zero gap: every necessity NaN.
    flat = GateNecessity([0, 0], np.ones(4), np.ones(4), np.zeros(4), np.zeros(4))
    assert np.isnan(flat.necessity_plain) and np.isnan(flat.necessity_cipher)
    assert np.isnan(flat.necessity_cipher_own.value)


def test_restored_ci_is_nan_when_the_share_is(result) -> None:
    from dataclasses import replace

    # Cipher prompts refused more often than plain ones (no gap to restore), though some
    # resamples of the pairs have a positive gap: the share and its interval are both NaN.
    plain = ["refusal"] + ["answer"] * (N - 1)
    cipher = ["answer", "refusal", "refusal"] + ["answer"] * (N - 3)
    same = replace(result, plain_class=plain, cipher_class=cipher, _ci=None)
    for inj in same.injections:
        assert np.isnan(same.restored_share(inj))
        assert all(np.isnan(same.restored_ci(inj)))
        assert same.to_dict()["injection"][inj.variant]["restored_dropped_resamples"] == 200


def test_default_gate_is_labelled_selected_on_these_pairs(tmp_path: Path, capsys) -> None:
    out = tmp_path / "sel"
    assert main(["cipher", "--n", "4", "--n-boot", "50", "--quiet", "--out", str(out)]) == 0
    data = json.loads((out / "cipher.json").read_text())
    assert data["necessity"]["selected_on_pairs"] is True
    assert "selected on these pairs" in data["gate_source"]
    assert "selected on these same pairs" in capsys.readouterr().out
