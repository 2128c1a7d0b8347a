"""Numbers per head: refusal metrics, direct logit attribution, interchange, statistics.

:func:`direct_logit_attribution` gives a :class:`DLAResult`, :func:`interchange_test`
a :class:`PatchingResult`; both report per-head :class:`HeadStat` records with
bootstrap intervals, sign-flip p and Benjamini-Hochberg q (one definition of each
statistic, :mod:`attribution.statistics`). Results serialise through :class:`Result`.
``docs/science.md`` defines every number. Names are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from patching.lazy import lazy_exports

if TYPE_CHECKING:
    from attribution.classification import (
        ClassifierMetrics,
        RocCurve,
        best_threshold,
        classifier_metrics,
        roc_auc,
        roc_curve,
    )
    from attribution.directions import (
        DEFAULT_MIN_PER_CLUSTER,
        Directions,
        extract_directions,
    )
    from attribution.dla import DLAResult, direct_logit_attribution
    from attribution.interchange import interchange_test
    from attribution.interchange_result import PatchingResult
    from attribution.latent_guard import LatentGuard
    from attribution.metrics import (
        METRICS,
        LogitDiffMetric,
        NLLMetric,
        RefusalScoreMetric,
        refusal_direction,
        refusal_logit_diff,
        refusal_probability,
        refusal_score,
        teacher_forced_nll,
    )
    from attribution.refusal_tokens import REFUSAL_WORDS, dedicated_token_id, refusal_token_ids
    from attribution.result import Result
    from attribution.statistics import (
        DEFAULT_N_BOOT,
        EffectStats,
        HeadStat,
        RatioEstimate,
        benjamini_hochberg,
        bootstrap_mean_ci,
        bootstrap_ratio_ci,
        check_enough_pairs,
        effect_stats,
        min_attainable_p,
        pooled_scale,
        ratio_of_means,
        sign_flip_test,
    )

# Each public name and the module it lives in (imported on first use).
_EXPORTS: dict[str, str] = {
    "Directions": "attribution.directions",
    "extract_directions": "attribution.directions",
    "DEFAULT_MIN_PER_CLUSTER": "attribution.directions",
    "REFUSAL_WORDS": "attribution.refusal_tokens",
    "refusal_token_ids": "attribution.refusal_tokens",
    "dedicated_token_id": "attribution.refusal_tokens",
    "METRICS": "attribution.metrics",
    "LogitDiffMetric": "attribution.metrics",
    "NLLMetric": "attribution.metrics",
    "RefusalScoreMetric": "attribution.metrics",
    "refusal_direction": "attribution.metrics",
    "refusal_logit_diff": "attribution.metrics",
    "refusal_probability": "attribution.metrics",
    "refusal_score": "attribution.metrics",
    "teacher_forced_nll": "attribution.metrics",
    "DLAResult": "attribution.dla",
    "direct_logit_attribution": "attribution.dla",
    "interchange_test": "attribution.interchange",
    "PatchingResult": "attribution.interchange_result",
    "DEFAULT_N_BOOT": "attribution.statistics",
    "EffectStats": "attribution.statistics",
    "HeadStat": "attribution.statistics",
    "RatioEstimate": "attribution.statistics",
    "ratio_of_means": "attribution.statistics",
    "benjamini_hochberg": "attribution.statistics",
    "bootstrap_mean_ci": "attribution.statistics",
    "bootstrap_ratio_ci": "attribution.statistics",
    "check_enough_pairs": "attribution.statistics",
    "effect_stats": "attribution.statistics",
    "min_attainable_p": "attribution.statistics",
    "pooled_scale": "attribution.statistics",
    "sign_flip_test": "attribution.statistics",
    "Result": "attribution.result",
    "ClassifierMetrics": "attribution.classification",
    "RocCurve": "attribution.classification",
    "best_threshold": "attribution.classification",
    "classifier_metrics": "attribution.classification",
    "roc_auc": "attribution.classification",
    "roc_curve": "attribution.classification",
    "LatentGuard": "attribution.latent_guard",
}

__all__ = [
    "DEFAULT_MIN_PER_CLUSTER",
    "DEFAULT_N_BOOT",
    "METRICS",
    "REFUSAL_WORDS",
    "ClassifierMetrics",
    "DLAResult",
    "Directions",
    "EffectStats",
    "HeadStat",
    "LatentGuard",
    "LogitDiffMetric",
    "NLLMetric",
    "PatchingResult",
    "RatioEstimate",
    "RefusalScoreMetric",
    "Result",
    "RocCurve",
    "benjamini_hochberg",
    "best_threshold",
    "bootstrap_mean_ci",
    "bootstrap_ratio_ci",
    "check_enough_pairs",
    "classifier_metrics",
    "dedicated_token_id",
    "direct_logit_attribution",
    "effect_stats",
    "extract_directions",
    "interchange_test",
    "min_attainable_p",
    "pooled_scale",
    "ratio_of_means",
    "refusal_direction",
    "refusal_logit_diff",
    "refusal_probability",
    "refusal_score",
    "refusal_token_ids",
    "roc_auc",
    "roc_curve",
    "sign_flip_test",
    "teacher_forced_nll",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals(), __all__)
