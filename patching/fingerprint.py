"""What a stored result belongs to, and what to do with one that cannot be read.

A resumed audit or interchange run reuses results stored on disk. They are only
the run's own if everything that produced them is unchanged, so every stored
result is keyed on :func:`fingerprint` of the model, a dict of short hashes:

* ``weights``: sha256 over every parameter and buffer as loaded (name, dtype,
  shape and bytes, in name order). This is what the numbers are computed from,
  after dtype conversion and GGUF dequantisation, whatever the model came from
  (directory, GGUF file, hub cache or an in-memory model), so a weight file
  replaced by one with the same shapes but other values, or a single edited
  row, changes it. Headers or sizes of the files would not: a safetensors
  header holds names, shapes and offsets, never values. It costs one pass over
  the weights' bytes (sha256 runs at about 1 GB/s: ~3 ms for the organism,
  ~0.1 s per 100 MB, ~15 s for a 7B model in bfloat16);
* ``config``: the Hugging Face config (norm epsilons, rotary base... change the
  numbers without changing a weight), without its path and version fields;
* ``tokenizer`` and ``chat_template``: the full serialised tokenizer (vocabulary,
  merges, normalizer, special tokens, padding side) and the chat template;
* ``dtype``, ``device`` (its kind: ``cpu``, ``cuda``...), ``toolkit`` (the
  installed refusal-circuits version) and the versions of torch, transformers and
  transformer-lens (a step computed under another release is recomputed).

The fingerprint is computed once and kept on the model object. The copy is
reused while every parameter and buffer is the same tensor with the same
version counter, so ``load_state_dict``, in-place updates (``p.mul_(0)`` under
``no_grad``) and ``model.bridge.to(...)`` all refresh it. Writes through
``p.data`` bypass torch's version counter: after such an edit call
``fingerprint(model, refresh=True)`` before resuming into an old directory.

:func:`set_aside` is what a reader does with a stored file it cannot use: it is
renamed to ``<name>.corrupt`` (kept for inspection, never read again), a warning
names it, and the caller recomputes the result.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from patching.compat import versions

if TYPE_CHECKING:
    from patching.model import HookedModel

_CACHE_ATTR = "_fingerprint_cache"
# Fields of a Hugging Face config that say where or with what it was saved, not
# what the model computes. A GGUF file's ``quantization_config`` names the file the
# weights were dequantised from; the weights digest holds the values themselves (the
# converted copy a second load reads has none, and must fingerprint the same).
_CONFIG_NOISE = (
    "_name_or_path",
    "transformers_version",
    "_commit_hash",
    "torch_dtype",
    "dtype",
    "quantization_config",
)


def digest(value: Any) -> str:
    """A short, stable hash of any JSON-serialisable value (keys sorted; others as ``str``).

    The one key function of stored results: audit steps, interchange chunks, metrics.
    """
    return _sha(json.dumps(value, sort_keys=True, default=str))


def _sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()[:16]


def _tensors(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Every parameter and buffer once (tied weights appear under their first name)."""
    named = [*module.named_parameters(), *module.named_buffers()]
    return sorted(named, key=lambda item: item[0])


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    for name, tensor in _tensors(module):
        t = tensor.detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        if t.numel() == 0:
            continue
        flat = t.contiguous().reshape(-1).view(torch.uint8).cpu()
        h.update(flat.numpy().data)
    return h.hexdigest()[:16]


def _state_key(module: torch.nn.Module) -> tuple[tuple[str, int, int, str], ...]:
    """Changes whenever a parameter or buffer is replaced or updated in place."""
    return tuple((name, t.data_ptr(), t._version, str(t.device)) for name, t in _tensors(module))


def config_digest(model: HookedModel) -> str:
    hf = getattr(model.bridge, "original_model", None)
    config = getattr(hf, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        data = {k: v for k, v in config.to_dict().items() if k not in _CONFIG_NOISE}
    else:
        data = {k: v for k, v in vars(model.bridge.cfg).items() if k not in ("device", "dtype")}
    return _sha(json.dumps(data, sort_keys=True, default=str))


def tokenizer_digest(tokenizer: Any) -> str:
    """The whole tokenizer: its serialised backend (or vocabulary) and special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):
        body = backend.to_str()
    else:
        body = json.dumps(sorted(tokenizer.get_vocab().items()))
    extra = {
        "class": type(tokenizer).__name__,
        "special": getattr(tokenizer, "special_tokens_map", {}),
        "padding_side": getattr(tokenizer, "padding_side", None),
        "truncation_side": getattr(tokenizer, "truncation_side", None),
    }
    return _sha(body + json.dumps(extra, sort_keys=True, default=str))


def fingerprint(model: HookedModel, *, refresh: bool = False) -> dict[str, str]:
    """What results computed with ``model`` depend on, as short hashes (module docstring).

    Computed once per model and kept on it while its tensors are unchanged;
    ``refresh=True`` recomputes it (after writes through ``p.data``).
    """
    key = _state_key(model.bridge)
    cached = vars(model).get(_CACHE_ATTR)
    weights = cached[1] if cached is not None and cached[0] == key and not refresh else None
    if weights is None:
        weights = weights_digest(model.bridge)
        vars(model)[_CACHE_ATTR] = (key, weights)
    # The rest is cheap and the tokenizer is easy to change in place (its chat
    # template is a plain attribute), so it is read every time.
    tok = model.tokenizer
    return {
        "weights": weights,
        "config": config_digest(model),
        "tokenizer": tokenizer_digest(tok),
        "chat_template": _sha(str(getattr(tok, "chat_template", None))),
        "dtype": str(model.dtype).removeprefix("torch."),
        "device": model.device.type,
        # The toolkit and the libraries its numbers come from (patching.compat).
        **{
            ("toolkit" if k == "refusal-circuits" else k): v
            for k, v in versions().items()
            if k != "python"
        },
    }


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The fields in which two fingerprints differ (``weights``, ``dtype``...)."""
    return sorted(k for k in {*old, *new} if old.get(k) != new.get(k))


def set_aside(path: Path, why: str) -> Path:
    """Rename an unusable stored file to ``<name>.corrupt`` and warn, naming it."""
    target = path.with_name(path.name + ".corrupt")
    try:
        path.replace(target)
    except OSError:
        target = path  # cannot rename (read-only?): the caller overwrites it instead
    warnings.warn(
        f"{path} could not be used ({why}); set aside as {target.name}, recomputing it",
        stacklevel=3,
    )
    return target
