"""The audit: one pipeline from a model and prompt pairs to its refusal circuit.

``audit(model, pairs, config)`` runs a list of steps in order, each storing what
it computes as it finishes (:mod:`circuits.store`), so an interrupted audit
resumes where it stopped and a changed setting recomputes only the steps that
read it. Every stored step is also keyed on the model's fingerprint
(:mod:`patching.fingerprint`: weights, config, tokenizer, chat template, dtype,
device kind, toolkit version), so nothing computed with other weights or another
dtype is reused; ``result.steps`` lists what was computed, reused and set aside,
and its ``notes`` say it in words. The steps (:func:`pipeline.steps_for`):

1. **interchange** necessity and sufficiency of every head over the pairs
   (:func:`attribution.interchange.interchange_test`), restated on the
   pooled scale (:mod:`attribution.statistics`) with sign-flip p and BH q;
2. **dla**: direct logit attribution of every head
   (:func:`attribution.dla.direct_logit_attribution`);
3. **gate**: the best significant, DLA-dark candidate of the depth band whose
   **knockout** lowers later heads' DLA (tried in order of necessity), and its
   band; the **amplifiers** come out of the same knockout;
4. **cascade**: the gate's knockout against random band heads' knockouts
   (skipped without a gate);
5. **dose_response** of the gate's output scale (skipped without a gate);
6. **negative_heads** by down-scaling on harmful and jailbreak-framed prompts,
   and the attack success rate with the top ones ablated
   (if ``config.negative_heads``);
7. **ablation_vs_interchange**: per-head ablation ranked beside necessity
   (if ``config.ablation_compare``).

Optional steps: **metric_check** (the top heads under the other interchange
metric), **cipher** (``config.cipher``: cipher contrast, :mod:`circuits.cipher`) and
**cliff** (``config.cliff``: the refusal cliff, :mod:`circuits.cliff`, listed right
after the behaviour step so that a model it cannot probe fails early; its heads are
set beside the gate, amplifiers and negative heads in
:meth:`AuditResult.cliff_heads`).

The result (:class:`AuditResult`) serialises to ``audit.json``; with an output
directory the audit also writes ``report.html`` and, where a renderer exists,
PNG/SVG figures (:mod:`circuits.audit.views`).

Layout: :mod:`.config` (:class:`AuditConfig`), :mod:`.result`
(:class:`AuditResult`, :class:`HeadFinding`), :mod:`.steps` (one function per
step), :mod:`.context` (the shared :class:`~circuits.audit.context.AuditContext`),
:mod:`.pipeline` (the list, :func:`audit`), :mod:`.views` (figures, report).

**Adding a method** = writing a step and listing it:

1. in :mod:`.steps`, a function ``my_method(ctx: AuditContext) -> None`` that
   reads the inputs and earlier findings from ``ctx`` (``ctx.need(ctx.gate...)``),
   computes through ``ctx.store.step("my_method", {**ctx.base, <settings it
   reads>}, compute)`` so it resumes, and sets its finding on a new field of
   :class:`~circuits.audit.context.AuditContext`;
2. in :func:`.pipeline.steps_for`, a ``Step("my_method", "what progress shows",
   steps.my_method)`` at its place in the order (inside ``if config.<flag>:``
   if optional; ``skip=`` for a run-time reason to skip, e.g. ``steps.no_gate``);
3. its settings in :class:`AuditConfig`, its finding as a field of
   :class:`AuditResult` (``to_dict``/``from_dict``) filled in
   :func:`.pipeline.result_of`, and a view in :mod:`.views` if it has a figure.
"""

from circuits.audit.config import AuditConfig
from circuits.audit.pipeline import audit, shuffle_labels
from circuits.audit.result import AuditResult, CliffHead, HeadFinding

__all__ = ["AuditConfig", "AuditResult", "CliffHead", "HeadFinding", "audit", "shuffle_labels"]
