"""The refusal cliff: a refusal probe read along reasoning traces, and the heads that cause it.

"Refusal Falls off a Cliff" finds that reasoning models keep a strong refusal intention
through their thinking and lose it in the last tokens before the answer. This module
measures that on any model (docs/science.md#refusal-cliff):

- :func:`probe_examples` + :func:`probe_sweep`: a refusal probe (scikit-learn logistic
  regression on standardised features) on the residual stream at the position that
  predicts the answer, trained on the model's own behaviour: refused harmful prompts
  against complied harmful (the control that keeps it from reading harmfulness) and
  complied harmless ones; held-out accuracy and AUC at every layer.
- :func:`generate_traces` / :func:`read_traces` and :func:`cliff_curves`: the probe's
  refusal probability at every token of prompt + reasoning trace + answer opening,
  averaged aligned on the end-of-thinking marker and on relative position (missing
  positions excluded, bootstrap bands), and each trace's cliff score: the maximum
  over the thinking segment minus the value at the last position before the answer.
- :func:`trace_heads`: each head's output scaled by 0.1 (or zero / mean ablated), the
  change of the probe's log-odds at the last position before the answer, with
  significance over traces; heads that suppress refusal rank first.
- :func:`ablate_top_heads`: attack success (share of harmful prompts answered, by the
  behaviour classifier, with thinking) with the top k% of those heads ablated, against
  as many random heads from the same (traced) candidates, with an empirical p. A plain
  ablation; ``renormalise=True`` (labelled in the
  output) scales the layer's other heads up as the paper's code does.
- :func:`judge_traces`: Cliff-as-a-Judge, the traces ranked by cliff score.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from attribution.classification import roc_auc
from attribution.result import Result
from attribution.statistics import EffectStats, HeadStat, bootstrap_mean_ci, effect_stats
from circuits.behaviour import Judge, classify
from patching.chat import ChatPrompt, format_chat, render
from patching.decoding import greedy_decode
from patching.errors import PromptFileError, RefusalCircuitsError
from patching.executor import DEFAULT_BATCH_SIZE, run_and_cache
from patching.interventions import Ablation, Intervention, Scale, z_hook
from patching.model import HookedModel
from patching.residuals import residual_hooks

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# Asked of a model whose template has no thinking mode, after the instruction.
REASON_SUFFIX = (
    f"First reason step by step between {THINK_OPEN} and {THINK_CLOSE}, then give your answer."
)
MIN_CLASS = 4  # fewest examples a side (refused / complied) a probe is trained on
DEFAULT_TEST_SHARE = 0.3
DEFAULT_CV_FOLDS = 5  # folds inside the training split that choose the probe layer
DEFAULT_ALPHA = 0.1
DEFAULT_TOP_PERCENT = (1.5, 3.0, 10.0)
DEFAULT_RANDOM_DRAWS = 99  # random head sets per k: p resolves down to 0.01
DEFAULT_ANSWER_TOKENS = 8
DEFAULT_BINS = 10  # relative-position bins per segment (prompt, thinking, answer)
TRACE_ABLATIONS = ("scale", "zero", "mean")
TraceAblation = Literal["scale", "zero", "mean"]

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_RANDOM_DRAWS",
    "DEFAULT_TOP_PERCENT",
    "MIN_CLASS",
    "REASON_SUFFIX",
    "THINK_CLOSE",
    "THINK_OPEN",
    "CliffCurves",
    "CliffResult",
    "HeadTrace",
    "ProbeData",
    "ProbeLayer",
    "ProbeSweep",
    "RefusalProbe",
    "TooFewExamplesError",
    "TopKAblation",
    "Trace",
    "TraceTokens",
    "ablate_top_heads",
    "attack_success",
    "cliff_curves",
    "cliff_step",
    "generate_traces",
    "has_thinking_template",
    "judge_traces",
    "probe_data",
    "probe_examples",
    "probe_sweep",
    "read_traces",
    "tokenize_trace",
    "trace_heads",
    "write_judge_subset",
]


class TooFewExamplesError(RefusalCircuitsError):
    """Too few refused or complied examples to train a refusal probe."""


# -- traces ------------------------------------------------------------------------
@dataclass(frozen=True)
class Trace(Result):
    """One reasoning trace: the user prompt, the thinking text, the answer."""

    prompt: str
    thinking: str
    response: str


def has_thinking_template(tokenizer: Any) -> bool:
    """Whether the chat template has a thinking segment (it names the open marker)."""
    return THINK_OPEN in str(getattr(tokenizer, "chat_template", None) or "")


def read_traces(path: str | Path) -> list[Trace]:
    """Traces from a JSONL file, one ``{"prompt", "thinking", "response"}`` object a line.

    Raises:
        PromptFileError: unreadable file, a line that is not such an object, or no traces.
    """
    p = Path(path).expanduser()
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptFileError(f"{p}: cannot be read ({exc}); pass a UTF-8 JSONL file") from None
    traces = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            traces.append(Trace(str(row["prompt"]), str(row["thinking"]), str(row["response"])))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise PromptFileError(
                f"{p} line {i}: not a trace; write one JSON object a line with the keys "
                f'"prompt", "thinking" and "response"'
            ) from None
    if not traces:
        raise PromptFileError(f"{p} has no traces; write one JSON object a line")
    return traces


def generation_prompt(model: HookedModel, instruction: str) -> ChatPrompt:
    """The prompt a trace is generated from: the thinking template's own, else the
    instruction asked to reason between the markers first (:data:`REASON_SUFFIX`)."""
    if has_thinking_template(model.tokenizer):
        return format_chat(model.tokenizer, instruction)
    return format_chat(model.tokenizer, f"{instruction} {REASON_SUFFIX}")


def _split(text: str) -> tuple[str, str] | None:
    if THINK_CLOSE not in text:
        return None
    thinking, response = text.split(THINK_CLOSE, 1)
    return thinking.replace(THINK_OPEN, "").strip(), response.strip()


def generate_traces(
    model: HookedModel,
    instructions: Sequence[str],
    n_tokens: int,
    rows: Sequence[Sequence[Intervention]] | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[Trace | None]:
    """Greedy traces of the instructions (``None`` where no end-of-thinking marker came
    within ``n_tokens``), ``rows[i]`` applied at every step."""
    prompts = [generation_prompt(model, s) for s in instructions]
    ids = greedy_decode(
        model, prompts, n_tokens, [list(r) for r in rows] if rows else None, batch_size=batch_size
    )
    tok = model.tokenizer
    out: list[Trace | None] = []
    for prompt, row in zip(prompts, ids, strict=True):
        parts = _split(str(tok.decode(row, skip_special_tokens=True)))
        out.append(None if parts is None else Trace(prompt.instruction, *parts))
    return out


@dataclass(frozen=True)
class TraceTokens:
    """A trace's tokens and segments: prompt ``[0, think)``, thinking ``[think, close)``
    (the open marker and the reasoning), the close marker ``[close, answer)`` and the
    answer opening ``[answer, len)``. ``answer - 1`` is the last position before the
    answer (the close marker's last token): the cliff is measured there."""

    tokens: Int[Tensor, " pos"]
    think: int
    close: int
    answer: int

    @property
    def last_before_answer(self) -> int:
        return self.answer - 1


def tokenize_trace(
    tokenizer: Any, trace: Trace, *, answer_tokens: int = DEFAULT_ANSWER_TOKENS
) -> TraceTokens:
    """The trace as the model reads it: chat template (with thinking), open marker,
    thinking, close marker, the first ``answer_tokens`` answer tokens. Segments are
    tokenized apart so that their bounds are exact."""
    head = render(tokenizer, trace.prompt)
    if head.rstrip().endswith(THINK_OPEN):
        head = head.rstrip()[: -len(THINK_OPEN)]

    def ids(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    pieces = [ids(head), ids(THINK_OPEN), ids(trace.thinking), ids(THINK_CLOSE)]
    answer = ids(trace.response)[:answer_tokens]
    think = len(pieces[0])
    close = think + len(pieces[1]) + len(pieces[2])
    start = close + len(pieces[3])
    tokens = torch.tensor([t for p in pieces for t in p] + answer, dtype=torch.long)
    return TraceTokens(tokens=tokens, think=think, close=close, answer=start)


# -- probe ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ProbeData(Result):
    """Residuals at the position that predicts the answer, labelled by behaviour.

    ``residuals``: ``[example, layer, d_model]`` (layer ``l`` = block ``l``'s input, the
    last = the final residual); ``refused``: the label; ``kind``: ``refused_harmful``,
    ``complied_harmful`` or ``complied_harmless``. ``token_mean``/``token_m2``/
    ``token_count``: per example, each feature's mean and sum of squared deviations over
    every position of the prompt but the first, so the over-the-stream statistics
    (:meth:`stream_stats`) can be taken over any subset of prompts (a probe scored on
    held-out prompts is standardised by its training prompts alone). The probe is read at
    every token, so it standardises by the spread over tokens: a feature constant at the
    answer position but large elsewhere would blow up.
    """

    residuals: Float[np.ndarray, "example layer d_model"] = field(metadata={"group": "data"})
    refused: np.ndarray = field(metadata={"group": "data"})
    kind: list[str] = field(metadata={"group": "data"})
    token_mean: Float[np.ndarray, "example layer d_model"] = field(metadata={"group": "data"})
    token_m2: Float[np.ndarray, "example layer d_model"] = field(metadata={"group": "data"})
    token_count: Int[np.ndarray, " example"] = field(metadata={"group": "data"})

    def stream_stats(
        self, examples: Sequence[int] | np.ndarray | None = None
    ) -> tuple[Float[np.ndarray, "layer d_model"], Float[np.ndarray, "layer d_model"]]:
        """Mean and (unbiased) standard deviation over every token of ``examples`` (all by
        default) but each prompt's first, pooled exactly (Chan et al.); a zero spread is 1."""
        idx = np.arange(len(self.kind)) if examples is None else np.asarray(examples)
        n = self.token_count[idx].astype(np.float64)[:, None, None]
        total = float(n.sum())
        mean = (n * self.token_mean[idx]).sum(axis=0) / total
        m2 = self.token_m2[idx].sum(axis=0) + (n * (self.token_mean[idx] - mean) ** 2).sum(axis=0)
        scale = np.sqrt(m2 / max(total - 1.0, 1.0))
        return mean, np.where(scale > 0, scale, 1.0)

    @property
    def stream_mean(self) -> Float[np.ndarray, "layer d_model"]:
        return self.stream_stats()[0]

    @property
    def stream_scale(self) -> Float[np.ndarray, "layer d_model"]:
        return self.stream_stats()[1]

    @property
    def class_sizes(self) -> dict[str, int]:
        return {k: self.kind.count(k) for k in KINDS}

    def derived(self) -> dict[str, Any]:
        return {"class_sizes": self.class_sizes}


KINDS = ("refused_harmful", "complied_harmful", "complied_harmless")


def probe_examples(
    model: HookedModel,
    harmful: Sequence[str],
    harmless: Sequence[str],
    *,
    gen_tokens: int = 8,
    batch_size: int = DEFAULT_BATCH_SIZE,
    judge: Judge | None = None,
    min_class: int = MIN_CLASS,
) -> ProbeData:
    """The model's own behaviour as probe labels (answers without thinking).

    Each prompt is rendered with ``enable_thinking=False`` (ignored by templates without
    it), answered greedily and classified; refused harmful prompts are the positives,
    complied harmful and complied harmless ones the negatives (evasions and refused
    harmless prompts are left out).

    Raises:
        TooFewExamplesError: fewer than ``min_class`` refused or complied examples.
    """
    tok = model.tokenizer
    texts = [*harmful, *harmless]
    prompts = [format_chat(tok, t, template_kwargs={"enable_thinking": False}) for t in texts]
    ids = greedy_decode(model, prompts, gen_tokens, batch_size=batch_size)
    labels = classify([str(tok.decode(r, skip_special_tokens=True)).strip() for r in ids], judge)
    kinds: list[str | None] = []
    for i, label in enumerate(labels):
        side = "harmful" if i < len(harmful) else "harmless"
        kind = {"refusal": "refused", "answer": "complied"}.get(label)
        kinds.append(None if kind is None or f"{kind}_{side}" not in KINDS else f"{kind}_{side}")
    keep = [i for i, k in enumerate(kinds) if k is not None]
    kept = [str(kinds[i]) for i in keep]
    refused = np.array([k == "refused_harmful" for k in kept])
    n_pos, n_neg = int(refused.sum()), int((~refused).sum())
    if min(n_pos, n_neg) < min_class:
        sizes = {k: kept.count(k) for k in KINDS}
        raise TooFewExamplesError(
            f"the model refused {n_pos} and complied with {n_neg} of {len(texts)} prompts "
            f"({sizes}); a refusal probe needs at least {min_class} of each: pass more pairs "
            f"(--n), or harmful prompts it refuses and prompts it answers"
        )
    return probe_data(model, [prompts[i] for i in keep], kept, batch_size=batch_size)


def probe_data(
    model: HookedModel,
    prompts: Sequence[ChatPrompt],
    kinds: Sequence[str],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> ProbeData:
    """Residuals of labelled prompts (``kinds``: one of ``KINDS`` each) at ``t_post_inst``,
    with the over-the-stream statistics (:class:`ProbeData`)."""
    hooks = residual_hooks(model)
    _, caches = run_and_cache(
        model,
        list(prompts),
        names={str(j): h for j, h in enumerate(hooks)},
        batch_size=batch_size,
        to_cpu=True,
    )
    # [pos, layer, d_model] per prompt
    streams = [torch.stack([c[str(j)] for j in range(len(hooks))], dim=1).double() for c in caches]
    last = torch.stack([st[p.t_post_inst] for st, p in zip(streams, prompts, strict=True)])
    means = torch.stack([st[1:].mean(dim=0) for st in streams])
    m2 = torch.stack([((st[1:] - st[1:].mean(dim=0)) ** 2).sum(dim=0) for st in streams])
    return ProbeData(
        residuals=last.float().numpy(),
        refused=np.array([k == "refused_harmful" for k in kinds]),
        kind=list(kinds),
        token_mean=means.numpy(),
        token_m2=m2.numpy(),
        token_count=np.array([len(st) - 1 for st in streams]),
    )


@dataclass(frozen=True)
class RefusalProbe(Result):
    """A fitted probe: ``logit(x) = ((x - mean) / scale) @ coef + intercept``."""

    layer: int
    mean: Float[np.ndarray, " d_model"]
    scale: Float[np.ndarray, " d_model"]
    coef: Float[np.ndarray, " d_model"]
    intercept: float

    def logit(self, x: Float[np.ndarray, "n d_model"]) -> Float[np.ndarray, " n"]:
        """The probe's log-odds of refusal."""
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
        return np.asarray(z @ self.coef + self.intercept)

    def probability(self, x: Float[np.ndarray, "n d_model"]) -> Float[np.ndarray, " n"]:
        """The probe's refusal probability."""
        return np.asarray(1.0 / (1.0 + np.exp(-self.logit(x))))


def fit_probe(
    x: Float[np.ndarray, "n d_model"],
    y: np.ndarray,
    layer: int,
    mean: Float[np.ndarray, " d_model"],
    scale: Float[np.ndarray, " d_model"],
    *,
    c: float = 1.0,
) -> RefusalProbe:
    """scikit-learn's L2 logistic regression (``C=c``) on features standardised by
    ``mean`` and ``scale`` (:class:`ProbeData`'s over-the-stream statistics)."""
    from sklearn.linear_model import LogisticRegression

    mean, scale = np.asarray(mean, dtype=np.float64), np.asarray(scale, dtype=np.float64)
    reg = LogisticRegression(C=c, max_iter=10000, tol=1e-10).fit((np.asarray(x) - mean) / scale, y)
    return RefusalProbe(
        layer=layer,
        mean=mean,
        scale=scale,
        coef=np.asarray(reg.coef_[0], dtype=np.float64),
        intercept=float(reg.intercept_[0]),
    )


@dataclass(frozen=True)
class ProbeLayer(Result):
    """One layer's probe: ``cv_auc``/``cv_accuracy``, the mean over stratified folds of
    the training split (what the layer is chosen by); ``accuracy``/``auc``, fitted on the
    whole training split and scored on the held-out test split (never used to choose).
    Every probe is standardised by the statistics of the prompts it is fitted on."""

    layer: int
    accuracy: float
    auc: float
    n_train: int
    n_test: int
    cv_auc: float = float("nan")
    cv_accuracy: float = float("nan")


@dataclass(frozen=True)
class ProbeSweep(Result):
    """Cross-validated and held-out accuracy and AUC at every residual layer; ``layer``
    is the best cross-validated AUC on the training split (then accuracy, then depth)
    unless chosen, so its test numbers are not selection-biased; ``probe`` is refitted on
    all examples at ``layer``."""

    layers: list[ProbeLayer]
    layer: int
    probe: RefusalProbe
    class_sizes: dict[str, int]
    min_class: int
    test_share: float
    cv_folds: int = 0

    def derived(self) -> dict[str, Any]:
        # Without complied harmful prompts the probe may read harmfulness, not refusal.
        return {"controls_harmfulness": self.class_sizes.get("complied_harmful", 0) > 0}


def _score(
    data: ProbeData, layer: int, y: np.ndarray, fit: np.ndarray, held: np.ndarray
) -> tuple[float, float]:
    """Accuracy and AUC on ``held`` of a probe fitted (and standardised) on ``fit``."""
    mean, scale = data.stream_stats(fit)
    x = data.residuals[:, layer]
    probe = fit_probe(x[fit], y[fit], layer, mean[layer], scale[layer])
    scores = probe.logit(x[held])
    accuracy = float(np.mean((scores > 0) == y[held].astype(bool)))
    return accuracy, roc_auc(scores, y[held].astype(bool))


def probe_sweep(
    data: ProbeData,
    *,
    layer: int | None = None,
    test_share: float = DEFAULT_TEST_SHARE,
    seed: int = 0,
    min_class: int = MIN_CLASS,
    cv_folds: int = DEFAULT_CV_FOLDS,
) -> ProbeSweep:
    """Fit a probe at every layer; pick the layer by ``cv_folds``-fold stratified
    cross-validation inside the training split (fewer folds when a class is smaller),
    report it on the held-out test split (:class:`ProbeSweep`)."""
    from sklearn.model_selection import StratifiedKFold, train_test_split

    n_layers = data.residuals.shape[1]
    if layer is not None and not 0 <= layer < n_layers:
        raise ValueError(
            f"probe layer {layer} outside 0..{n_layers - 1} (the last is the final residual)"
        )
    if not 0.0 < test_share < 1.0:
        raise ValueError(f"test share {test_share}: pass a share strictly between 0 and 1")
    y = data.refused.astype(int)
    if min(int(y.sum()), int((1 - y).sum())) < min_class:
        raise TooFewExamplesError(
            f"{int(y.sum())} refused and {int((1 - y).sum())} complied examples; a probe "
            f"needs at least {min_class} of each: pass more prompts"
        )
    train, test = train_test_split(
        np.arange(len(y)), test_size=test_share, random_state=seed, stratify=y
    )
    folds = min(cv_folds, int(y[train].sum()), int((1 - y[train]).sum()))
    if folds < 2:
        raise TooFewExamplesError(
            f"the training split holds {int(y[train].sum())} refused and "
            f"{int((1 - y[train]).sum())} complied examples; choosing the layer needs at "
            f"least 2 of each: pass more prompts or a smaller test share"
        )
    splits = [
        (train[a], train[b])
        for a, b in StratifiedKFold(folds, shuffle=True, random_state=seed).split(train, y[train])
    ]
    rows = []
    for lay in range(n_layers):
        cv = np.array([_score(data, lay, y, a, b) for a, b in splits])
        accuracy, auc = _score(data, lay, y, train, test)
        rows.append(
            ProbeLayer(lay, accuracy, auc, len(train), len(test), float(np.mean(cv[:, 1])),
                       float(np.mean(cv[:, 0])))
        )  # fmt: skip
    if layer is None:
        layer = max(rows, key=lambda r: (r.cv_auc, r.cv_accuracy, r.layer)).layer
    mean, scale = data.stream_stats()
    full = fit_probe(data.residuals[:, layer], y, layer, mean[layer], scale[layer])
    return ProbeSweep(rows, layer, full, data.class_sizes, min_class, test_share, folds)


def _hook(model: HookedModel, layer: int) -> str:
    return residual_hooks(model, list(range(model.n_layers)))[layer]


def probe_positions(
    model: HookedModel,
    probe: RefusalProbe,
    tokens: Sequence[Tensor],
    rows: Sequence[Sequence[Intervention]] | None = None,
    *,
    at: str | Sequence[int] = "all",
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[np.ndarray]:
    """The probe's log-odds at positions ``at`` of every token sequence (under ``rows``)."""
    _, caches = run_and_cache(
        model,
        list(tokens),
        [list(r) for r in rows] if rows is not None else None,
        names={"r": _hook(model, probe.layer)},
        at=at,  # type: ignore[arg-type]
        batch_size=batch_size,
        to_cpu=True,
    )
    return [probe.logit(c["r"].float().numpy()) for c in caches]


# -- curves ------------------------------------------------------------------------
@dataclass(frozen=True)
class CliffCurves(Result):
    """The probe's refusal probability along traces, averaged two ways.

    ``offsets``: positions relative to the last position before the answer (0; the
    thinking segment and prompt before, the answer opening after); ``mean``/``ci_*``
    over the traces that have that position (``count``), never padded. ``bins``:
    relative position, ``[-1, 0)`` the prompt, ``[0, 1)`` the thinking segment *and the
    close marker* (positions ``think .. answer - 1``: open marker, reasoning, close marker,
    so the last position before the answer falls in the last bin of ``[0, 1)``),
    ``[1, 2)`` the answer opening; each trace's positions in a bin are averaged first.
    ``cliff_scores``: per trace, the maximum over the thinking segment minus the value
    at the last position before the answer (probability units).
    """

    offsets: Int[np.ndarray, " offset"]
    mean: Float[np.ndarray, " offset"]
    ci_low: Float[np.ndarray, " offset"]
    ci_high: Float[np.ndarray, " offset"]
    count: Int[np.ndarray, " offset"]
    bins: Float[np.ndarray, " bin"]
    bin_mean: Float[np.ndarray, " bin"]
    bin_low: Float[np.ndarray, " bin"]
    bin_high: Float[np.ndarray, " bin"]
    bin_count: Int[np.ndarray, " bin"]
    cliff_scores: Float[np.ndarray, " trace"]
    per_trace: list[list[float]] = field(metadata={"group": "per_trace"})
    segments: list[list[int]] = field(metadata={"group": "per_trace"})

    def derived(self) -> dict[str, Any]:
        return {"mean_cliff_score": float(np.mean(self.cliff_scores))}


def cliff_score(probability: Float[np.ndarray, " pos"], tt: TraceTokens) -> float:
    """Max over the thinking segment minus the value at the last position before the answer."""
    return float(np.max(probability[tt.think : tt.close]) - probability[tt.last_before_answer])


def _mean_band(values: np.ndarray, seed: int) -> tuple[np.ndarray, ...]:
    count = np.isfinite(values).sum(axis=0)
    with np.errstate(invalid="ignore"):
        mean = np.nansum(values, axis=0) / np.where(count > 0, count, np.nan)
    low, high = bootstrap_mean_ci(values, seed=seed) if len(values) else (mean, mean)
    return mean, low, high, count


def cliff_curves(
    probabilities: Sequence[np.ndarray],
    segments: Sequence[TraceTokens],
    *,
    n_bins: int = DEFAULT_BINS,
    seed: int = 0,
) -> CliffCurves:
    """Average per-position probe probabilities of traces (see :class:`CliffCurves`)."""
    if not probabilities:
        raise ValueError("no traces to average; pass at least one complete trace")
    before = max(tt.last_before_answer for tt in segments)
    after = max(len(tt.tokens) - tt.answer for tt in segments)
    offsets = np.arange(-before, after + 1)
    aligned = np.full((len(probabilities), len(offsets)), np.nan)
    binned = np.full((len(probabilities), 3 * n_bins), np.nan)
    for i, (p, tt) in enumerate(zip(probabilities, segments, strict=True)):
        aligned[i, before - tt.last_before_answer : before - tt.last_before_answer + len(p)] = p
        # [0, 1) runs to the answer, close marker included: the cliff is read at its end.
        for s, (lo, hi) in enumerate(((0, tt.think), (tt.think, tt.answer), (tt.answer, len(p)))):
            if hi <= lo:
                continue
            which = s * n_bins + np.minimum((np.arange(hi - lo) * n_bins) // (hi - lo), n_bins - 1)
            for b in np.unique(which):
                binned[i, b] = float(np.mean(p[lo:hi][which == b]))
    mean, low, high, count = _mean_band(aligned, seed)
    bmean, blow, bhigh, bcount = _mean_band(binned, seed)
    return CliffCurves(
        offsets=offsets,
        mean=mean,
        ci_low=low,
        ci_high=high,
        count=count,
        bins=(np.arange(3 * n_bins) + 0.5) / n_bins - 1.0,
        bin_mean=bmean,
        bin_low=blow,
        bin_high=bhigh,
        bin_count=bcount,
        cliff_scores=np.array(
            [cliff_score(p, tt) for p, tt in zip(probabilities, segments, strict=True)]
        ),
        per_trace=[[float(v) for v in p] for p in probabilities],
        segments=[[tt.think, tt.close, tt.answer] for tt in segments],
    )


def trace_probabilities(
    model: HookedModel,
    probe: RefusalProbe,
    segments: Sequence[TraceTokens],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[np.ndarray]:
    """The probe's refusal probability at every position of every trace."""
    logits = probe_positions(model, probe, [tt.tokens for tt in segments], batch_size=batch_size)
    return [1.0 / (1.0 + np.exp(-x)) for x in logits]


# -- head tracing --------------------------------------------------------------------
@dataclass(frozen=True)
class HeadTrace(Result):
    """Per head: the change of the probe's log-odds of refusal at the last position before
    the answer when the head's output is scaled by ``alpha`` (``ablation="scale"``),
    zeroed or mean-ablated; > 0 means the head suppresses refusal. Heads at or after
    the probe layer cannot move it (NaN)."""

    ablation: str
    alpha: float
    probe_layer: int
    stats: EffectStats
    ranked: list[HeadStat]

    def derived(self) -> dict[str, Any]:
        return {"top": [h.label for h in self.ranked[:5]]}


def _head_rows(
    layer: int, head: int, ablation: str, alpha: float, means: Tensor | None
) -> Intervention:
    if ablation == "scale":
        return Scale(layer, head, "all", alpha)
    if ablation == "mean" and means is not None:
        return Ablation(layer, head, "all", "mean", means[layer, head])
    return Ablation(layer, head, "all")


def head_means(
    model: HookedModel, tokens: Sequence[Tensor], *, batch_size: int = DEFAULT_BATCH_SIZE
) -> Float[Tensor, "layer head d_head"]:
    """Every head's output (``hook_z``) averaged over all positions of ``tokens``."""
    names = {str(layer): z_hook(layer) for layer in range(model.n_layers)}
    _, caches = run_and_cache(model, list(tokens), names=names, batch_size=batch_size, to_cpu=True)
    return torch.stack(
        [
            torch.cat([c[str(layer)].double() for c in caches]).mean(0)
            for layer in range(model.n_layers)
        ]
    ).float()


def trace_heads(
    model: HookedModel,
    probe: RefusalProbe,
    segments: Sequence[TraceTokens],
    *,
    ablation: TraceAblation = "scale",
    alpha: float = DEFAULT_ALPHA,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
) -> HeadTrace:
    """Each head's effect on the probe at the last position before the answer."""
    if ablation not in TRACE_ABLATIONS:
        raise ValueError(f"unknown ablation {ablation!r}; use one of {', '.join(TRACE_ABLATIONS)}")
    # The model is causal: nothing after the last position before the answer matters.
    tokens = [tt.tokens[: tt.answer] for tt in segments]
    means = head_means(model, tokens, batch_size=batch_size) if ablation == "mean" else None
    clean = np.array([x[0] for x in probe_positions(model, probe, tokens, at=[-1])])
    effects = np.full((len(tokens), model.n_layers, model.n_heads), np.nan)
    heads = [(a, b) for a in range(min(probe.layer, model.n_layers)) for b in range(model.n_heads)]
    for layer, head in tqdm(heads, desc="heads", unit="head", disable=not progress):
        iv = _head_rows(layer, head, ablation, alpha, means)
        got = probe_positions(
            model, probe, tokens, [[iv]] * len(tokens), at=[-1], batch_size=batch_size
        )
        effects[:, layer, head] = np.array([x[0] for x in got]) - clean
    stats = effect_stats(effects, seed=seed)
    ranked = stats.top(len(heads))
    return HeadTrace(ablation, alpha if ablation == "scale" else 0.0, probe.layer, stats, ranked)


# -- top-k% ablation and attack success ---------------------------------------------
def attack_success(
    model: HookedModel,
    harmful: Sequence[str],
    n_tokens: int,
    heads: Sequence[tuple[int, int]] = (),
    *,
    renormalise: bool = False,
    judge: Judge | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> tuple[float, int]:
    """Share of harmful prompts answered with thinking, ``heads`` zero-ablated at every
    step, and how many traces never closed (counted as not answered).

    ``renormalise``: the other heads of each touched layer are scaled by
    ``n_heads / (n_heads - k)`` (the paper's code; boosts them).
    """
    ivs: list[Intervention] = [Ablation(a, b, "all") for a, b in heads]
    if renormalise:
        for layer in sorted({a for a, _ in heads}):
            gone = {b for a, b in heads if a == layer}
            if len(gone) < model.n_heads:
                boost = model.n_heads / (model.n_heads - len(gone))
                ivs += [
                    Scale(layer, b, "all", boost) for b in range(model.n_heads) if b not in gone
                ]
    rows = [ivs] * len(harmful) if ivs else None
    traces = generate_traces(model, harmful, n_tokens, rows, batch_size=batch_size)
    done = [t for t in traces if t is not None]
    labels = classify([t.response for t in done], judge) if done else []
    return sum(1 for x in labels if x == "answer") / len(harmful), len(traces) - len(done)


@dataclass(frozen=True)
class TopKAblation(Result):
    """Attack success with the top ``percent``% refusal-suppressing heads ablated, and
    with as many random heads drawn from the same candidates (``random_attack_success``,
    one per draw).

    ``k_requested`` is ``percent`` of all heads; only the ``n_candidates`` heads before
    the probe layer are traced, so ``len(heads)`` is ``k_requested`` capped at
    ``n_candidates`` (``capped``). ``p_value``: the empirical one-sided p that the top
    heads raise attack success more than random candidates do,
    ``(1 + #{random >= top}) / (1 + draws)`` (NaN without draws; never below
    ``1 / (1 + draws)``)."""

    percent: float
    heads: list[list[int]]
    attack_success: float
    random_heads: list[list[list[int]]]
    random_attack_success: list[float]
    renormalised: bool
    k_requested: int
    n_candidates: int

    @property
    def p_value(self) -> float:
        rates = np.asarray(self.random_attack_success, dtype=np.float64)
        if not len(rates):
            return float("nan")
        return float((1 + np.sum(rates >= self.attack_success)) / (1 + len(rates)))

    def derived(self) -> dict[str, Any]:
        rates = self.random_attack_success
        return {
            "n_heads": len(self.heads),
            "capped": len(self.heads) < self.k_requested,
            "random_mean": float(np.mean(rates)) if rates else float("nan"),
            "p_value": self.p_value,
        }


def ablate_top_heads(
    model: HookedModel,
    trace: HeadTrace,
    harmful: Sequence[str],
    n_tokens: int,
    *,
    percents: Sequence[float] = DEFAULT_TOP_PERCENT,
    random_draws: int = DEFAULT_RANDOM_DRAWS,
    renormalise: bool = False,
    seed: int = 0,
    judge: Judge | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[TopKAblation]:
    """For each k in ``percents``: ablate the top k% of all heads (at least one, at most
    the traced candidates), measure attack success, and the same for ``random_draws``
    sets of as many heads drawn from the same candidates (:class:`TopKAblation`).

    Cost: ``len(percents) * (1 + random_draws)`` generations over ``harmful``.
    """
    total = model.n_layers * model.n_heads
    # The traced heads (those before the probe layer) are the only candidates: a random
    # head at or after it could not have been ranked, so drawing it would be unfair.
    candidates = [(h.layer, h.head) for h in trace.ranked if np.isfinite(h.value)]
    if not candidates:
        raise ValueError(
            f"no traced heads before probe layer {trace.probe_layer}: pick a later --layer"
        )
    rng = np.random.default_rng(seed)
    out = []
    for pct in percents:
        if not 0.0 < pct <= 100.0:
            raise ValueError(f"top {pct}% of heads: pass percentages in (0, 100]")
        wanted = max(1, round(pct / 100.0 * total))
        k = min(wanted, len(candidates))
        top = candidates[:k]
        asr, _ = attack_success(
            model, harmful, n_tokens, top, renormalise=renormalise, judge=judge,
            batch_size=batch_size,
        )  # fmt: skip
        draws, rates = [], []
        for _ in range(random_draws):
            pick = rng.choice(len(candidates), size=k, replace=False)
            heads = [candidates[int(i)] for i in pick]
            rate, _ = attack_success(
                model, harmful, n_tokens, heads, renormalise=renormalise, judge=judge,
                batch_size=batch_size,
            )  # fmt: skip
            draws.append([list(h) for h in heads])
            rates.append(rate)
        heads_top = [list(h) for h in top]
        out.append(
            TopKAblation(pct, heads_top, asr, draws, rates, renormalise, wanted, len(candidates))
        )
    return out


# -- Cliff-as-a-Judge ----------------------------------------------------------------
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


# -- the whole step ------------------------------------------------------------------
@dataclass(frozen=True)
class CliffResult(Result):
    """The ``cliff`` step's output (docs/science.md#refusal-cliff)."""

    model: str
    sweep: ProbeSweep
    curves: CliffCurves
    n_traces: int
    n_incomplete: int
    traces_source: str
    tracing: HeadTrace | None = None
    attack_success: float = float("nan")
    ablations: list[TopKAblation] = field(default_factory=list)
    traces: list[Trace] = field(default_factory=list, metadata={"group": "per_trace"})


def cliff_step(
    model: HookedModel,
    harmful: Sequence[str],
    harmless: Sequence[str],
    *,
    probe_harmful: Sequence[str] = (),
    traces: Sequence[Trace] | None = None,
    traces_source: str = "generated",
    layer: int | None = None,
    gen_tokens: int = 64,
    answer_tokens: int = DEFAULT_ANSWER_TOKENS,
    tracing: bool = True,
    ablation: TraceAblation = "scale",
    alpha: float = DEFAULT_ALPHA,
    percents: Sequence[float] = DEFAULT_TOP_PERCENT,
    random_draws: int = DEFAULT_RANDOM_DRAWS,
    renormalise: bool = False,
    min_class: int = MIN_CLASS,
    seed: int = 0,
    judge: Judge | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = False,
) -> CliffResult:
    """The whole measurement: probe sweep, curves, head tracing, top-k% ablations.

    The probe is trained on ``harmful`` + ``probe_harmful`` (e.g. jailbreak-framed
    prompts, the complied-harmful control) and ``harmless``; traces are ``traces`` or
    generated from ``harmful`` (``gen_tokens`` at most); attack success is measured on
    ``harmful`` with thinking.
    """
    data = probe_examples(
        model, [*harmful, *probe_harmful], harmless, batch_size=batch_size, judge=judge,
        min_class=min_class,
    )  # fmt: skip
    sweep = probe_sweep(data, layer=layer, seed=seed, min_class=min_class)
    made = (
        generate_traces(model, harmful, gen_tokens, batch_size=batch_size)
        if traces is None
        else list(traces)
    )
    complete = [t for t in made if t is not None]
    if not complete:
        raise TooFewExamplesError(
            f"none of {len(made)} traces has an end-of-thinking marker ({THINK_CLOSE}); raise "
            f"the trace length (--gen-tokens) or pass traces (--traces FILE)"
        )
    segments = [tokenize_trace(model.tokenizer, t, answer_tokens=answer_tokens) for t in complete]
    probs = trace_probabilities(model, sweep.probe, segments, batch_size=batch_size)
    curves = cliff_curves(probs, segments, seed=seed)
    head_trace = None
    ablations: list[TopKAblation] = []
    asr = float("nan")
    if tracing:
        head_trace = trace_heads(
            model, sweep.probe, segments, ablation=ablation, alpha=alpha, seed=seed,
            batch_size=batch_size, progress=progress,
        )  # fmt: skip
        asr, _ = attack_success(model, harmful, gen_tokens, judge=judge, batch_size=batch_size)
        ablations = ablate_top_heads(
            model, head_trace, harmful, gen_tokens, percents=percents, random_draws=random_draws,
            renormalise=renormalise, seed=seed, judge=judge, batch_size=batch_size,
        )  # fmt: skip
    return CliffResult(
        model=model.name,
        sweep=sweep,
        curves=curves,
        n_traces=len(complete),
        n_incomplete=len(made) - len(complete),
        traces_source=traces_source,
        tracing=head_trace,
        attack_success=asr,
        ablations=ablations,
        traces=complete,
    )
