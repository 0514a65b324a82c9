"""All-heads grid, most peaked head and the token inspector against eager attention and plain logits.

The reference is a second copy of each model with eager attention and `output_attentions=True`:
its probabilities, block-averaged by explicit loops, and its own logits. Nothing of
inspector.capture computes an expected value.
"""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from conftest import tiny_bert_model, tiny_gpt2_model
from inspector.analyses import heads
from inspector.errors import InputError
from inspector.inputs import encode
from inspector.models import wrap

TEXT = "Attention compares queries with keys; the scores are scaled by the square root of the head size."


def _pair(family: str):
    build = tiny_gpt2_model if family == "gpt2" else tiny_bert_model
    kwargs = {} if family == "gpt2" else {"cls_name": "BertForMaskedLM"}
    model, tok = build(seed=3, init_range=0.3, **kwargs)
    eager, _ = build(seed=4, init_range=0.3, attn_implementation="eager", **kwargs)
    eager.load_state_dict(model.state_dict())
    return wrap(model, tok), eager.eval()


@pytest.fixture(scope="module", params=["gpt2", "bert"])
def pair(request):
    return request.param, *_pair(request.param)


def _eager(eager, enc):
    kwargs = dict(enc.batch(), output_attentions=True)
    with torch.no_grad():
        out = eager(**kwargs)
    return out, [a[0].double().numpy() for a in out.attentions]  # L × (H, T, T)


def _block_mean(p: np.ndarray, cell: int) -> np.ndarray:
    T = p.shape[-1]
    out = np.zeros((cell, cell))
    for a in range(cell):
        rows = [i for i in range(T) if (i * cell) // T == a]
        for b in range(cell):
            cols = [j for j in range(T) if (j * cell) // T == b]
            out[a, b] = p[np.ix_(rows, cols)].mean()
    return out


@pytest.mark.parametrize("cell", [5, 48])
def test_grid_thumbnails_are_block_means_of_eager_attention(pair, cell):
    family, lm, eager = pair
    enc = encode(lm, TEXT)
    grid = heads.head_grid(lm, enc, cell=cell)
    _, att = _eager(eager, enc)
    T = enc.n_tokens
    assert grid.cell == min(cell, T) and grid.thumbnails.shape == (lm.n_layers, lm.n_heads, grid.cell, grid.cell)
    for layer in range(lm.n_layers):
        for head in range(lm.n_heads):
            np.testing.assert_allclose(grid.thumbnails[layer, head], _block_mean(att[layer][head], grid.cell),
                                       atol=1e-5, err_msg=f"{family} L{layer} H{head}")
    assert grid.row_of_token[0] == 0 and grid.row_of_token[-1] == grid.cell - 1


def test_grid_groups_layers_when_memory_is_short(monkeypatch):
    lm, eager = _pair("gpt2")
    enc = encode(lm, TEXT)
    whole = heads.head_grid(lm, enc, cell=8)
    monkeypatch.setattr(heads, "_KEPT_BYTES", 1)  # one layer per forward pass
    grouped = heads.head_grid(lm, enc, cell=8)
    np.testing.assert_array_equal(whole.thumbnails, grouped.thumbnails)
    np.testing.assert_array_equal(whole.entropy_fraction, grouped.entropy_fraction)


def test_most_peaked_head_is_the_lowest_entropy_fraction(pair):
    family, lm, eager = pair
    enc = encode(lm, TEXT)
    grid = heads.head_grid(lm, enc)
    _, att = _eager(eager, enc)
    ref = np.zeros((lm.n_layers, lm.n_heads))
    for layer, a in enumerate(att):
        for h in range(lm.n_heads):
            fr = []
            for i in range(a.shape[1]):
                p = a[h, i][a[h, i] > 0]
                if p.size >= 2:
                    fr.append(-(p * np.log(p)).sum() / math.log(p.size))
            ref[layer, h] = np.mean(fr)
    np.testing.assert_allclose(grid.entropy_fraction, ref, rtol=1e-4)
    assert heads.most_peaked_head(grid.entropy_fraction) == np.unravel_index(np.argmin(ref), ref.shape)
    assert heads.most_peaked_head(np.array([[np.nan, 0.7], [0.2, np.nan]])) == (1, 0)
    assert heads.most_peaked_head(np.full((2, 2), np.nan)) == (0, 0)


def test_grid_image_and_png_round_trip():
    from PIL import Image

    lm, _ = _pair("gpt2")
    grid = heads.head_grid(lm, encode(lm, TEXT), cell=6)
    plain = heads.head_grid_rgb(grid, gap=1)
    marked = heads.head_grid_rgb(grid, highlight_token=3, gap=1)
    assert plain.shape == (lm.n_layers * 7 + 1, lm.n_heads * 7 + 1, 3)
    changed_rows = np.nonzero((plain != marked).any(axis=(1, 2)))[0]
    row = int(grid.row_of_token[3])
    assert set(changed_rows) == {1 + layer * 7 + row for layer in range(lm.n_layers)}
    decoded = np.asarray(Image.open(io.BytesIO(heads.png_bytes(marked, scale=2))).convert("RGB"))
    np.testing.assert_array_equal(decoded, marked.repeat(2, axis=0).repeat(2, axis=1))
    with pytest.raises(InputError, match="does not exist"):
        heads.head_grid_rgb(grid, highlight_token=grid.n_tokens)


def test_token_inspector_matches_plain_logits_and_eager_attention(pair):
    family, lm, eager = pair
    enc = encode(lm, TEXT)
    pos = 5
    got = heads.inspect_token(lm, enc, pos, layer=1, head=2, k=4)
    batch = enc.batch()
    if family == "gpt2":
        with torch.no_grad():
            logits = eager(**batch).logits[0, pos - 1]
    else:
        batch = {k: v.clone() for k, v in batch.items()}
        batch["input_ids"][0, pos] = lm.tokenizer.mask_token_id
        with torch.no_grad():
            logits = eager(**batch).logits[0, pos]
    p = torch.softmax(logits.double(), -1).numpy()
    tid = int(enc.input_ids[0, pos])
    order = np.argsort(-p)
    np.testing.assert_array_equal(got.top_ids, order[:4])
    np.testing.assert_allclose(got.top_probs, p[order[:4]], rtol=1e-5)
    assert got.prob == pytest.approx(p[tid], rel=1e-5)
    assert got.loss == pytest.approx(-math.log(p[tid]), rel=1e-5)
    assert got.rank == int(np.nonzero(order == tid)[0][0]) + 1
    _, att = _eager(eager, enc)
    np.testing.assert_allclose(got.attention_row, att[1][2, pos], atol=1e-5)


def test_token_inspector_refuses_bad_positions(tiny_gpt2, tiny_bert_mlm):
    enc = encode(tiny_gpt2, TEXT)
    with pytest.raises(InputError, match="no prefix"):
        heads.inspect_token(tiny_gpt2, enc, 0, 0, 0)
    for bad in (-1, enc.n_tokens, 1.5, True):
        with pytest.raises(InputError, match="does not exist"):
            heads.inspect_token(tiny_gpt2, enc, bad, 0, 0)
    benc = encode(tiny_bert_mlm, "A cat sat.")
    with pytest.raises(InputError, match="special token"):
        heads.inspect_token(tiny_bert_mlm, benc, 0, 0, 0)
