"""The refusal probe: logistic regression on standardised residuals, fitted and scored at every
layer (the sweep), and read at any position of token sequences (docs/science.md#refusal-cliff).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from jaxtyping import Float
from torch import Tensor

from attribution.classification import roc_auc
from attribution.result import Result
from circuits.cliff.examples import MIN_CLASS, ProbeData, TooFewExamplesError
from patching.executor import DEFAULT_BATCH_SIZE, run_and_cache
from patching.interventions import Intervention
from patching.model import HookedModel
from patching.residuals import residual_hooks

DEFAULT_TEST_SHARE = 0.3
DEFAULT_CV_FOLDS = 5  # folds inside the training split that choose the probe layer


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
    layer_given: bool = False  # the caller fixed ``layer``: nothing was chosen

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
    given = layer is not None
    if layer is None:
        layer = max(rows, key=lambda r: (r.cv_auc, r.cv_accuracy, r.layer)).layer
    mean, scale = data.stream_stats()
    full = fit_probe(data.residuals[:, layer], y, layer, mean[layer], scale[layer])
    return ProbeSweep(
        rows, layer, full, data.class_sizes, min_class, test_share, folds, layer_given=given
    )


def probe_hook(model: HookedModel, layer: int) -> str:
    """The hook a probe at ``layer`` reads (block ``layer``'s input; the final residual last)."""
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
        names={"r": probe_hook(model, probe.layer)},
        at=at,  # type: ignore[arg-type]
        batch_size=batch_size,
        to_cpu=True,
    )
    return [probe.logit(c["r"].float().numpy()) for c in caches]
