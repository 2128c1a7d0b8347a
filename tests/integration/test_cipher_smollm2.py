"""Cipher contrast's mechanics on real weights: SmolLM2-135M-Instruct (not aligned), small n."""

from __future__ import annotations

import json

import numpy as np
import pytest

from circuits.cli import main
from patching.bundled import smollm2_gguf
from patching.prompts import Cipher, builtin_pairs

pytestmark = pytest.mark.slow


def test_cipher_command_runs_end_to_end_on_the_gguf(tmp_path) -> None:
    out = tmp_path / "smol"
    argv = ["cipher", "--model", str(smollm2_gguf()), "--n", "3", "--gate", "15.3"]
    argv += ["--gen-tokens", "4", "--n-boot", "100", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    data = json.loads((out / "cipher.json").read_text())
    per_pair = data["per_pair"]
    assert np.asarray(per_pair["plain_heads"]).shape == (3, 30, 9)
    assert len(data["ranked_heads"]) == 30 * 9
    assert data["gate"] == [15, 3] and set(data["injection"]) == {"last_position", "every_step"}
    # The default cipher (seed 0) encoded every built-in pair's harmful text.
    key = Cipher.from_seed(0)
    assert key.key in data["cipher"]
    assert per_pair["categories"] == [p.category for p in builtin_pairs(3)]
    for rate in data["refusal_rate"].values():
        assert 0.0 <= rate <= 1.0
    assert (out / "report.html").is_file()
