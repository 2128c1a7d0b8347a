"""One serialiser for result dataclasses: ``to_dict`` / ``from_dict`` from the fields.

A result class is a dataclass that inherits :class:`Result`. Its JSON form is
derived from its fields, so there is no hand-written ``to_dict`` to keep in step:

- numpy arrays and torch tensors become nested lists; NaN and +-inf become
  ``null`` (JSON has no NaN) and come back as NaN in float fields and arrays
  (an infinity is not told apart from a missing value);
- nested results (and lists, tuples, dicts of them) serialise recursively;
- fields whose name starts with ``_`` (caches) are left out;
- ``field(metadata={"group": "per_pair"})`` writes a field inside a nested object
  of that name (bulky per-pair arrays sit apart from the summary), and
  ``field(metadata={"key": "name"})`` writes it under another key (a JSON name
  kept stable while the attribute reads better); fields that share a ``key``
  with an ``index`` each are written together as one list (``ci_low`` and
  ``ci_high`` as ``"ci": [low, high]``); ``"omit": v`` leaves the field out while
  it equals ``v`` (read back as its default);
- :meth:`Result.derived` adds computed summaries beside the fields (means,
  intervals, totals a reader of the JSON looks at first); they are written but
  never read back, since :meth:`Result.from_dict` rebuilds from fields only.

``from_dict`` reads each field back through its type annotation (``float``,
``int``, ``np.ndarray`` or a jaxtyping array of it, ``torch.Tensor``, nested
:class:`Result` s, ``list`` / ``tuple`` / ``dict`` / ``X | None`` of these);
classes with their own ``from_dict``; anything else is taken as stored.
``to_json(path)`` returns the path written.

Adopting it
-----------
For an existing result dataclass: inherit :class:`Result`, delete its
``to_dict`` / ``from_dict`` / ``to_json`` / ``from_json``, and move any summary
keys its old ``to_dict`` wrote beside the fields into ``derived()``. A field
typed ``Any`` is stored as given (so keep it JSON-plain). Run the class's
round-trip test: ``type(r).from_dict(r.to_dict()).to_dict() == r.to_dict()``.

Explained in ``docs/design.md#results-and-serialisation``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

R = TypeVar("R", bound="Result")


def to_plain(value: Any) -> Any:
    """``value`` as JSON-ready Python: lists, dicts, numbers, strings, ``None``."""
    if isinstance(value, Result):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, torch.Tensor):
        return to_plain(value.detach().cpu().numpy())
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "fc":
            out = value.astype(np.float64).astype(object)
            out[~np.isfinite(value.astype(np.float64))] = None
            return out.tolist()
        return value.tolist()
    if isinstance(value, np.generic):
        return to_plain(value.item())
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str) else k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _array(value: Any, integer: bool) -> np.ndarray:
    if integer:
        return np.asarray(value, dtype=np.int64)
    data = np.asarray(value, dtype=object)
    if data.dtype == object and data.size:
        data = np.where(data == None, np.nan, data)  # noqa: E711 (elementwise)
    return np.asarray(data, dtype=np.float64)


def from_plain(hint: Any, value: Any) -> Any:
    """The inverse of :func:`to_plain` for a value annotated ``hint``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return float("nan") if float in args else None
        options = [a for a in args if a is not type(None)]
        return from_plain(options[0], value) if len(options) == 1 else value
    if hint is float:
        return float("nan") if value is None else float(value)
    if value is None:
        return None
    array_type = getattr(hint, "array_type", None)
    if hint is np.ndarray or array_type is np.ndarray:
        dtypes = getattr(hint, "dtypes", ())
        return _array(value, integer=bool(dtypes) and all("int" in d for d in dtypes))
    if hint is torch.Tensor or array_type is torch.Tensor:
        dtypes = getattr(hint, "dtypes", ())
        integer = bool(dtypes) and all("int" in d for d in dtypes)
        return torch.as_tensor(_array(value, integer))
    if isinstance(hint, type) and callable(getattr(hint, "from_dict", None)):
        return hint.from_dict(value)  # type: ignore[attr-defined]  # a Result, or own from_dict
    if hint in (int, str, bool):
        return hint(value)
    if origin is list:
        return [from_plain(args[0] if args else Any, v) for v in value]
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_plain(args[0], v) for v in value)
        if args:
            return tuple(from_plain(a, v) for a, v in zip(args, value, strict=True))
        return tuple(value)
    if origin is dict:
        key, val = args if args else (Any, Any)
        return {from_plain(key, k): from_plain(val, v) for k, v in value.items()}
    return value


def _key(f: dataclasses.Field[Any]) -> str:
    """The JSON key of field ``f``: its ``key`` metadata, else its name."""
    return str(f.metadata.get("key", f.name))


def _same(value: Any, omitted: Any) -> bool:
    if omitted is None or value is None:
        return value is omitted
    return bool(value == omitted)


class Result:
    """Base of result dataclasses: JSON from the fields (module docstring)."""

    def derived(self) -> dict[str, Any]:
        """Computed summaries written beside the fields (not read back)."""
        return {}

    @classmethod
    def _fields(cls) -> list[dataclasses.Field[Any]]:
        assert dataclasses.is_dataclass(cls), f"{cls.__name__} must be a dataclass"
        return [f for f in dataclasses.fields(cls) if not f.name.startswith("_")]

    def to_dict(self) -> dict[str, Any]:
        """Derived summaries, then every field (grouped fields in their nested object)."""
        data: dict[str, Any] = {k: to_plain(v) for k, v in self.derived().items()}
        for f in self._fields():
            value = getattr(self, f.name)
            if "omit" in f.metadata and _same(value, f.metadata["omit"]):
                continue
            group = f.metadata.get("group")
            target = data.setdefault(group, {}) if group else data
            if "index" in f.metadata:
                packed = target.setdefault(_key(f), [])
                packed.extend([None] * (f.metadata["index"] + 1 - len(packed)))
                packed[f.metadata["index"]] = to_plain(value)
            else:
                target[_key(f)] = to_plain(value)
        return data

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any]) -> R:
        """Rebuild from :meth:`to_dict`'s output; missing fields take their defaults.

        Keys that are not fields (derived summaries, extra records) are ignored.

        Raises:
            KeyError: a field without a default is missing.
        """
        module = sys.modules[cls.__module__]
        hints = typing.get_type_hints(cls, vars(module))
        values: dict[str, Any] = {}
        for f in cls._fields():
            group = f.metadata.get("group")
            source = data.get(group, {}) if group else data
            if _key(f) in source:
                stored = source[_key(f)]
                if "index" in f.metadata:
                    stored = stored[f.metadata["index"]]
                values[f.name] = from_plain(hints.get(f.name, Any), stored)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise KeyError(f.name)
        return cls(**values)

    def to_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON to ``path``; return the path."""
        out = Path(path)
        out.write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")
        return out

    @classmethod
    def from_json(cls: type[R], path: str | Path) -> R:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
