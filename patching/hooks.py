"""Every TransformerLens hook the toolkit runs is built here.

A TransformerLens hook is a pair ``(hook_name, fn(tensor, hook) -> tensor)``: the
bridge calls ``fn`` with the activation at ``hook_name`` and carries on with
whatever it returns. The toolkit needs three kinds:

- :func:`intervention_hooks`: apply each batch row's own list of
  :mod:`patching.interventions` objects (one row may zero a head, the next scale
  another, a third add a steering vector) to that row only. Positions are
  resolved per row against the row's own length and labels, and shifted by the
  row's left padding (:func:`patching.batching.left_padded`) and by a cached
  prefix the pass does not recompute (:mod:`patching.rows`).
- :func:`capture_hooks`: keep (detached) activations, optionally only at chosen
  positions of each row so memory does not grow with the prompt.
- :func:`readout_hooks`: compute the last block's MLP and the unembedding only
  at the positions something reads.
- :func:`padding_hooks`: keep left-padded passes finite in float64.

Two TransformerLens facts shape the code (``docs/dependencies.md``): inside a
hook, ``hook.name`` is the canonical alias (``blocks.L.attn.o.hook_in``), not the
name it was registered under, so each hook binds the name it serves in a closure;
and hooks registered on one point run in registration order, so interventions
are listed before captures when both are wanted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor

from patching.interventions import HeadIntervention, Intervention, resolve_positions, z_hook

Hook = tuple[str | Callable[..., Any], Callable[..., Any]]
Rows = Sequence[Sequence[Intervention]]

__all__ = [
    "Hook",
    "Rows",
    "capture_hooks",
    "intervention_hooks",
    "padding_hooks",
    "readout_hooks",
    "z_hook",
]


def intervention_hooks(
    rows: Rows,
    n_pos: int | Sequence[int],
    labels: Mapping[str, int] | Sequence[Mapping[str, int]],
    *,
    pads: Sequence[int] | None = None,
    start: int = 0,
) -> list[Hook]:
    """Hooks that apply ``rows[r]`` to batch row ``r`` only.

    Args:
        rows: each batch row's interventions (an empty list leaves the row clean).
        n_pos: the length positions are resolved against: one for every row, or one
            per row (negative indices and ``"all"`` count within the row's own tokens).
        labels: named positions (``t_inst``, ``t_post_inst``, ``last``), shared or per row.
        pads: each row's left padding (its real position ``p`` is column ``pad + p``).
        start: the first position the pass computes (a cached prefix holds the
            earlier ones); interventions before it are refused.
    """
    batch = len(rows)
    lengths = [n_pos] * batch if isinstance(n_pos, int) else list(n_pos)
    row_labels = [labels] * batch if isinstance(labels, Mapping) else list(labels)
    offsets = [-start] * batch if pads is None else [pad - start for pad in pads]
    by_hook: dict[str, list[tuple[int, Intervention, list[int], list[int]]]] = {}
    for r, row in enumerate(rows):
        for iv in row:
            absolute = resolve_positions(iv.positions, lengths[r], row_labels[r])
            if absolute and absolute[0] < start:
                raise ValueError(
                    f"an intervention patches position {absolute[0]}, before the cached prefix "
                    f"ends at {start}; run the clean run with start <= {absolute[0]}"
                )
            columns = [p + offsets[r] for p in absolute]
            by_hook.setdefault(iv.hook, []).append((r, iv, absolute, columns))

    def make(items: list[tuple[int, Intervention, list[int], list[int]]]) -> Callable[..., Tensor]:
        # Bound per hook name: inside a hook, hook.name is the canonical alias, not hook_z.
        def hook(x: Tensor, hook: Any) -> Tensor:
            x = x.clone()
            for r, iv, absolute, columns in items:
                if isinstance(iv, HeadIntervention):
                    x[r, columns, iv.head] = iv.apply(x[r, columns, iv.head], absolute)
                else:
                    x[r, columns] = iv.apply(x[r, columns], absolute)
            return x

        return hook

    return [(name, make(items)) for name, items in by_hook.items()]


def capture_hooks(
    names: Mapping[str, str],
    store: dict[str, Tensor],
    select: Callable[[Tensor], Tensor] | None = None,
) -> list[Hook]:
    """Hooks that keep ``store[key]`` = the detached activation at ``names[key]``.

    ``select`` picks what to keep (e.g. one position per row); everything by default.
    """

    def keep(key: str) -> Callable[..., Tensor]:
        def hook(x: Tensor, hook: Any) -> Tensor:
            kept = x.detach()
            store[key] = kept if select is None else select(kept)
            return x

        return hook

    return [(name, keep(key)) for key, name in names.items()]


def readout_hooks(
    n_layers: int, readout: Sequence[int], *, unembed: bool = True, mlp: bool = True
) -> list[Hook]:
    """Hooks that run the last block's MLP (and the unembedding) at ``readout`` only.

    Nothing after the last block reads its other positions, so their MLP output is
    never used: the MLP sees the read-out rows of its input and its output is
    scattered back into zeros (the residual addition needs the full shape). On the
    benchmark model this is 2/3 of the last block. ``readout`` indexes the positions
    the pass computes; with ``unembed`` the model's logits are those positions' only.
    Leave ``mlp`` off when anything reads or changes the last block's other positions
    (a capture of its output, a steering vector there).
    """
    last, keep = n_layers - 1, list(readout)
    n_pos: list[int] = []

    def take(x: Tensor, hook: Any) -> Tensor:
        n_pos[:] = [x.shape[1]]
        return x[:, keep]

    def scatter(x: Tensor, hook: Any) -> Tensor:
        full = x.new_zeros(x.shape[0], n_pos[0], *x.shape[2:])
        full[:, keep] = x
        return full

    def take_read(x: Tensor, hook: Any) -> Tensor:
        return x[:, keep]

    hooks: list[Hook] = []
    if mlp:
        hooks += [(f"blocks.{last}.ln2.hook_in", take), (f"blocks.{last}.mlp.hook_out", scatter)]
    return [*hooks, ("unembed.hook_in", take_read)] if unembed else hooks


def padding_hooks(n_layers: int) -> list[Hook]:
    """Hooks that keep left padding finite: a padding query's attention pattern set to 0.

    A padding position attends to nothing (every key before it is padding, masked),
    and in float64 the model's eager attention gives such a fully masked row NaN
    weights; its NaN output then reaches real rows as ``0 * NaN`` through the values.
    Real rows' patterns are finite, so they are unchanged (float32 masks with a large
    finite number and never makes NaN: there this is the identity).
    """

    def finite(pattern: Tensor, hook: Any) -> Tensor:
        return pattern.nan_to_num(nan=0.0)

    return [(f"blocks.{layer}.attn.hook_pattern", finite) for layer in range(n_layers)]
