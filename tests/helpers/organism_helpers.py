"""The organism tests' shared fixtures, and plain Hugging Face forward passes with head edits.

:func:`fresh_organism` builds an organism into a cache of the test's own (the test checks
this build, never a cached one); :func:`organism_prompts` reads its plain and framed
pairs as chat prompts. The forward-pass helpers deliberately avoid the toolkit's own
engine (and TransformerLens): the organism's behaviour must be verified independently
of the code it is meant to check. A head's output is its slice of the input of ``o_proj``
(``z[..., h*d_head:(h+1)*d_head]``), so a forward pre-hook on ``o_proj`` can
ablate, scale or replace one head exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuits.organism import organism_dir, vocab
from patching.chat import ChatPrompt, format_chat
from patching.model import HookedModel
from patching.prompts import read_pairs

Head = tuple[int, int]
HeadEdit = Callable[[Float[Tensor, "batch pos d_head"]], Float[Tensor, "batch pos d_head"]]

REFUSAL_STRINGS = ("I", "I'm", "Sorry", "As", "Unfortunately", "cannot", "can't", "unable")


@contextmanager
def fresh_organism(
    tmp_path_factory: pytest.TempPathFactory, seed: int = 0, variant: str = "exact"
) -> Iterator[Path]:
    """The organism built into a new cache folder, set as the cache while the block runs.

    A module fixture yields from inside it, so the module's own ``organism_dir`` calls
    find the same build, and the user's cache is neither read nor written.
    """
    with pytest.MonkeyPatch.context() as env:
        env.setenv("REFUSAL_CIRCUITS_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield organism_dir(seed=seed, variant=variant)


def organism_prompts(model: HookedModel, directory: Path, n: int) -> dict[str, list[ChatPrompt]]:
    """The first ``n`` plain pairs' harmful and harmless prompts, and the framed harmful ones."""
    plain = read_pairs(directory / "pairs.jsonl", n=n)
    framed = read_pairs(directory / "pairs_jailbreak.jsonl", n=n)

    def chat(texts: list[str]) -> list[ChatPrompt]:
        return [format_chat(model.tokenizer, t) for t in texts]

    return {
        "harmful": chat([p.harmful for p in plain]),
        "harmless": chat([p.control for p in plain]),
        "framed": chat([p.harmful for p in framed]),
    }


def refusal_ids(tokenizer) -> list[int]:
    """The toolkit's refusal set R: first token of each refusal string, unk skipped."""
    ids: set[int] = set()
    for word in REFUSAL_STRINGS:
        for text in (word, " " + word):
            first = tokenizer(text, add_special_tokens=False)["input_ids"][0]
            if first != tokenizer.unk_token_id:
                ids.add(first)
    return sorted(ids)


def chat_ids(tokenizer, text: str) -> list[int]:
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
    )
    return tokenizer(rendered, add_special_tokens=False)["input_ids"]


def d_head(model) -> int:
    return model.config.head_dim


@contextmanager
def head_edits(model, edits: dict[Head, HeadEdit]) -> Iterator[None]:
    """Apply ``edits[(layer, head)]`` to that head's z (the o_proj input slice)."""
    size = d_head(model)
    handles = []
    for layer in sorted({layer for layer, _ in edits}):
        heads = {h: fn for (lay, h), fn in edits.items() if lay == layer}

        def pre_hook(module, args, heads=heads):
            (z,) = args
            z = z.clone()
            for h, fn in heads.items():
                z[..., h * size : (h + 1) * size] = fn(z[..., h * size : (h + 1) * size])
            return (z,)

        o_proj = model.model.layers[layer].self_attn.o_proj
        handles.append(o_proj.register_forward_pre_hook(pre_hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def scale(alpha: float) -> HeadEdit:
    return lambda z: alpha * z


def replace_with(values: Float[Tensor, "batch pos d_head"]) -> HeadEdit:
    return lambda z: values.to(z.dtype)


@torch.no_grad()
def run(
    model, ids: Int[Tensor, "batch pos"], capture: list[int] | None = None
) -> tuple[Float[Tensor, "batch vocab"], dict[str, Tensor]]:
    """Logits at the last position, plus captured tensors.

    ``capture`` lists layers whose o_proj input (all heads' z) is stored as
    ``z{layer}``; the final norm's input is always stored as ``resid_final``.
    """
    store: dict[str, Tensor] = {}
    handles = []
    for layer in capture or []:

        def grab(module, args, layer=layer):
            store[f"z{layer}"] = args[0].detach().clone()

        handles.append(model.model.layers[layer].self_attn.o_proj.register_forward_pre_hook(grab))

    def grab_final(module, args):
        store["resid_final"] = args[0].detach().clone()

    handles.append(model.model.norm.register_forward_pre_hook(grab_final))
    try:
        logits = model(ids).logits[:, -1]
    finally:
        for handle in handles:
            handle.remove()
    return logits, store


def batch(tokenizer, texts: list[str]) -> Int[Tensor, "batch pos"]:
    """Token ids of equal-length templated prompts (pairs are token-aligned)."""
    rows = [chat_ids(tokenizer, t) for t in texts]
    lengths = {len(r) for r in rows}
    assert len(lengths) == 1, f"prompts of different lengths: {lengths}"
    return torch.tensor(rows)


def by_length(tokenizer, texts: list[str]) -> dict[int, list[int]]:
    """Indices of ``texts`` grouped by templated length (frames differ in length)."""
    groups: dict[int, list[int]] = {}
    for i, text in enumerate(texts):
        groups.setdefault(len(chat_ids(tokenizer, text)), []).append(i)
    return groups


def response_class(tokenizer, token_id: int) -> str:
    word = tokenizer.convert_ids_to_tokens(token_id)
    if word in vocab.REFUSAL_WORDS:
        return "refusal"
    if word in vocab.EVASION_WORDS:
        return "evasion"
    if word in vocab.COMPLIANCE_WORDS:
        return "compliance"
    return "other"


def refusal_score(
    logits: Float[Tensor, "batch vocab"], r_ids: list[int]
) -> Float[Tensor, " batch"]:
    """log p(R) - log(1 - p(R)) in float64 (docs/science.md#refusal-score)."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    log_pr = torch.logsumexp(logp[:, r_ids], dim=-1)
    return log_pr - torch.log1p(-torch.exp(log_pr))


def head_residual_output(
    model, layer: int, z: Float[Tensor, "batch pos heads_x_dhead"], head: int
) -> Float[Tensor, "batch pos d_model"]:
    """What one head adds to the residual stream: its z slice through its o_proj columns."""
    size = d_head(model)
    w_o = model.model.layers[layer].self_attn.o_proj.weight[:, head * size : (head + 1) * size]
    return z[..., head * size : (head + 1) * size] @ w_o.T


def head_dla(
    model,
    layer: int,
    head: int,
    z: Float[Tensor, "batch pos heads_x_dhead"],
    resid_final: Float[Tensor, "batch pos d_model"],
    direction: Float[Tensor, " d_model"],
) -> Float[Tensor, " batch"]:
    """Direct logit attribution of one head at the last position.

    Defined in docs/science.md#direct-logit-attribution. The head's output is
    divided by the final norm's scale from the same run (frozen) and dotted with
    the final-norm gain times the logit direction.
    """
    out = head_residual_output(model, layer, z, head)[:, -1]
    eps = model.config.rms_norm_eps
    norm_scale = (resid_final[:, -1].pow(2).mean(-1, keepdim=True) + eps).sqrt()
    gain = model.model.norm.weight
    return (out / norm_scale) @ (gain * direction)


def refusal_direction(model, r_ids: list[int], answer_id: int) -> Float[Tensor, " d_model"]:
    w_u = model.lm_head.weight
    return w_u[r_ids].mean(0) - w_u[answer_id]
