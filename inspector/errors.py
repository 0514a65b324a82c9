"""Typed errors with a message a user can act on.

Every error the library raises on purpose derives from `InspectorError`; the app, the CLI
and the report show `str(err)` (what went wrong) and `err.hint` (what to do) and never a
traceback.
"""
from __future__ import annotations


class InspectorError(Exception):
    """Base class: `message` says what went wrong, `hint` what the user can do about it."""

    default_hint = ""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def user_message(self) -> str:
        return f"{self.message}\n\n{self.hint}".strip() if self.hint else self.message


class InputError(InspectorError, ValueError):
    """Bad user input: empty text, k out of range, unknown token, ..."""


class ModelNotFoundError(InspectorError):
    default_hint = ("Check the spelling. Use a hub id (gpt2), id@revision, a local folder saved with "
                    "save_pretrained, or a bundled model such as bundled:gpt2-mini.")


class HubUnreachableError(InspectorError):
    default_hint = ("The Hugging Face hub cannot be reached from this machine. Download the model elsewhere "
                    "and copy the folder here (then type its path), put it in the Hugging Face cache, "
                    "or use a bundled model such as bundled:gpt2-mini.")


class UnsafeWeightsError(InspectorError):
    default_hint = ("Only safetensors weights are loaded by default because pickle files can run code. "
                    "If you trust this checkpoint, allow pickle weights explicitly (allow_pickle=True, "
                    "CLI --allow-pickle, or INSPECTOR_ALLOW_PICKLE=1 for the app); they are then loaded "
                    "with torch.load(weights_only=True).")


class RemoteCodeError(InspectorError):
    default_hint = ("This checkpoint asks to run its own Python code (trust_remote_code). inspector never "
                    "runs code from a checkpoint; use a model whose architecture ships with transformers.")


class UnsupportedArchitectureError(InspectorError):
    default_hint = ("Supported now: GPT-2 (gpt2, distilgpt2), BERT (bert, MiniLM) and the Llama-style decoders "
                    "(Llama, SmolLM, Mistral, Qwen2, Qwen3, Gemma, Gemma 2, Gemma 3 text).")


class CorruptCheckpointError(InspectorError):
    default_hint = "The files look damaged or incomplete: download or save the checkpoint again."


class ResourceLimitError(InspectorError):
    default_hint = "Try a shorter text, a smaller batch, or a smaller dtype (bf16/fp16 on GPU)."


class OutOfMemoryError(ResourceLimitError):
    default_hint = ("The device ran out of memory. Try a shorter text, a smaller batch, or a smaller dtype "
                    "(bf16/fp16 on GPU); memory has been released and the app keeps working.")


class NotAvailableError(InspectorError):
    """An analysis that does not apply to this model (e.g. MLM loss on an encoder-only model)."""


class PathNotAllowedError(InspectorError):
    default_hint = ("In the web app, local model folders must lie inside the configured model roots "
                    "(INSPECTOR_MODEL_ROOTS); '..' and symbolic links that leave them are refused.")


class ReportPathError(InspectorError):
    default_hint = "Choose another output path, or pass --overwrite to replace an existing file."
