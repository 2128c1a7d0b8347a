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
    from circuits.compare import compare_audits
    from circuits.export import save_figures, save_static
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
    "HeadFinding",
    "KeywordJudge",
    "MetricCheck",
    "ModelChecks",
    "PairBehaviour",
    "RefusalCalibration",
    "build_organism",
    "by_category",
    "calibrate_refusal",
    "calibrated_decode",
    "calibration_curves",
    "calibration_roc",
    "cascade_chart",
    "check_model",
    "classify",
    "compare_audits",
    "compare_figures",
    "display_name",
    "dla_heatmap",
    "dla_side_by_side",
    "dla_top_bar",
    "dose_response_chart",
    "generate_pairs",
    "head_maps",
    "load_ground_truth",
    "necessity_heatmap",
    "organism_dir",
    "patching_figure",
    "patching_heatmap",
    "ranking_comparison",
    "save_figures",
    "save_static",
    "shuffle_labels",
    "write_report",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals(), __all__)
