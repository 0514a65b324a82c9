"""Norm-layer hooks: the one mechanism that reads what every LayerNorm / RMSNorm receives and returns.

`observe_norms(lm, observe)` attaches a forward hook to every norm layer for a `with` block only (removed in
`finally`, under `lm.lock`) and calls `observe(module path, input, output)` for the forwards run in the
context that opened it (a ContextVar, as capture's attention sink): LayerNorm's statistics
(`capture.run(..., norms=True)` -> `NormStats`), decoder_signals' massive activations and the corpus job's
RMS all go through it. `capture` re-exports these names.
"""
from __future__ import annotations

import contextvars
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import torch

if TYPE_CHECKING:  # pragma: no cover
    from .capture import _Collector
    from .models import LoadedModel

_active_norms: contextvars.ContextVar["Callable | None"] = contextvars.ContextVar(
    "inspector_active_norms", default=None)


def is_norm_layer(module: torch.nn.Module) -> bool:
    """A normalisation layer with a learned gain: LayerNorm and every RMSNorm-style class."""
    if "Norm" not in type(module).__name__:
        return False
    weight = module._parameters.get("weight") if hasattr(module, "_parameters") else None
    if not isinstance(weight, torch.Tensor) or weight.dim() != 1:
        return False
    return isinstance(module, torch.nn.LayerNorm) or hasattr(module, "eps") or hasattr(module, "variance_epsilon")


def find_norm_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(module path, module) of every norm layer, in registration order (not execution order)."""
    return [(name, m) for name, m in model.named_modules() if name and is_norm_layer(m)]


@dataclass
class NormStats:
    """What one norm layer did to the activations of one forward pass, over real tokens only (N of them).

    Element figures are over all (token, feature) values, population std; per-token arrays have shape (N,)."""

    n: int  # real tokens seen
    input_mean: float
    input_std: float
    output_mean: float
    output_std: float
    input_token_mean: np.ndarray  # (N,) mean over features of each token's input (what LayerNorm subtracts)
    input_token_std: np.ndarray  # (N,) std over features (what LayerNorm divides by)
    input_token_rms: np.ndarray  # (N,) root mean square (what RMSNorm divides by)
    output_token_std: np.ndarray  # (N,) std over features of each token's output


class _NormCollector:
    """Per norm layer statistics of the forwards run in the context that made it (the last call wins)."""

    def __init__(self, token_mask: torch.Tensor | None):
        self.token_mask = token_mask  # (B, T) bool, True = real token
        self.data: dict[str, NormStats] = {}  # filled in execution order
        self.layers: list[str] = []  # every hooked layer, registration order

    @torch.no_grad()
    def observe(self, name: str, x: torch.Tensor, y: torch.Tensor) -> None:
        x2 = x.detach().float().reshape(-1, x.shape[-1])  # (B·T, d)
        y2 = y.detach().float().reshape(-1, y.shape[-1])
        m = self.token_mask
        if m is not None and m.numel() == x2.shape[0]:
            keep = m.reshape(-1).to(x2.device)
            x2, y2 = x2[keep], y2[keep]  # (N, d)
        self.data[name] = NormStats(
            n=x2.shape[0],
            input_mean=x2.mean().item(), input_std=x2.std(correction=0).item(),
            output_mean=y2.mean().item(), output_std=y2.std(correction=0).item(),
            input_token_mean=x2.mean(dim=-1).double().cpu().numpy(),
            input_token_std=x2.std(dim=-1, correction=0).double().cpu().numpy(),
            input_token_rms=x2.pow(2).mean(dim=-1).sqrt().double().cpu().numpy(),
            output_token_std=y2.std(dim=-1, correction=0).double().cpu().numpy(),
        )


def _first_tensor(args: tuple, kwargs: dict) -> torch.Tensor | None:
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, torch.Tensor):
            return a
    return None


@contextmanager
def observe_norms(lm: LoadedModel, observe: Callable[[str, torch.Tensor, torch.Tensor], None]) -> Iterator[None]:
    """`observe(module path, input, output)` for every norm-layer call of the forwards run in this context.

    The one norm-layer hook mechanism (LayerNorm statistics, massive activations, corpus RMS all use it): a
    forward hook on every norm layer, attached for the block only and removed in `finally`. A hook records
    only while `observe` is the observer active in the context running the forward, so a plain forward by
    another thread (its own context) passes through untouched. `lm.lock` is held while the hooks exist:
    other hook users (Captum, another capture) wait rather than see them."""
    handles = []

    def make(name: str):
        def hook(mod, args, kwargs, output):
            if _active_norms.get() is not observe:
                return  # another session's forward on the shared model: not ours
            x = _first_tensor(args, kwargs)
            y = output[0] if isinstance(output, tuple) else output
            if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
                observe(name, x, y)
        return hook

    with getattr(lm, "lock", None) or nullcontext():
        token = _active_norms.set(observe)
        try:
            for name, module in find_norm_layers(lm.model):
                handles.append(module.register_forward_hook(make(name), with_kwargs=True))
            yield
        finally:
            for h in handles:
                h.remove()
            _active_norms.reset(token)


@contextmanager
def _norm_hooks(lm: LoadedModel, norms: _NormCollector) -> Iterator[_NormCollector]:
    """`observe_norms` feeding a NormStats collector (CaptureOptions.norms)."""
    norms.layers.extend(name for name, _ in find_norm_layers(lm.model))
    with observe_norms(lm, norms.observe):
        yield norms


def norm_stats(collector: "_Collector") -> dict[str, NormStats] | None:
    """module path -> NormStats of every norm layer `collector` saw, in registration order (None: norms off)."""
    if collector.norms is None:
        return None
    data = collector.norms.data
    return {name: data[name] for name in collector.norms.layers if name in data}
