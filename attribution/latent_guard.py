"""Latent Guard: the model's own harmfulness belief, read as a classifier.

The residual stream at ``t_inst`` (the last token of the user's instruction)
encodes whether the request is harmful, whatever the model then does about it
("LLMs Encode Harmfulness and Refusal Separately"). Latent Guard reads that
belief: with ``C_harmful`` and ``C_harmless`` the mean residual of each class of
fitting prompts at residual layer ``l``,

    score(h) = mean over l in layers of  cos(h_l - m_l, C_harmful_l - m_l)
                                        - cos(h_l - m_l, C_harmless_l - m_l)

and a prompt is called harmful when ``score >= threshold``. The threshold is 0
(closer in angle to the harmful centroid; the paper's rule) or fitted on a
validation split held out from the centroids (:func:`~attribution.classification.best_threshold`).

**Centring** (``m``). By default ``m = 0``: the paper's uncentred score, so
accuracies compare with the published ones and no statistic of the fitting set
other than the two centroids enters. With ``center=True``, ``m_l`` is the
midpoint of the two centroids: the score becomes ``2 cos(h_l - m_l, d_l)`` with
``d_l = C_harmful_l - C_harmless_l``, a difference-of-means linear classifier
whose threshold-0 boundary is the hyperplane halfway between the centroids. It
removes the large component every prompt shares (which makes both uncentred
cosines close to 1 and their difference small), at the price of depending on the
balance of the fitting set's topics. ``docs/science.md#latent-guard`` compares
the two on the organism and a real model.

Layers index the residual stream as :func:`patching.residuals.residual_stream`
does: ``l`` is block ``l``'s input (0 the embeddings), ``n_layers`` the final
residual. The default is every residual after the embeddings.

A guard is saved as two small files, ``NAME.safetensors`` (the centroids) and
``NAME.json`` (layers, position, centring, threshold, counts and the model's
shape and fingerprint); no pickle. :meth:`LatentGuard.load` refuses a model of
another shape, or whose weights, config, tokenizer or chat template differ from
the one it was fitted on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from jaxtyping import Bool, Float
from safetensors.torch import load_file, save_file
from torch import Tensor

from attribution.classification import best_threshold
from patching.chat import ChatPrompt, format_chat
from patching.errors import ModelMismatchError, OptionError, ResultFileError, TooFewPairsError
from patching.fingerprint import differences, fingerprint
from patching.model import HookedModel

__all__ = [
    "GUARD_FORMAT",
    "MIN_PER_CLASS",
    "POSITIONS",
    "THRESHOLD_RULES",
    "LatentGuard",
    "check_class_sizes",
    "check_layers",
    "default_layers",
    "guard_scores",
    "held_out",
    "layer_scores",
    "residuals",
    "residuals_at",
]

GUARD_FORMAT = 1
#: Fewest fitting prompts per class: a centroid of one prompt is that prompt.
MIN_PER_CLASS = 2
#: ``"zero"``: threshold 0; ``"fit"``: fitted on a held-out validation split.
THRESHOLD_RULES = ("zero", "fit")
#: ``"t_inst"``: the harmfulness belief (the guard); ``"t_post_inst"``: the refusal read.
POSITIONS = ("t_inst", "t_post_inst")
# What a guard's numbers depend on; dtype, device and library versions are left out
# (a guard fitted on a GPU serves the same weights on a CPU).
_FINGERPRINT_KEYS = ("weights", "config", "tokenizer", "chat_template")

Prompts = Sequence[str | ChatPrompt]


def default_layers(n_layers: int) -> list[int]:
    """Every residual after the embeddings: block inputs ``1..n_layers-1`` and the final one."""
    return list(range(1, n_layers + 1))


def layer_scores(
    acts: Float[Tensor, "prompt layer d_model"],
    harmful: Float[Tensor, "layer d_model"],
    harmless: Float[Tensor, "layer d_model"],
    offset: Float[Tensor, "layer d_model"] | None = None,
) -> Float[np.ndarray, "prompt layer"]:
    """Per layer, ``cos(h - m, C_harmful - m) - cos(h - m, C_harmless - m)``, float64.

    A zero vector has cosine 0 with everything (a prompt exactly at the offset scores 0).
    """
    h, a, b = acts.double(), harmful.double(), harmless.double()
    if offset is not None:
        m = offset.double()
        h, a, b = h - m, a - m, b - m

    def cos(x: Tensor, c: Tensor) -> Tensor:
        norms = x.norm(dim=-1) * c.norm(dim=-1)
        dots = (x * c).sum(dim=-1)
        return torch.where(norms > 0, dots / norms.clamp_min(1e-300), torch.zeros_like(dots))

    return (cos(h, a) - cos(h, b)).cpu().numpy()


def guard_scores(
    acts: Float[Tensor, "prompt layer d_model"],
    harmful: Float[Tensor, "layer d_model"],
    harmless: Float[Tensor, "layer d_model"],
    offset: Float[Tensor, "layer d_model"] | None = None,
) -> Float[np.ndarray, " prompt"]:
    """The Latent Guard score: :func:`layer_scores` averaged over layers."""
    return layer_scores(acts, harmful, harmless, offset).mean(axis=-1)


def _model_record(model: HookedModel) -> dict[str, Any]:
    stamp = fingerprint(model)
    return {
        "name": model.name,
        "n_layers": model.n_layers,
        "d_model": model.d_model,
        "fingerprint": {k: stamp[k] for k in _FINGERPRINT_KEYS},
    }


def _chat(model: HookedModel, prompts: Prompts) -> list[ChatPrompt]:
    return [p if isinstance(p, ChatPrompt) else format_chat(model.tokenizer, p) for p in prompts]


def residuals(
    model: HookedModel,
    prompts: Prompts,
    position: str,
    layers: Sequence[int],
    batch_size: int = 16,
    progress: bool = False,
) -> Float[Tensor, "prompt layer d_model"]:
    """The residuals of ``prompts`` at ``layers`` and ``position``, float32 on the CPU."""
    return residuals_at(model, prompts, [position], layers, batch_size, progress)[:, 0]


def residuals_at(
    model: HookedModel,
    prompts: Prompts,
    positions: Sequence[str],
    layers: Sequence[int],
    batch_size: int = 16,
    progress: bool = False,
) -> Float[Tensor, "prompt position layer d_model"]:
    """:func:`residuals` at several positions, all read from one pass of each prompt."""
    from patching.residuals import ResidualPosition, residual_streams

    bad = [p for p in positions if p not in POSITIONS]
    if bad:
        raise OptionError(f"position {bad[0]!r}: use one of {', '.join(POSITIONS)}")
    chats = _chat(model, prompts)
    if not chats:
        return torch.empty(0, len(positions), len(layers), model.d_model)
    n = model.n_layers
    # residual_streams reads chosen block inputs and always appends the final residual.
    blocks = [layer for layer in layers if layer < n] or [0]
    where = [cast(ResidualPosition, p) for p in positions]
    acts = residual_streams(model, chats, where, blocks, batch_size, progress)
    index = {layer: i for i, layer in enumerate(blocks)} | {n: len(blocks)}
    return acts[:, :, [index[layer] for layer in layers]].detach().float().cpu()


def check_layers(layers: Sequence[int], n_layers: int) -> list[int]:
    """``layers`` as ints, each a residual layer ``0..n_layers`` named once."""
    chosen = [int(layer) for layer in layers]
    if not chosen:
        raise OptionError("layers is empty; give at least one residual layer")
    bad = [layer for layer in chosen if not 0 <= layer <= n_layers]
    if bad:
        raise OptionError(
            f"layers {bad} are outside the residual stream of a {n_layers}-layer model; use "
            f"0..{n_layers} (l = block l's input, {n_layers} = the final residual)"
        )
    if len(set(chosen)) != len(chosen):
        raise OptionError(f"layers {chosen} repeat a layer; give each layer once")
    return chosen


def check_class_sizes(n_harmful: int, n_harmless: int, what: str = "fitting") -> None:
    """Refuse fewer than :data:`MIN_PER_CLASS` prompts of either class."""
    if min(n_harmful, n_harmless) < MIN_PER_CLASS:
        raise TooFewPairsError(
            f"Latent Guard needs at least {MIN_PER_CLASS} harmful and {MIN_PER_CLASS} harmless "
            f"{what} prompts, got {n_harmful} harmful and {n_harmless} harmless; add prompts"
        )


def held_out(
    n_harmful: int, n_harmless: int, threshold: str = "zero", validation: float = 0.25
) -> tuple[int, int]:
    """How many prompts of each class the threshold rule holds out; refuses too few.

    Raises:
        OptionError: an unknown rule, or a validation share outside (0, 1).
        TooFewPairsError: fewer than :data:`MIN_PER_CLASS` fitting prompts of a class.
    """
    if threshold not in THRESHOLD_RULES:
        raise OptionError(f"threshold {threshold!r}: use one of {', '.join(THRESHOLD_RULES)}")
    check_class_sizes(n_harmful, n_harmless)
    if threshold == "zero":
        return 0, 0
    if not 0.0 < validation < 1.0:
        raise OptionError(f"validation {validation}: use a share strictly between 0 and 1")
    held = max(1, round(validation * n_harmful)), max(1, round(validation * n_harmless))
    check_class_sizes(n_harmful - held[0], n_harmless - held[1], "fitting (not held-out)")
    return held


@dataclass
class LatentGuard:
    """A fitted Latent Guard (module docstring). Build with :meth:`fit` or :meth:`load`.

    Attributes:
        layers: residual layers averaged over.
        position: where the residual is read: ``"t_inst"`` (harmfulness, the guard) or
            ``"t_post_inst"`` (the refusal "belief", read the same way).
        center: subtract the centroids' midpoint before the cosines.
        harmful_centroid, harmless_centroid: ``[layer, d_model]`` class means, float32.
        threshold: call a prompt harmful at ``score >= threshold``.
        threshold_rule: ``"zero"``, or ``"fit"`` (on ``n_validation`` held-out prompts).
        n_harmful, n_harmless: prompts the centroids are means of.
        model: the fitted model's name, shape and fingerprint.
    """

    layers: list[int]
    position: str
    center: bool
    harmful_centroid: Float[Tensor, "layer d_model"]
    harmless_centroid: Float[Tensor, "layer d_model"]
    threshold: float
    threshold_rule: str
    n_harmful: int
    n_harmless: int
    n_validation: int
    model: dict[str, Any]
    _model: HookedModel | None = field(default=None, repr=False, compare=False)

    # ----------------------------------------------------------------- from activations

    @classmethod
    def from_activations(
        cls,
        harmful: Float[Tensor, "prompt layer d_model"],
        harmless: Float[Tensor, "prompt layer d_model"],
        *,
        layers: Sequence[int],
        position: str = "t_inst",
        center: bool = False,
        model: dict[str, Any] | None = None,
    ) -> LatentGuard:
        """A guard with threshold 0 from residuals already read at ``layers`` and ``position``."""
        check_class_sizes(len(harmful), len(harmless))
        if harmful.shape[1:] != harmless.shape[1:] or harmful.shape[1] != len(layers):
            raise ValueError(
                f"activations of shape {tuple(harmful.shape)} and {tuple(harmless.shape)} do "
                f"not match {len(layers)} layers"
            )
        return cls(
            layers=list(layers),
            position=position,
            center=center,
            harmful_centroid=harmful.double().mean(0).float().cpu(),
            harmless_centroid=harmless.double().mean(0).float().cpu(),
            threshold=0.0,
            threshold_rule="zero",
            n_harmful=len(harmful),
            n_harmless=len(harmless),
            n_validation=0,
            model=dict(model or {}),
        )

    @property
    def offset(self) -> Float[Tensor, "layer d_model"] | None:
        """The centring offset ``m`` (the centroids' midpoint), or ``None`` uncentred."""
        if not self.center:
            return None
        return (self.harmful_centroid.double() + self.harmless_centroid.double()) / 2

    def score_activations(
        self, acts: Float[Tensor, "prompt layer d_model"]
    ) -> Float[np.ndarray, " prompt"]:
        """The score of residuals read at this guard's layers and position."""
        return self.layer_scores(acts).mean(axis=-1)

    def layer_scores(
        self, acts: Float[Tensor, "prompt layer d_model"]
    ) -> Float[np.ndarray, "prompt layer"]:
        """Each layer's term of the score (a one-layer guard's score at that layer)."""
        if acts.shape[1:] != self.harmful_centroid.shape:
            raise ValueError(
                f"activations {tuple(acts.shape)} do not match the guard's "
                f"{tuple(self.harmful_centroid.shape)} (layers {self.layers})"
            )
        return layer_scores(acts, self.harmful_centroid, self.harmless_centroid, self.offset)

    def fit_threshold(
        self, acts: Float[Tensor, "prompt layer d_model"], labels: Bool[np.ndarray, " prompt"]
    ) -> LatentGuard:
        """This guard with its threshold fitted on held-out ``acts`` (``labels``: harmful)."""
        y = np.asarray(labels, dtype=bool)
        if y.all() or not y.any():
            raise TooFewPairsError(
                "fitting a threshold needs validation prompts of both classes; add prompts or "
                "use threshold='zero'"
            )
        self.threshold = best_threshold(self.score_activations(acts), y)
        self.threshold_rule = "fit"
        self.n_validation = int(y.size)
        return self

    # ----------------------------------------------------------------- on a model

    @classmethod
    def fit(
        cls,
        model: HookedModel,
        harmful: Prompts,
        harmless: Prompts,
        *,
        layers: Sequence[int] | None = None,
        position: str = "t_inst",
        center: bool = False,
        threshold: str = "zero",
        validation: float = 0.25,
        seed: int = 0,
        batch_size: int = 16,
        progress: bool = False,
    ) -> LatentGuard:
        """Fit the centroids on ``model``'s residuals of ``harmful`` and ``harmless`` prompts.

        Args:
            layers: residual layers to average over (default :func:`default_layers`).
            position: ``"t_inst"`` (the guard) or ``"t_post_inst"`` (the refusal read).
            center: centre on the centroids' midpoint (module docstring; off by default).
            threshold: ``"zero"``, or ``"fit"``: hold out a seeded ``validation`` share of
                each class, fit the centroids on the rest and the threshold on it.
        """
        held_out(len(harmful), len(harmless), threshold, validation)  # before any forward pass
        if position not in POSITIONS:
            raise OptionError(f"position {position!r}: use one of {', '.join(POSITIONS)}")
        chosen = check_layers(
            default_layers(model.n_layers) if layers is None else layers, model.n_layers
        )
        record = _model_record(model)
        acts_h = residuals(model, harmful, position, chosen, batch_size, progress)
        acts_c = residuals(model, harmless, position, chosen, batch_size, progress)
        guard = cls.fit_activations(
            acts_h, acts_c, layers=chosen, position=position, center=center,
            threshold=threshold, validation=validation, seed=seed, model=record,
        )  # fmt: skip
        guard._model = model
        return guard

    @classmethod
    def fit_activations(
        cls,
        harmful: Float[Tensor, "prompt layer d_model"],
        harmless: Float[Tensor, "prompt layer d_model"],
        *,
        layers: Sequence[int],
        position: str = "t_inst",
        center: bool = False,
        threshold: str = "zero",
        validation: float = 0.25,
        seed: int = 0,
        model: dict[str, Any] | None = None,
    ) -> LatentGuard:
        """:meth:`fit` on residuals already read (the threshold rules as there)."""
        held_h, held_c = held_out(len(harmful), len(harmless), threshold, validation)
        if threshold == "zero":
            return cls.from_activations(
                harmful, harmless, layers=layers, position=position, center=center, model=model
            )
        rng = np.random.default_rng(seed)
        order_h, order_c = rng.permutation(len(harmful)), rng.permutation(len(harmless))
        guard = cls.from_activations(
            harmful[order_h[held_h:]], harmless[order_c[held_c:]], layers=layers,
            position=position, center=center, model=model,
        )  # fmt: skip
        acts = torch.cat([harmful[order_h[:held_h]], harmless[order_c[:held_c]]])
        labels = np.r_[np.ones(held_h, bool), np.zeros(held_c, bool)]
        return guard.fit_threshold(acts, labels)

    def attach(self, model: HookedModel, *, check_fingerprint: bool = True) -> LatentGuard:
        """Use ``model`` for :meth:`score` after checking it is the model this guard was fitted on.

        Raises:
            ModelMismatchError: another shape; or (with ``check_fingerprint``) other
                weights, config, tokenizer or chat template.
        """
        stored = self.model
        name = stored.get("name", "?")
        shape = (stored.get("n_layers"), stored.get("d_model"))
        if shape != (model.n_layers, model.d_model):
            raise ModelMismatchError(
                f"this Latent Guard was fitted on {name} ({shape[0]} layers, d_model "
                f"{shape[1]}), not on {model.name} ({model.n_layers} layers, d_model "
                f"{model.d_model}); fit a guard on this model"
            )
        if check_fingerprint:
            now = {k: fingerprint(model)[k] for k in _FINGERPRINT_KEYS}
            differ = differences(stored.get("fingerprint", {}), now)
            if differ:
                raise ModelMismatchError(
                    f"this Latent Guard was fitted on {name}, whose {', '.join(differ)} differ "
                    f"from {model.name}'s; fit a guard on this model (or load with "
                    f"check_fingerprint=False if only the dtype changed)"
                )
        self._model = model
        return self

    def _require_model(self) -> HookedModel:
        if self._model is None:
            raise ValueError("this guard has no model; call guard.attach(model) first")
        return self._model

    def activations(
        self, prompts: Prompts, *, batch_size: int = 16, progress: bool = False
    ) -> Float[Tensor, "prompt layer d_model"]:
        """Each prompt's residual at this guard's layers and position (one forward pass each)."""
        model = self._require_model()
        return residuals(model, prompts, self.position, self.layers, batch_size, progress)

    def score(
        self, prompts: Prompts, *, batch_size: int = 16, progress: bool = False
    ) -> Float[np.ndarray, " prompt"]:
        """Each prompt's Latent Guard score (higher: more harmful)."""
        return self.score_activations(
            self.activations(prompts, batch_size=batch_size, progress=progress)
        )

    def predict(
        self, prompts: Prompts, *, batch_size: int = 16, progress: bool = False
    ) -> Bool[np.ndarray, " prompt"]:
        """Whether each prompt is called harmful (``score >= threshold``)."""
        return self.score(prompts, batch_size=batch_size, progress=progress) >= self.threshold

    # ----------------------------------------------------------------- files

    def metadata(self) -> dict[str, Any]:
        """Everything but the centroids, as written to ``NAME.json``."""
        return {
            "format": GUARD_FORMAT,
            "kind": "latent_guard",
            "layers": self.layers,
            "position": self.position,
            "center": self.center,
            "threshold": self.threshold,
            "threshold_rule": self.threshold_rule,
            "n_harmful": self.n_harmful,
            "n_harmless": self.n_harmless,
            "n_validation": self.n_validation,
            "model": self.model,
        }

    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write ``NAME.safetensors`` and ``NAME.json`` (``path`` with or without a suffix)."""
        tensors, meta = _paths(path)
        tensors.parent.mkdir(parents=True, exist_ok=True)
        save_file(
            {
                "harmful_centroid": self.harmful_centroid.contiguous(),
                "harmless_centroid": self.harmless_centroid.contiguous(),
            },
            str(tensors),
        )
        meta.write_text(json.dumps(self.metadata(), indent=1), encoding="utf-8")
        return tensors, meta

    @classmethod
    def load(
        cls, path: str | Path, model: HookedModel | None = None, *, check_fingerprint: bool = True
    ) -> LatentGuard:
        """Read a guard written by :meth:`save`; with ``model``, check and attach it.

        Raises:
            ResultFileError: a file is missing or unreadable.
            ModelMismatchError: ``model`` is not the one the guard was fitted on.
        """
        tensors, meta = _paths(path)
        for p in (tensors, meta):
            if not p.is_file():
                raise ResultFileError(
                    f"{p} is missing; a Latent Guard is a NAME.safetensors + NAME.json pair "
                    f"written by LatentGuard.save (refusal-circuits guard --save NAME)"
                )
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
            arrays = load_file(str(tensors))
            guard = cls(
                layers=[int(x) for x in data["layers"]],
                position=str(data["position"]),
                center=bool(data["center"]),
                harmful_centroid=arrays["harmful_centroid"].float(),
                harmless_centroid=arrays["harmless_centroid"].float(),
                threshold=float(data["threshold"]),
                threshold_rule=str(data["threshold_rule"]),
                n_harmful=int(data["n_harmful"]),
                n_harmless=int(data["n_harmless"]),
                n_validation=int(data["n_validation"]),
                model=dict(data["model"]),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ResultFileError(
                f"{meta} / {tensors} is not a readable Latent Guard ({exc}); write it again "
                f"with LatentGuard.save"
            ) from None
        if data.get("format") != GUARD_FORMAT or data.get("kind") != "latent_guard":
            raise ResultFileError(
                f"{meta} is not a Latent Guard of format {GUARD_FORMAT}; fit and save it again"
            )
        shape = (len(guard.layers), int(guard.model.get("d_model", -1)))
        if tuple(guard.harmful_centroid.shape) != shape or (
            guard.harmless_centroid.shape != guard.harmful_centroid.shape
        ):
            raise ResultFileError(
                f"{tensors}: centroids of shape {tuple(guard.harmful_centroid.shape)} do not "
                f"match {len(guard.layers)} layers of d_model {shape[1]}; save the guard again"
            )
        if model is not None:
            guard.attach(model, check_fingerprint=check_fingerprint)
        return guard


def _paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path).expanduser()
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")
