"""GGUF files (llama.cpp / Ollama) as model specs: dequantise once, cache a safetensors copy.

A spec names a ``.gguf`` file (``path/model.Q4_1.gguf``) or a folder and a file in it
(``path/to/folder:model.Q4_1.gguf``). The first load reads it with transformers' ``gguf_file=``
(which dequantises every tensor to floats), and writes a normal ``save_pretrained`` folder
(fp32 safetensors + tokenizer + config + ``gguf.json``) into the cache, keyed by the sha256 of
the file's content. Later loads read that folder (seconds instead of a minute).

The cache lives in ``$INSPECTOR_CACHE_DIR`` (default ``~/.cache/inspector/gguf``); each entry
is written to a temporary folder and renamed into place, so a crash never leaves a half copy.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .errors import CorruptCheckpointError, InputError, ModelNotFoundError, UnsupportedArchitectureError

SUFFIX = ".gguf"
INFO_FILE = "gguf.json"  # written into every converted folder: what it was converted from
CACHE_ENV = "INSPECTOR_CACHE_DIR"
_MAGIC = b"GGUF"


@dataclass(frozen=True)
class GGUFInfo:
    """What the GGUF file says about itself (read from its header, no tensor data)."""

    path: str
    sha256: str  # full hex digest of the file's bytes
    architecture: str  # general.architecture, e.g. "llama"
    quantisation: str  # general.file_type without "MOSTLY_", e.g. "Q4_1"; else the commonest tensor type
    tensor_types: tuple[tuple[str, int], ...]  # (type name, number of tensors), commonest first
    name: str | None = None  # general.name
    license: str | None = None  # general.license
    roles: tuple[tuple[str, str], ...] = ()  # ("token embeddings", "Q8_0"), ("norm weights", "F32"), ...

    @property
    def summary(self) -> str:
        types = ", ".join(f"{n}× {t}" for t, n in self.tensor_types)
        roles = "; ".join(f"{role} {t}" for role, t in self.roles)
        return (f"dequantised to float32 from a {self.quantisation} GGUF file ({types}"
                + (f"; {roles}" if roles else "") + ")")

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["tensor_types"] = [list(t) for t in self.tensor_types]
        d["roles"] = [list(t) for t in self.roles]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> GGUFInfo:
        d = dict(d)
        d["tensor_types"] = tuple((str(t), int(n)) for t, n in d.get("tensor_types", ()))
        d["roles"] = tuple((str(r), str(t)) for r, t in d.get("roles", ()))
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__})


# --------------------------------------------------------------------------- specs


def is_gguf_spec(spec: str) -> bool:
    """True when the spec names a .gguf file (alone or as ``folder:file.gguf``)."""
    return isinstance(spec, str) and spec.strip().lower().endswith(SUFFIX)


def resolve_file(spec: str) -> Path:
    """``file.gguf`` or ``folder:file.gguf`` -> the file's path. Raises ModelNotFoundError if absent."""
    spec = spec.strip()
    path = Path(os.path.expanduser(spec))
    if not path.exists() and ":" in spec:
        folder, _, name = spec.rpartition(":")
        if folder and name and "/" not in name and os.sep not in name:
            path = Path(os.path.expanduser(folder)) / name
    if not path.is_file():
        raise ModelNotFoundError(f"GGUF file '{spec}' does not exist.",
                                 "Give the path of a .gguf file, or folder:file.gguf.")
    return path


def cache_dir() -> Path:
    """Where converted copies live: $INSPECTOR_CACHE_DIR, else ~/.cache/inspector/gguf."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(os.path.expanduser(env)) if env else Path.home() / ".cache" / "inspector" / "gguf"


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of the file's bytes, streamed (never the whole file in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- header


def _field(reader, key: str):
    field = reader.fields.get(key)
    if field is None:
        return None
    try:
        return field.contents()
    except Exception:  # noqa: BLE001 - a malformed optional field is just absent
        return None


def read_info(path: Path, sha256: str | None = None) -> GGUFInfo:
    """Read architecture and quantisation from the header. CorruptCheckpointError for non-GGUF or damaged files."""
    path = Path(path)
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != _MAGIC:
        raise CorruptCheckpointError(f"'{path.name}' is not a GGUF file (it does not start with the GGUF magic).",
                                     "Give a .gguf file written by llama.cpp / gguf-py.")
    try:
        import gguf
    except ImportError:
        raise InputError("Reading GGUF files needs the 'gguf' package, which is not installed.",
                         "pip install 'gguf>=0.10'") from None
    try:
        reader = gguf.GGUFReader(str(path), "r")
        types = Counter(t.tensor_type.name for t in reader.tensors)
        by_name = {t.name: t.tensor_type.name for t in reader.tensors}
        file_type = _field(reader, "general.file_type")
        arch = _field(reader, "general.architecture")
        name = _field(reader, "general.name")
        lic = _field(reader, "general.license")
    except Exception as exc:  # noqa: BLE001 - gguf raises ValueError/IndexError/struct errors on damage
        raise CorruptCheckpointError(f"'{path.name}' is a damaged or truncated GGUF file ({type(exc).__name__}: "
                                     f"{str(exc).splitlines()[0][:200] if str(exc) else 'unreadable'}).") from None
    if not types:
        raise CorruptCheckpointError(f"'{path.name}' holds no tensors.")
    quant = None
    if file_type is not None:
        try:
            quant = gguf.LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_")
        except ValueError:
            quant = None
    if quant is None:  # no/unknown file_type: the commonest non-F32 tensor type
        quant = next((t for t, _ in types.most_common() if t not in ("F32",)), "F32")
    norm_types = sorted({t for n, t in by_name.items() if "norm" in n})
    roles = [("token embeddings", by_name.get("token_embd.weight")),
             ("output head", by_name.get("output.weight", "tied to the token embeddings")),
             ("norm weights", "/".join(norm_types) or None)]
    return GGUFInfo(path=str(path.resolve()), sha256=sha256 or file_sha256(path), architecture=str(arch or "?"),
                    quantisation=quant, tensor_types=tuple(types.most_common()),
                    name=str(name) if name else None, license=str(lic) if lic else None,
                    roles=tuple((r, t) for r, t in roles if t))


def quantisation_note(provenance, what: str) -> str | None:
    """One sentence for views of `what` (e.g. "γ values") when the weights came from a quantised file."""
    detail = getattr(provenance, "dequantised_from", None)
    if not detail:
        return None
    return (f"Weights {detail}. Quantisation noise is part of what you see in the {what}: a value stored "
            "quantised carries the rounding of its block; one stored as F32 is exact.")


def converted_info(folder: Path) -> GGUFInfo | None:
    """The GGUFInfo of a folder this module converted (its gguf.json), else None."""
    f = Path(folder) / INFO_FILE
    if not f.is_file():
        return None
    try:
        return GGUFInfo.from_dict(json.loads(f.read_text())["source"])
    except (ValueError, KeyError, TypeError):
        return None


# --------------------------------------------------------------------------- conversion


def _complete(folder: Path) -> bool:
    return (folder / INFO_FILE).is_file() and (folder / "config.json").is_file() and any(
        folder.glob("*.safetensors"))


def _convert_into(path: Path, out: Path, check_config=None) -> None:
    """Dequantise `path` with transformers and save a plain fp32 safetensors folder into `out`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(path.parent), path.name
    try:
        config = AutoConfig.from_pretrained(folder, gguf_file=name, local_files_only=True)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise UnsupportedArchitectureError(f"transformers cannot read '{name}': "
                                           f"{str(exc).splitlines()[0][:300]}") from None
    if check_config is not None:
        check_config(config)  # refuse unsupported families before the minute of dequantising
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
        quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32,
                                                         local_files_only=True)
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        raise CorruptCheckpointError(f"Cannot dequantise '{name}': {str(exc).splitlines()[0][:300]}") from None
    # save_pretrained refuses a model loaded from gguf ("quantized with gguf ... not serializable"):
    # copy the floats into a plain model of the same class and save that.
    plain_config = quantised.config
    if hasattr(plain_config, "quantization_config"):
        del plain_config.quantization_config
    plain = type(quantised)(plain_config)
    plain.load_state_dict(quantised.state_dict())
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    del quantised, plain


def ensure_converted(path: Path, *, check_config=None, progress=None) -> tuple[Path, GGUFInfo]:
    """The cached safetensors folder of GGUF file `path` (converting it first if needed) and its info.

    `check_config(config)` may raise to refuse the model before the conversion starts.
    `progress(str)` is told what happens (e.g. to print "converting ...").
    """
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"GGUF file '{path}' does not exist.")
    sha = file_sha256(path)
    root = cache_dir()
    target = root / sha[:32]
    if _complete(target):
        info = converted_info(target)
        if info is not None:
            return target, info
    info = read_info(path, sha256=sha)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{sha[:12]}-", dir=root))
        os.chmod(tmp, 0o755)
    except OSError as exc:
        raise InputError(f"Cannot write the GGUF cache in '{root}': {exc.strerror or exc}.",
                         f"Set {CACHE_ENV} to a writable folder.") from None
    try:
        if progress is not None:
            progress(f"Dequantising {path.name} ({info.quantisation}) into {target} (first load only)…")
        t0 = time.perf_counter()
        _convert_into(path, tmp, check_config=check_config)
        (tmp / INFO_FILE).write_text(json.dumps({
            "source": info.to_dict(),
            "converted_in_s": round(time.perf_counter() - t0, 1),
            "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "dtype": "float32",
        }, indent=1))
        if target.exists():  # an incomplete leftover, or a concurrent writer finished first
            if _complete(target):
                shutil.rmtree(tmp, ignore_errors=True)
                return target, converted_info(target) or info
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            if not _complete(target):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target, info
