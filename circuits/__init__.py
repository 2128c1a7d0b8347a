"""Findings: the audit, its roles and methods, views, comparison across models.

The audit function is :func:`circuits.audit.audit` (``circuits.audit`` is its
module, so it is not re-exported under the same name); its settings and result
are :class:`AuditConfig` and :class:`AuditResult`. :func:`compare_audits` puts audits
of several models side by side, :func:`check_model` measures the two identities
every number rests on, and the view functions return plotly figures of result
objects. ``docs/science.md`` defines the roles and methods. Names are imported on
first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from patching.lazy import lazy_exports

if TYPE_CHECKING:
    from circuits.audit import AuditConfig, AuditResult, HeadFinding, shuffle_labels
    from circuits.audit.views import (
        cascade_chart,
        compare_figures,
        dose_response_chart,
        head_maps,
        necessity_heatmap,
        ranking_comparison,
    )
    from circuits.behaviour import KeywordJudge, PairBehaviour, classify
    from circuits.calibration import (
        CategoryCalibration,
        RefusalCalibration,
        by_category,
        calibrate_refusal,
        calibrated_decode,
    )
    from circuits.calibration_views import calibration_curves, calibration_roc
    from circuits.checks import ModelChecks, check_model
    from circuits.cipher import CipherContrast, GateNecessity, Injection, cipher_contrast
    from circuits.cipher_views import cipher_figures, write_cipher_outputs
    from circuits.cliff import CliffResult, cliff_step, judge_traces, read_traces
    from circuits.cliff_views import cliff_figures, write_cliff_outputs
    from circuits.compare import compare_audits
    from circuits.direction_views import (
        causal_figure,
        cosine_norm_figure,
        jailbreak_scatter,
        steering_figure,
    )
    from circuits.directions import (
        Inversion,
        JailbreakShift,
        SteeringResult,
        four_cluster_directions,
        jailbreak_shift,
        steer,
    )
    from circuits.export import save_figures, save_static
    from circuits.guard import (
        GroupMetrics,
        GuardEvaluation,
        LabelledPrompt,
        cross_fit_guard,
        evaluate_guard,
        labelled_pairs,
        read_labelled,
    )
    from circuits.guard_views import guard_figures, write_guard_outputs
    from circuits.metric_check import MetricCheck
    from circuits.organism import build_organism, generate_pairs, load_ground_truth, organism_dir
    from circuits.patching_views import patching_figure, patching_heatmap
    from circuits.views import (
        display_name,
        dla_heatmap,
        dla_side_by_side,
        dla_top_bar,
        write_report,
    )

# Each public name and the module it lives in (imported on first use).
_EXPORTS: dict[str, str] = {
    "causal_figure": "circuits.direction_views",
    "cosine_norm_figure": "circuits.direction_views",
    "jailbreak_scatter": "circuits.direction_views",
    "steering_figure": "circuits.direction_views",
    "Inversion": "circuits.directions",
    "JailbreakShift": "circuits.directions",
    "SteeringResult": "circuits.directions",
    "four_cluster_directions": "circuits.directions",
    "jailbreak_shift": "circuits.directions",
    "steer": "circuits.directions",
    "CipherContrast": "circuits.cipher",
    "GateNecessity": "circuits.cipher",
    "Injection": "circuits.cipher",
    "cipher_contrast": "circuits.cipher",
    "cipher_figures": "circuits.cipher_views",
    "write_cipher_outputs": "circuits.cipher_views",
    "CliffResult": "circuits.cliff",
    "cliff_step": "circuits.cliff",
    "judge_traces": "circuits.cliff",
    "read_traces": "circuits.cliff",
    "cliff_figures": "circuits.cliff_views",
    "write_cliff_outputs": "circuits.cliff_views",
    "GroupMetrics": "circuits.guard",
    "GuardEvaluation": "circuits.guard",
    "LabelledPrompt": "circuits.guard",
    "cross_fit_guard": "circuits.guard",
    "evaluate_guard": "circuits.guard",
    "labelled_pairs": "circuits.guard",
    "read_labelled": "circuits.guard",
    "guard_figures": "circuits.guard_views",
    "write_guard_outputs": "circuits.guard_views",
    "AuditConfig": "circuits.audit",
    "AuditResult": "circuits.audit",
    "HeadFinding": "circuits.audit",
    "shuffle_labels": "circuits.audit",
    "compare_audits": "circuits.compare",
    "ModelChecks": "circuits.checks",
    "check_model": "circuits.checks",
    "dla_heatmap": "circuits.views",
    "dla_side_by_side": "circuits.views",
    "dla_top_bar": "circuits.views",
    "write_report": "circuits.views",
    "display_name": "circuits.views",
    "head_maps": "circuits.audit.views",
    "PairBehaviour": "circuits.behaviour",
    "MetricCheck": "circuits.metric_check",
    "patching_figure": "circuits.patching_views",
    "patching_heatmap": "circuits.patching_views",
    "cascade_chart": "circuits.audit.views",
    "compare_figures": "circuits.audit.views",
    "dose_response_chart": "circuits.audit.views",
    "necessity_heatmap": "circuits.audit.views",
    "ranking_comparison": "circuits.audit.views",
    "save_figures": "circuits.export",
    "save_static": "circuits.export",
    "KeywordJudge": "circuits.behaviour",
    "CategoryCalibration": "circuits.calibration",
    "RefusalCalibration": "circuits.calibration",
    "by_category": "circuits.calibration",
    "calibrate_refusal": "circuits.calibration",
    "calibrated_decode": "circuits.calibration",
    "calibration_curves": "circuits.calibration_views",
    "calibration_roc": "circuits.calibration_views",
    "classify": "circuits.behaviour",
    "build_organism": "circuits.organism",
    "generate_pairs": "circuits.organism",
    "load_ground_truth": "circuits.organism",
    "organism_dir": "circuits.organism",
}

__all__ = [
    "AuditConfig",
    "AuditResult",
    "CategoryCalibration",
    "CipherContrast",
    "CliffResult",
    "GateNecessity",
    "GroupMetrics",
    "GuardEvaluation",
    "HeadFinding",
    "Injection",
    "Inversion",
    "JailbreakShift",
    "KeywordJudge",
    "LabelledPrompt",
    "MetricCheck",
    "ModelChecks",
    "PairBehaviour",
    "RefusalCalibration",
    "SteeringResult",
    "build_organism",
    "by_category",
    "calibrate_refusal",
    "calibrated_decode",
    "calibration_curves",
    "calibration_roc",
    "cascade_chart",
    "causal_figure",
    "check_model",
    "cipher_contrast",
    "cipher_figures",
    "classify",
    "cliff_figures",
    "cliff_step",
    "compare_audits",
    "compare_figures",
    "cosine_norm_figure",
    "cross_fit_guard",
    "display_name",
    "dla_heatmap",
    "dla_side_by_side",
    "dla_top_bar",
    "dose_response_chart",
    "evaluate_guard",
    "four_cluster_directions",
    "generate_pairs",
    "guard_figures",
    "head_maps",
    "jailbreak_scatter",
    "jailbreak_shift",
    "judge_traces",
    "labelled_pairs",
    "load_ground_truth",
    "necessity_heatmap",
    "organism_dir",
    "patching_figure",
    "patching_heatmap",
    "ranking_comparison",
    "read_labelled",
    "read_traces",
    "save_figures",
    "save_static",
    "shuffle_labels",
    "steer",
    "steering_figure",
    "write_cipher_outputs",
    "write_cliff_outputs",
    "write_guard_outputs",
    "write_report",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals(), __all__)
