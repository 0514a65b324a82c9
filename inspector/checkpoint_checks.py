"""Checks a checkpoint must pass before any weight is read: files, safetensors headers, config, tokenizer config, memory.

Each check raises one of the typed errors of `inspector.errors` with a message naming the file and what is wrong
in it, so that a damaged or hostile folder never reaches a library exception (AttributeError, RecursionError,
SafetensorError, UnpicklingError, a bare out-of-memory after a minute of allocating).
"""
from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

from . import families
from .errors import (CorruptCheckpointError, ModelNotFoundError, RemoteCodeError, ResourceLimitError,
                     UnsafeWeightsError)


# The safetensors format (https://github.com/huggingface/safetensors): bytes per element of each dtype it defines.
# Sub-byte and exotic float formats have no whole-byte size here; their byte count is not checked.
SAFETENSORS_DTYPES: dict[str, float | None] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2, "U16": 2, "F16": 2,
    "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8, "C64": 8,
    "F4": None, "F6_E2M3": None, "F6_E3M2": None,
}
MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt")
_DTYPE_BYTES = {"float32": 4, "float64": 8, "bfloat16": 2, "float16": 2}


# --------------------------------------------------------------------------- weights files


def check_local_weights(folder: Path, allow_pickle: bool) -> Path | None:
    """Refuse folders without safe weights; return the weights file used (for the content hash)."""
    if not folder.is_dir():
        raise ModelNotFoundError(f"Folder '{folder}' does not exist.")
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"Folder '{folder}' has no config.json: it is not a save_pretrained folder.")
    safetensors = sorted(folder.glob("*.safetensors"))
    pickles = sorted(p for pat in PICKLE_PATTERNS for p in folder.glob(pat))
    if safetensors:
        for f in safetensors:
            check_safetensors_header(f)
        return safetensors[0]
    if pickles:
        if not allow_pickle:
            raise UnsafeWeightsError(f"'{folder}' holds only pickle weights ({pickles[0].name}), no safetensors file.")
        return pickles[0]
    raise CorruptCheckpointError(f"'{folder}' has a config.json but no weights file (*.safetensors).",
                                 "Save the model with model.save_pretrained(folder) so the weights are written too.")


def _not_valid(path: Path, why: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"'{path.name}' is not a valid safetensors file: {why}.")


def check_safetensors_header(path: Path) -> dict:
    """Validate the JSON header of a safetensors file completely; return it.

    The header must be one JSON object mapping tensor names to objects with a known `dtype`, a `shape`
    of non-negative integers and `data_offsets` [begin, end] inside the file whose length matches
    dtype × shape. Nesting is refused before parsing (a 200 000-deep array would exhaust the recursion limit).
    """
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            raw_len = fh.read(8)
            if len(raw_len) < 8:
                raise _not_valid(path, f"only {size} bytes, shorter than the 8-byte header length")
            (header_len,) = struct.unpack("<Q", raw_len)
            if header_len <= 0 or 8 + header_len > size:
                raise _not_valid(path, f"its header claims {header_len} bytes but the file has {size}")
            if header_len > MAX_HEADER_BYTES:
                raise _not_valid(path, f"its header claims {header_len} bytes (at most {MAX_HEADER_BYTES} allowed)")
            raw = fh.read(header_len)
    except OSError as exc:
        raise CorruptCheckpointError(f"'{path.name}' cannot be read ({exc.strerror or exc}).") from None
    depth = _max_json_depth(raw)
    if depth > 3:  # {name: {"shape": [..]}} is 3 deep; __metadata__ is 2
        deep = f"more than {depth - 1}" if depth > 64 else str(depth)
        raise _not_valid(path, f"its header is nested {deep} levels deep (a real header has at most 3)")
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise _not_valid(path, f"its header is not JSON ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(header, dict):
        raise _not_valid(path, f"its header is a JSON {type(header).__name__}, not an object of tensors")
    data_len = size - 8 - header_len
    for name, entry in header.items():
        if name == "__metadata__":
            if not (isinstance(entry, dict) and all(isinstance(v, str) for v in entry.values())):
                raise _not_valid(path, "'__metadata__' must map names to strings")
            continue
        shown = repr(name[:80])
        if not isinstance(entry, dict):
            raise _not_valid(path, f"the entry of tensor {shown} is a JSON {type(entry).__name__}, not an object")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in SAFETENSORS_DTYPES:
            known = ", ".join(k for k in SAFETENSORS_DTYPES)
            raise _not_valid(path, f"tensor {shown} has unknown dtype {str(dtype)[:40]!r} (known: {known})")
        if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
            raise _not_valid(path, f"tensor {shown} has shape {str(shape)[:60]}, not a list of non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
                and 0 <= offsets[0] <= offsets[1]):
            raise _not_valid(path, f"tensor {shown} has data_offsets {str(offsets)[:60]}, not [begin, end]")
        if offsets[1] > data_len:
            raise CorruptCheckpointError(
                f"'{path.name}' is truncated: {size} bytes on disk, {8 + header_len + offsets[1]} expected.")
        itemsize = SAFETENSORS_DTYPES[dtype]
        if itemsize is not None and math.prod(shape) * itemsize != offsets[1] - offsets[0]:
            raise _not_valid(path, f"tensor {shown} ({dtype} {shape}) should take {math.prod(shape) * itemsize} bytes "
                                   f"but its data_offsets span {offsets[1] - offsets[0]}")
    return header


def _max_json_depth(raw: bytes) -> int:
    """Deepest [ / { nesting of a JSON text, counted without parsing it (brackets inside strings skipped)."""
    depth = deepest = 0
    in_string = escaped = False
    for b in raw:
        if in_string:
            if escaped:
                escaped = False
            elif b == 0x5C:  # backslash
                escaped = True
            elif b == 0x22:
                in_string = False
        elif b == 0x22:
            in_string = True
        elif b in (0x5B, 0x7B):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > 64:  # far past any real header: stop counting
                    return deepest
        elif b in (0x5D, 0x7D):
            depth -= 1
    return deepest


def pickle_refused(spec: str, exc: BaseException) -> UnsafeWeightsError:
    """The message when `torch.load(weights_only=True)` refuses a pickle file even with pickle allowed."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # torch colours its message for terminals
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # torch's message is a page of advice; the reason is the "WeightsUnpickler error: ..." line
    reason = next((ln for ln in lines if "WeightsUnpickler error" in ln or "Unsupported global" in ln), None)
    detail = (reason or (lines[0] if lines else type(exc).__name__)).split(". Please")[0][:200]
    return UnsafeWeightsError(
        f"The pickle weights of '{spec}' hold more than tensors: the safe unpickler (torch.load with "
        f"weights_only=True) refused them ({detail}).",
        "inspector never runs a full unpickler, even with pickle allowed. Convert the checkpoint to safetensors "
        "where you trust it (load it there and call model.save_pretrained(folder, safe_serialization=True)), or "
        "use another checkpoint.")


# --------------------------------------------------------------------------- config and tokenizer config


def check_config(config) -> None:
    """No remote code; a supported architecture."""
    if getattr(config, "auto_map", None):
        raise RemoteCodeError(
            f"The config of this checkpoint (model_type '{config.model_type}') asks for trust_remote_code: "
            "it would run Python code shipped with the checkpoint.")
    families.family_of(config)  # "not supported yet" for everything outside the family table


def check_tokenizer_config(folder: Path) -> None:
    """Refuse a tokenizer_config.json asking for custom tokenizer code (`auto_map`), as a model config is refused."""
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CorruptCheckpointError(f"'{path.name}' in '{folder}' is not valid JSON ({type(exc).__name__}).") from None
    if not isinstance(data, dict):
        raise CorruptCheckpointError(f"'{path.name}' in '{folder}' is a JSON {type(data).__name__}, not an object.")
    check_tokenizer_settings(data, str(folder))


def check_tokenizer_settings(settings: dict, where: str) -> None:
    """`settings`: tokenizer_config.json's content (or a loaded tokenizer's init_kwargs)."""
    if settings.get("auto_map"):
        raise RemoteCodeError(
            f"The tokenizer config of '{where}' (tokenizer_config.json) names custom tokenizer code in auto_map "
            "(trust_remote_code).",
            "inspector never runs code from a checkpoint, for tokenizers as for models: remove auto_map from "
            "tokenizer_config.json if the tokenizer is a standard one, or use a model whose tokenizer ships with "
            "transformers.")


# --------------------------------------------------------------------------- memory


def _size(config, *names: str, default: int | None = None) -> int:
    for name in names:
        v = getattr(config, name, None)
        if v is not None:
            break
    else:
        v = default
    if v is None:
        raise CorruptCheckpointError(f"config.json has no {names[0]}.")
    if type(v) is not int or v < 0:
        raise CorruptCheckpointError(f"config.json gives {names[0]} = {str(v)[:40]}: not a non-negative integer.")
    return v


def estimate_parameters(config) -> int:
    """About how many parameters `config` describes (embeddings + per layer attention 4d² + MLP), before any allocation."""
    d = _size(config, "hidden_size", "n_embd", "d_model")
    layers = _size(config, "num_hidden_layers", "n_layer")
    vocab = _size(config, "vocab_size")
    positions = _size(config, "max_position_embeddings", "n_positions", default=0)
    d_ff = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * d
    if type(d_ff) is not int or d_ff < 0:
        raise CorruptCheckpointError(f"config.json gives an MLP width of {str(d_ff)[:40]}: not a non-negative integer.")
    gated = getattr(config, "hidden_act", getattr(config, "activation_function", "")) in ("silu", "swiglu")
    per_layer = 4 * d * d + (3 if gated else 2) * d * d_ff + 8 * d
    tied = getattr(config, "tie_word_embeddings", True)
    return layers * per_layer + vocab * d * (1 if tied else 2) + positions * d


def _parse_bytes(raw: str) -> int:
    s = raw.strip().upper().removesuffix("B")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(s[-1:], 1)
    try:
        return int(float(s[:-1] if scale > 1 else s) * scale)
    except ValueError:
        raise ResourceLimitError(f"INSPECTOR_MAX_MODEL_BYTES = '{raw}' is not a size.",
                                 "Write a number of bytes, optionally with K, M, G or T (e.g. 8G).") from None


def free_memory_bytes(device) -> int | None:
    """Free memory where the parameters go: the GPU's free memory, else what this process may still allocate
    on the host (the smaller of MemAvailable and the cgroup's memory.max − memory.current)."""
    import torch

    if getattr(device, "type", str(device)) == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    candidates = []
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    candidates.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            candidates.append(max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return min(candidates) if candidates else None


def check_memory(config, spec: str, dtype, device, *, device_map=None) -> int:
    """Refuse before allocating when the config's parameters would not fit; return the estimate in bytes.

    The cap is INSPECTOR_MAX_MODEL_BYTES when set, and (without a device_map, which may offload) the free
    memory of the target device.
    """
    n = estimate_parameters(config)
    itemsize = _DTYPE_BYTES.get(str(dtype).replace("torch.", ""), 4)
    need = n * itemsize
    limits = []
    cap = os.environ.get("INSPECTOR_MAX_MODEL_BYTES", "").strip()
    if cap:
        limits.append((_parse_bytes(cap), "the cap INSPECTOR_MAX_MODEL_BYTES"))
    if device_map is None:
        free = free_memory_bytes(device)
        if free is not None:
            limits.append((free, f"the free memory on {device}"))
    for limit, what in limits:
        if need > limit:
            raise ResourceLimitError(
                f"The config of '{spec}' describes about {_count(n)} parameters ({_gb(need)} in "
                f"{str(dtype).replace('torch.', '')}), more than {what} ({_gb(limit)}): nothing was loaded.",
                "Check config.json (layer count, hidden size, vocabulary); use a smaller checkpoint or dtype "
                "(bfloat16/float16 on GPU); or set INSPECTOR_MAX_MODEL_BYTES / free memory if it really should fit.")
    return need


def _count(n: int) -> str:
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.3g} {unit}"
    return str(n)


def _gb(b: int) -> str:
    return f"{b / 1e9:,.1f} GB" if b >= 1e8 else f"{b / 1e6:.3g} MB"
