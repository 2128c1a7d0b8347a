"""The refusal cliff: a refusal probe read along reasoning traces, and the heads that cause it.

"Refusal Falls off a Cliff" finds that reasoning models keep a strong refusal intention
through their thinking and lose it in the last tokens before the answer. This package
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
- :func:`cliff_step`: all of it, as the ``cliff`` command and the audit's ``cliff`` step run it.

Modules: :mod:`.traces` (read, generate, tokenize), :mod:`.examples` (the probe's labelled
residuals), :mod:`.probe` (fit, sweep, read along tokens), :mod:`.curves`, :mod:`.tracing`,
:mod:`.ablation`, :mod:`.judge`, :mod:`.step`; every name is re-exported here and imported from
here. The top-k% ablation calls the trace generator and the attack success through this package,
so a replacement set here (a stub in a test) takes effect there as in the single module it was.
"""

from __future__ import annotations

# "X as X": names beside __all__ that callers (the tests) read off the single module this
# package was; roc_auc and classify are imported ones.
from attribution.classification import roc_auc as roc_auc
from circuits.behaviour import classify as classify
from circuits.cliff.ablation import (
    DEFAULT_RANDOM_DRAWS,
    DEFAULT_TOP_PERCENT,
    TopKAblation,
    ablate_top_heads,
    attack_success,
)
from circuits.cliff.curves import CliffCurves, cliff_curves
from circuits.cliff.curves import trace_probabilities as trace_probabilities
from circuits.cliff.examples import (
    MIN_CLASS,
    ProbeData,
    TooFewExamplesError,
    probe_data,
    probe_examples,
)
from circuits.cliff.judge import judge_traces, write_judge_subset
from circuits.cliff.probe import ProbeLayer, ProbeSweep, RefusalProbe, probe_sweep
from circuits.cliff.probe import fit_probe as fit_probe
from circuits.cliff.probe import probe_positions as probe_positions
from circuits.cliff.step import CliffResult, cliff_step
from circuits.cliff.traces import (
    REASON_SUFFIX,
    THINK_CLOSE,
    THINK_OPEN,
    Trace,
    TraceTokens,
    generate_traces,
    has_thinking_template,
    read_traces,
    tokenize_trace,
)
from circuits.cliff.tracing import DEFAULT_ALPHA, HeadTrace, trace_heads
from circuits.cliff.tracing import TRACE_ABLATIONS as TRACE_ABLATIONS

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
