"""Load a checkpoint (hub id, id@revision, local folder, bundled name) into a `LoadedModel`.

The same code path serves every spec: the spec is resolved to something `from_pretrained`
accepts, the config is checked (architecture supported, no remote code, safe weights), and
the model is loaded with inspector's attention function so that `inspector.capture` can see
QKᵀ while the model keeps its fast SDPA path.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import socket
import threading
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from urllib.parse import urlparse

import torch

from . import capture, checkpoint_checks, families
from .errors import (
    CorruptCheckpointError,
    HubUnreachableError,
    InputError,
    ModelNotFoundError,
    OutOfMemoryError,
    PathNotAllowedError,
    RemoteCodeError,
    UnsafeWeightsError,
    UnsupportedArchitectureError,
)

BUNDLED_PREFIX = "bundled:"


def bundled_spec(name: str, checkpoint: str | None = None, default_checkpoint: str | None = None) -> str:
    """The spec of a bundled model (`bundled:name`, or `bundled:name@checkpoint` off its default)."""
    spec = BUNDLED_PREFIX + name
    return spec if checkpoint in (None, default_checkpoint) else f"{spec}@{checkpoint}"


SUPPORTED_MODEL_TYPES = families.supported_model_types()


class ModelKind(str, Enum):
    CAUSAL_LM = "causal-lm"
    MASKED_LM = "masked-lm"
    PRETRAINING = "pretraining"  # masked LM + next-sentence-prediction heads
    ENCODER = "encoder"  # no language-model head at all

    @property
    def label(self) -> str:
        return {
            "causal-lm": "causal language model",
            "masked-lm": "masked language model",
            "pretraining": "pre-training model (masked LM + next-sentence head)",
            "encoder": "encoder only (no language-model head)",
        }[self.value]


@dataclass(frozen=True)
class Provenance:
    """Where the weights came from: enough to reproduce the numbers."""

    spec: str
    source: str  # "bundled" | "local" | "hub"
    resolved_path: str
    revision: str | None = None
    commit_hash: str | None = None  # hub commit, or sha256 of the weights file for local/bundled
    # set when the weights were dequantised from a GGUF file (inspector.gguf): its quantisation
    # type (e.g. "Q4_1") and a one-line account; quantisation noise is then part of every figure
    quantisation: str | None = None
    dequantised_from: str | None = None

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        for key in ("quantisation", "dequantised_from"):  # only for weights from a quantised file
            if d[key] is None:
                del d[key]
        return d


@dataclass(eq=False)
class LoadedModel:
    """A model, its tokenizer and the facts every analysis needs. Shared read-only by all sessions."""

    model: torch.nn.Module
    tokenizer: object
    kind: ModelKind
    family: str  # config.model_type: "gpt2" | "bert" | "llama" | "qwen2" | "mistral" | "gemma2" | ...
    architecture: str  # class name, e.g. GPT2LMHeadModel
    device: torch.device
    dtype: torch.dtype
    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    vocab_size: int
    max_positions: int
    provenance: Provenance
    # Serialises work that temporarily hooks the shared model (Captum's layer methods).
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    n_kv_heads: int | None = None  # key/value heads (grouped-query attention when < n_heads); None = n_heads

    @property
    def fam(self) -> families.Family:
        """Static facts of the family (positions, norm kind, where the embeddings are)."""
        return families.FAMILIES[self.family]

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def spec(self) -> str:
        return self.provenance.spec

    @property
    def is_causal(self) -> bool:
        return self.kind is ModelKind.CAUSAL_LM

    @property
    def has_mlm_head(self) -> bool:
        return self.kind in (ModelKind.MASKED_LM, ModelKind.PRETRAINING)

    @property
    def has_nsp_head(self) -> bool:
        return self.kind is ModelKind.PRETRAINING

    @property
    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def describe(self) -> dict:
        """Plain facts for the Overview page and reports."""
        return {
            "spec": self.spec,
            "architecture": self.architecture,
            "family": self.family,
            "kind": self.kind.value,
            "kind_label": self.kind.label,
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_kv_heads": self.kv_heads,
            "positions": self.fam.positions,
            "norm": self.fam.norm,
            "tied_embeddings": families.tied_embeddings(self.model),
            "d_model": self.d_model,
            "d_head": self.d_head,
            "vocab_size": self.vocab_size,
            "max_positions": self.max_positions,
            "n_parameters": self.n_parameters,
            "provenance": self.provenance.to_dict(),
        }


# --------------------------------------------------------------------------- spec parsing


@dataclass(frozen=True)
class ParsedSpec:
    source: str  # "bundled" | "local" | "hub"
    target: str  # bundled name (with @checkpoint), folder path, or hub id
    revision: str | None


def parse_spec(spec: str) -> ParsedSpec:
    """Split a user spec into its source, target and revision without touching disk or network."""
    if not isinstance(spec, str) or not spec.strip():
        raise InputError("No model given.", "Type a hub id, id@revision, a local folder or pick a bundled model.")
    spec = spec.strip()
    if "\x00" in spec or any(ord(c) < 32 for c in spec):
        raise InputError("The model name contains control characters.", "Retype the model name.")
    if spec.startswith(BUNDLED_PREFIX):
        return ParsedSpec("bundled", spec[len(BUNDLED_PREFIX):], None)
    from . import gguf

    if gguf.is_gguf_spec(spec):  # file.gguf or folder:file.gguf (converted and cached on load)
        return ParsedSpec("gguf", spec, None)
    looks_like_path = spec.startswith(("/", "./", "../", "~")) or os.sep in spec and os.path.exists(
        os.path.expanduser(spec)
    )
    if looks_like_path or os.path.isdir(os.path.expanduser(spec)):
        return ParsedSpec("local", str(Path(os.path.expanduser(spec))), None)
    repo_id, _, revision = spec.partition("@")
    if not repo_id or repo_id.count("/") > 1 or ".." in repo_id:
        raise ModelNotFoundError(f"'{spec}' is neither a hub id, a local folder nor a bundled model.")
    return ParsedSpec("hub", repo_id, revision or None)


# --------------------------------------------------------------------------- model roots (web UI)


def model_roots() -> list[Path]:
    """Folders the web UI may load local models from: INSPECTOR_MODEL_ROOTS, else bundled + HF cache."""
    env = os.environ.get("INSPECTOR_MODEL_ROOTS")
    if env:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()]
    from huggingface_hub.constants import HF_HUB_CACHE

    from .bundled import BUNDLED_ROOT

    return [Path(BUNDLED_ROOT), Path(HF_HUB_CACHE)]


def check_path_allowed(path: str, roots: list[Path] | None = None) -> Path:
    """Refuse local paths outside the model roots: `..` components and symlinks that leave a root."""
    raw = Path(os.path.expanduser(path))
    if ".." in raw.parts:
        raise PathNotAllowedError(f"'{path}' contains '..'.")
    roots = model_roots() if roots is None else roots
    resolved = raw.resolve()
    for root in roots:
        root_resolved = Path(root).expanduser().resolve()
        if resolved == root_resolved or root_resolved in resolved.parents:
            return resolved
    names = ", ".join(str(r) for r in roots)
    raise PathNotAllowedError(f"'{path}' is outside the allowed model folders ({names}).")


# --------------------------------------------------------------------------- device / dtype

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("A GPU was asked for but none is available.", "Choose device 'auto' or 'cpu'.")
    return dev


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """fp32 unless asked otherwise: exact numbers first; bf16/fp16 are opt-in (meant for GPUs)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.float32
    if dtype not in _DTYPES:
        raise InputError(f"Unknown dtype '{dtype}'.", f"Choose one of: auto, {', '.join(sorted(_DTYPES))}.")
    return _DTYPES[dtype]


# --------------------------------------------------------------------------- safety checks
# (inspector/checkpoint_checks.py: files, safetensors headers, config, tokenizer config, memory)


_check_local_weights = checkpoint_checks.check_local_weights
_check_config = checkpoint_checks.check_config


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP probe instead of transformers' minute of retries when offline."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urlparse(endpoint).hostname or "huggingface.co"
    port = urlparse(endpoint).port or 443
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _file_sha256(path: Path | None) -> str | None:
    if path is None or not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()[:16]


# --------------------------------------------------------------------------- kinds


def _auto_class_for(config):
    """Pick the head the checkpoint was saved with: causal LM, MLM, MLM+NSP, or bare encoder."""
    from transformers import (AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM,
                              AutoModelForPreTraining)

    archs = config.architectures or []
    arch = archs[0] if archs else ""
    if arch.endswith(("LMHeadModel", "ForCausalLM")):
        return AutoModelForCausalLM, ModelKind.CAUSAL_LM
    if arch.endswith("ForPreTraining"):
        return AutoModelForPreTraining, ModelKind.PRETRAINING
    if arch.endswith("ForMaskedLM"):
        return AutoModelForMaskedLM, ModelKind.MASKED_LM
    if not arch and config.model_type == "gpt2":
        return AutoModelForCausalLM, ModelKind.CAUSAL_LM
    return AutoModel, ModelKind.ENCODER


def kind_of(model: torch.nn.Module) -> ModelKind:
    name = type(model).__name__
    if name.endswith(("LMHeadModel", "ForCausalLM")):
        return ModelKind.CAUSAL_LM
    if name.endswith("ForPreTraining"):
        return ModelKind.PRETRAINING
    if name.endswith("ForMaskedLM"):
        return ModelKind.MASKED_LM
    return ModelKind.ENCODER


# --------------------------------------------------------------------------- load


def load(spec: str, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto", *,
         allow_pickle: bool = False, device_map: str | dict | None = None,
         restrict_to_roots: bool = False, offload_folder: str | None = None) -> LoadedModel:
    """Load `spec` for inspection. Raises a typed `InspectorError` on every foreseeable failure.

    `restrict_to_roots` (used by the web app) refuses local folders outside `model_roots()`.
    """
    from transformers import AutoConfig, AutoTokenizer

    parsed = parse_spec(spec)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    weights_file: Path | None = None
    revision = parsed.revision

    if parsed.source == "bundled":
        from . import bundled

        folder = bundled.resolve(parsed.target)
        weights_file = _check_local_weights(Path(folder), allow_pickle)
        location, common = str(folder), {"local_files_only": True}
    elif parsed.source == "gguf":
        from . import gguf

        gguf_path = gguf.resolve_file(parsed.target)
        if restrict_to_roots:
            gguf_path = check_path_allowed(str(gguf_path))
        folder, _ = gguf.ensure_converted(gguf_path, check_config=_check_config)
        weights_file = _check_local_weights(folder, allow_pickle)
        location, common = str(folder), {"local_files_only": True}
    elif parsed.source == "local":
        folder = check_path_allowed(parsed.target) if restrict_to_roots else Path(parsed.target)
        weights_file = _check_local_weights(folder, allow_pickle)
        location, common = str(folder), {"local_files_only": True}
    else:
        location, common = parsed.target, {"revision": revision}

    def _from_pretrained(fn, **kw):
        """Cache first; the network once, only if the hub answers a probe."""
        if parsed.source != "hub":
            return fn(location, **common, **kw)
        try:
            return fn(location, **common, local_files_only=True, **kw)
        except OSError:
            pass
        if not _hub_reachable():
            raise HubUnreachableError(
                f"'{parsed.target}' is not in the local Hugging Face cache and the hub cannot be reached.")
        try:
            return fn(location, **common, **kw)
        except OSError as exc:
            msg = str(exc)
            if "revision" in msg.lower() and revision:
                raise ModelNotFoundError(f"Revision '{revision}' of '{parsed.target}' does not exist.") from None
            if "not a valid model identifier" in msg or "404" in msg or "Repository Not Found" in msg:
                raise ModelNotFoundError(f"'{parsed.target}' is not a model on the hub.") from None
            if "connect" in msg.lower():
                raise HubUnreachableError(f"The hub could not be reached while loading '{parsed.target}'.") from None
            raise

    try:
        config = _from_pretrained(AutoConfig.from_pretrained, trust_remote_code=False)
    except ValueError as exc:  # transformers refuses unknown model_type / remote code itself
        msg = str(exc)
        if "trust_remote_code" in msg:
            raise RemoteCodeError("This checkpoint needs trust_remote_code to load its config.") from None
        raise UnsupportedArchitectureError(f"Cannot read this model's config: {msg.splitlines()[0]}") from None
    except (OSError, KeyError) as exc:
        raise CorruptCheckpointError(f"Cannot read config.json of '{spec}': {str(exc).splitlines()[0]}") from None
    _check_config(config)
    if parsed.source != "hub":
        checkpoint_checks.check_tokenizer_config(Path(location))
    checkpoint_checks.check_memory(config, spec, torch_dtype, dev, device_map=device_map)

    auto_cls, kind = _auto_class_for(config)
    load_kwargs = dict(
        dtype=torch_dtype,
        # Gemma 2 refuses anything named "*sdpa*" at load time: eager, then wrap() installs ours
        attn_implementation="eager" if config.model_type == "gemma2" else capture.ATTENTION_NAME,
        trust_remote_code=False,
        use_safetensors=None if allow_pickle else True,
    )
    if device_map is not None:
        load_kwargs["device_map"] = device_map
        if offload_folder is not None:
            load_kwargs["offload_folder"] = offload_folder
    try:
        model = _from_pretrained(auto_cls.from_pretrained, **load_kwargs)
        tokenizer = _from_pretrained(AutoTokenizer.from_pretrained)
        checkpoint_checks.check_tokenizer_settings(getattr(tokenizer, "init_kwargs", {}) or {}, spec)
    except pickle.UnpicklingError as exc:  # allow_pickle: torch.load(weights_only=True) refused the file
        raise checkpoint_checks.pickle_refused(spec, exc) from None
    except torch.OutOfMemoryError:
        release_memory()
        raise OutOfMemoryError(f"Not enough device memory to load '{spec}' in {torch_dtype}.") from None
    except OSError as exc:
        msg = str(exc)
        if "safetensors" in msg.lower() and not allow_pickle:
            raise UnsafeWeightsError(f"'{spec}' has no safetensors weights.") from None
        raise CorruptCheckpointError(f"Cannot load '{spec}': {msg.splitlines()[0]}") from None
    except (RuntimeError, ValueError) as exc:
        raise CorruptCheckpointError(f"Cannot load weights of '{spec}': {str(exc).splitlines()[0][:300]}") from None

    if device_map is None:
        try:
            model.to(dev)
        except torch.OutOfMemoryError:
            del model
            release_memory()
            raise OutOfMemoryError(f"Not enough memory on {dev} for '{spec}' in {torch_dtype}.") from None
    model.eval()
    model.requires_grad_(False)

    commit = getattr(config, "_commit_hash", None) if parsed.source == "hub" else _file_sha256(weights_file)
    quant = None
    if parsed.source != "hub":  # a folder converted from GGUF (a .gguf spec, bundled:smollm2, the cache itself)
        from . import gguf

        quant = gguf.converted_info(Path(location))
        if quant is not None:
            commit = "sha256:" + quant.sha256[:16]  # of the GGUF file: what the user has
    provenance = Provenance(spec=spec.strip(), source=parsed.source,
                            resolved_path=quant.path if quant else str(getattr(model, "name_or_path", location)
                                                                       or location),
                            revision=revision, commit_hash=commit,
                            quantisation=quant.quantisation if quant else None,
                            dequantised_from=quant.summary if quant else None)
    return wrap(model, tokenizer, provenance=provenance, kind=kind)


def _execution_device(model: torch.nn.Module) -> torch.device:
    """Where inputs go: with a device_map, the first real device in it (offloaded modules keep
    their parameters on 'meta' and accelerate runs them on such a device); else the parameters' device."""
    device_map = getattr(model, "hf_device_map", None)
    if device_map:
        for where in device_map.values():
            if where not in ("disk", "meta"):
                return torch.device(f"cuda:{where}" if isinstance(where, int) else where)
        return torch.device("cpu")
    return next(model.parameters()).device


def wrap(model: torch.nn.Module, tokenizer, *, provenance: Provenance | None = None,
         kind: ModelKind | None = None) -> LoadedModel:
    """Wrap an already-built model (tests, notebooks) the same way `load` does."""
    config = model.config
    families.family_of(config)
    capture.install(model)
    n_heads = config.num_attention_heads
    d_model = config.hidden_size
    param = next((p for p in model.parameters() if p.device.type != "meta"), next(model.parameters()))
    max_pos = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None) or 0
    return LoadedModel(
        model=model.eval(),
        tokenizer=tokenizer,
        kind=kind or kind_of(model),
        family=config.model_type,
        architecture=type(model).__name__,
        device=_execution_device(model),
        dtype=param.dtype,
        n_layers=config.num_hidden_layers,
        n_heads=n_heads,
        d_model=d_model,
        d_head=families.head_dim(config),
        vocab_size=config.vocab_size,
        max_positions=int(max_pos),
        provenance=provenance or Provenance(spec=getattr(config, "name_or_path", "") or type(model).__name__,
                                            source="memory", resolved_path=""),
        n_kv_heads=families.n_kv_heads(config),
    )


def release_memory() -> None:
    """Give cached allocator blocks back after a failure (GPU out-of-memory)."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
