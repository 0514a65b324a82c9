"""Exploring heads and tokens: every head's pattern at once, the most peaked head, one token up close.

- `head_grid`: a bertviz-style overview of all layers × heads as small downsampled pattern
  images (block means of the T × T probabilities), computed from kept attention probabilities
  in as few forward passes as memory allows; drawn as ONE raster image (`head_grid_rgb`), never
  as L × H interactive heatmaps, so 12 × 12 heads at a few hundred tokens stay light in a browser.
- `most_peaked_head`: the head with the lowest mean entropy fraction, the natural first head to
  show (layer 0 head 0 is often near uniform and looks blank).
- `inspect_token`: what the model does at one token: the distribution that predicts it (top-k
  with probabilities), its loss, and its attention row in one head.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import capture
from ..errors import InputError
from ..inputs import Encoded, display_token

if TYPE_CHECKING:  # pragma: no cover
    from ..models import LoadedModel

__all__ = ["HeadGrid", "TokenInspection", "head_grid", "head_grid_rgb", "png_bytes", "most_peaked_head",
           "inspect_token"]

# Kept probabilities per forward pass: layers are grouped so that at most this many bytes are held.
_KEPT_BYTES = 128 << 20


@dataclass(frozen=True)
class HeadGrid:
    """Downsampled attention patterns of every layer × head on one text (real tokens only)."""

    n_layers: int
    n_heads: int
    n_tokens: int
    cell: int  # thumbnail side in pixels: min(T, requested cell)
    tokens: tuple[str, ...]  # (T,) display strings
    thumbnails: np.ndarray  # (L, H, cell, cell) float32: block means of the probabilities, rows = queries
    entropy_fraction: np.ndarray  # (L, H) mean over query rows with >= 2 keys of entropy / log(n_keys)
    row_of_token: np.ndarray  # (T,) int64: the thumbnail row that holds query token t


@dataclass(frozen=True)
class TokenInspection:
    """One token up close. `position` indexes the encoded tokens (special tokens included)."""

    position: int
    token: str
    token_id: int
    method: str  # "causal: predicted from the prefix" | "masked: predicted with the token replaced by [MASK]"
    top_tokens: tuple[str, ...]  # (k,) most likely tokens at this position
    top_ids: np.ndarray  # (k,) int64
    top_probs: np.ndarray  # (k,) float64
    prob: float  # probability the model gives the actual token
    loss: float  # −log prob, nats
    rank: int  # 1 = the actual token is the model's first choice
    layer: int
    head: int
    attention_row: np.ndarray  # (T,) float32: attention of this query over all keys in (layer, head)


def _real_tokens(encoded: Encoded) -> np.ndarray:
    return encoded.attention_mask[0].bool().cpu().numpy()


def _block_matrix(n: int, cell: int) -> tuple[np.ndarray, np.ndarray]:
    """(cell, n) averaging matrix mapping n positions onto `cell` blocks, and each position's block."""
    block = (np.arange(n) * cell) // n
    m = np.zeros((cell, n), dtype=np.float64)
    m[block, np.arange(n)] = 1.0
    m /= m.sum(axis=1, keepdims=True)
    return m, block.astype(np.int64)


def head_grid(lm: LoadedModel, encoded: Encoded, cell: int = 48) -> HeadGrid:
    """Every head's attention pattern on `encoded`, downsampled to at most `cell` × `cell`."""
    if not isinstance(cell, int) or cell < 2:
        raise InputError("The thumbnail size must be a whole number of at least 2 pixels.")
    real = _real_tokens(encoded)
    T = int(real.sum())
    if T == 0:
        raise InputError("The input holds no tokens.", "Type or paste some text.")
    cell = min(cell, T)
    avg, row_of = _block_matrix(T, cell)
    per_layer = lm.n_heads * encoded.n_tokens ** 2 * 4
    group = max(1, _KEPT_BYTES // max(per_layer, 1))
    thumbs = np.zeros((lm.n_layers, lm.n_heads, cell, cell), dtype=np.float32)
    frac = np.full((lm.n_layers, lm.n_heads), np.nan)
    for start in range(0, lm.n_layers, group):
        layers = tuple(range(start, min(lm.n_layers, start + group)))
        res = capture.run(lm, encoded.batch(), capture.CaptureOptions(keep_probs_layers=layers, logits=False))
        for layer in layers:
            probs = res.kept[layer].probs[0][:, real][:, :, real].astype(np.float64)  # (H, T, T)
            thumbs[layer] = (avg @ probs @ avg.T).astype(np.float32)  # (H, cell, cell)
        frac[start:start + len(layers)] = res.attention.entropy_fraction[start:start + len(layers)]
    tokens = tuple(t for t, keep in zip(encoded.tokens, real) if keep)
    return HeadGrid(n_layers=lm.n_layers, n_heads=lm.n_heads, n_tokens=T, cell=cell, tokens=tokens,
                    thumbnails=thumbs, entropy_fraction=frac, row_of_token=row_of)


def most_peaked_head(entropy_fraction: np.ndarray) -> tuple[int, int]:
    """(layer, head) with the lowest mean entropy fraction; (0, 0) when no head has a defined one."""
    ef = np.asarray(entropy_fraction, dtype=np.float64)
    if ef.size == 0 or not np.isfinite(ef).any():
        return 0, 0
    layer, head = np.unravel_index(int(np.nanargmin(np.where(np.isfinite(ef), ef, np.nan))), ef.shape)
    return int(layer), int(head)


# --------------------------------------------------------------------------- raster drawing

_INK = np.array([33, 60, 140], dtype=np.float64)  # dark blue for probability 1
_PAPER = np.array([255, 255, 255], dtype=np.float64)
_HIGHLIGHT = np.array([230, 85, 13], dtype=np.uint8)  # orange row marker


def head_grid_rgb(grid: HeadGrid, highlight_token: int | None = None, gap: int = 2) -> np.ndarray:
    """The grid as one RGB image (uint8, rows = layers, columns = heads), each thumbnail scaled to its
    own maximum; with `highlight_token`, that query's row is marked in every head."""
    L, H, c = grid.n_layers, grid.n_heads, grid.cell
    img = np.full((L * (c + gap) + gap, H * (c + gap) + gap, 3), 200, dtype=np.uint8)
    peak = grid.thumbnails.max(axis=(2, 3), keepdims=True)
    norm = np.divide(grid.thumbnails, peak, out=np.zeros_like(grid.thumbnails), where=peak > 0)
    shade = np.sqrt(norm)[..., None]  # sqrt: faint but real mass stays visible
    cells = (_PAPER + (_INK - _PAPER) * shade).round().astype(np.uint8)  # (L, H, c, c, 3)
    row = None
    if highlight_token is not None:
        if not 0 <= int(highlight_token) < grid.n_tokens:
            raise InputError(f"Token {highlight_token} does not exist.",
                             f"Choose a token from 0 to {grid.n_tokens - 1}.")
        row = int(grid.row_of_token[int(highlight_token)])
    for layer in range(L):
        for head in range(H):
            y, x = gap + layer * (c + gap), gap + head * (c + gap)
            img[y:y + c, x:x + c] = cells[layer, head]
            if row is not None:
                img[y + row, x:x + c] = np.maximum(img[y + row, x:x + c] // 2, _HIGHLIGHT // 2) + _HIGHLIGHT // 2
    return img


def png_bytes(rgb: np.ndarray, scale: int = 1) -> bytes:
    """Encode an (h, w, 3) uint8 image as PNG with the standard library only (reports stay offline)."""
    img = np.asarray(rgb, dtype=np.uint8)
    if scale > 1:
        img = img.repeat(scale, axis=0).repeat(scale, axis=1)
    h, w, _ = img.shape
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


# --------------------------------------------------------------------------- token inspector


def _token_logits(lm: LoadedModel, encoded: Encoded, position: int, layer: int) -> tuple[torch.Tensor, np.ndarray, str]:
    """Logits that predict the token at `position`, and the attention row of that query in `layer`."""
    options = capture.CaptureOptions(attention_stats=False, keep_probs_layers=(layer,))
    res = capture.run(lm, encoded.batch(), options)
    probs = res.kept[layer].probs[0]  # (H, T, T)
    if lm.is_causal:
        if position == 0:
            raise InputError("The first token has no prefix to be predicted from.",
                             "Pick a later token: a causal model predicts each token from the ones before it.")
        return res.logits[0, position - 1], probs, "causal: predicted from the tokens before it"
    if not lm.has_mlm_head:
        raise InputError("This model has no language-model head, so it predicts no tokens.",
                         "Pick a causal or masked language model.")
    masked = {k: v.clone() for k, v in encoded.batch().items()}
    masked["input_ids"][0, position] = lm.tokenizer.mask_token_id
    out = capture.run(lm, masked, capture.CaptureOptions(attention_stats=False))
    return out.logits[0, position], probs, "masked: predicted with the token replaced by [MASK]"


def inspect_token(lm: LoadedModel, encoded: Encoded, position: int, layer: int, head: int, k: int = 10) -> TokenInspection:
    """Top-k predictions, probability, loss and rank of the token at `position`, and its attention row."""
    T = encoded.n_tokens
    for value, n, what in ((position, T, "token position"), (layer, lm.n_layers, "layer"),
                           (head, lm.n_heads, "head")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= int(value) < n:
            raise InputError(f"The {what} {value!r} does not exist.", f"Choose a {what} from 0 to {n - 1}.")
    if bool(encoded.special[position]):
        raise InputError(f"Position {position} is a special token ({encoded.tokens[position]}).",
                         "Pick a token of the text itself.")
    if not isinstance(k, int) or k < 1:
        raise InputError("k must be a whole number of at least 1.")
    logits, probs, method = _token_logits(lm, encoded, int(position), int(layer))
    logp = torch.log_softmax(logits.double(), dim=-1)
    token_id = int(encoded.input_ids[0, position])
    k = min(k, logp.shape[-1])
    top = torch.topk(logp, k)
    lp = float(logp[token_id])
    rank = int((logp > logp[token_id]).sum()) + 1
    return TokenInspection(
        position=int(position), token=encoded.tokens[position], token_id=token_id, method=method,
        top_tokens=tuple(display_token(lm.tokenizer, int(i)) for i in top.indices),
        top_ids=top.indices.numpy().astype(np.int64), top_probs=top.values.exp().numpy(),
        prob=float(np.exp(lp)), loss=-lp, rank=rank, layer=int(layer), head=int(head),
        attention_row=np.asarray(probs[head, position], dtype=np.float32),
    )
