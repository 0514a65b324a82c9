"""Models too large for one device: loaded with a `device_map` (accelerate), capture still sees every layer.

On a CPU-only machine the only second "device" accelerate offers is the disk: modules mapped to
"disk" keep their parameters on the meta device and accelerate's hooks stream the weights in for
each forward (from the checkpoint's own safetensors file, or from `offload_folder` when it must
write a copy). That is the same hook machinery that splits a model across GPUs and the CPU, so
it exercises the path a large model takes: inspector's attention function runs inside modules
whose weights arrive just in time, and the collector receives query/key from each of them.

"meta" itself is no target: a module mapped to "meta" gets no weights at all, and its forward
fails (`Tensor.item() cannot be called on meta tensors` with transformers 5.23 + accelerate 1.15).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_bert_model, tiny_gpt2_model
from inspector import capture, inputs, models

STAT_FIELDS = ("count", "mean", "std", "min", "max", "entropy", "entropy_fraction", "max_prob")
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Attention compares queries"]


def _save(model, tok, folder):
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    model, tok = tiny_gpt2_model(n_layer=4)
    return _save(model, tok, tmp_path_factory.mktemp("gpt2_4layers"))


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    model, tok = tiny_bert_model(cls_name="BertForMaskedLM", num_hidden_layers=4)
    return _save(model, tok, tmp_path_factory.mktemp("bert_4layers"))


def _assert_same_capture(ref, split, batch, options):
    a = capture.run(ref, batch, options)
    b = capture.run(split, batch, options)
    torch.testing.assert_close(b.logits, a.logits, rtol=0, atol=1e-6)
    assert a.attention.count.shape == (ref.n_layers, ref.n_heads)
    for name in STAT_FIELDS:
        np.testing.assert_allclose(getattr(b.attention, name), getattr(a.attention, name), rtol=1e-6, atol=1e-6,
                                   err_msg=name)
    np.testing.assert_array_equal(b.attention.scaling, a.attention.scaling)
    assert sorted(b.kept) == sorted(a.kept)
    for layer, kept in a.kept.items():
        for name in ("scores", "probs"):
            if getattr(kept, name) is not None:
                np.testing.assert_allclose(getattr(b.kept[layer], name), getattr(kept, name), rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(b.kept[layer].valid, kept.valid)
    if options.hidden_states:
        for ha, hb in zip(a.hidden_states, b.hidden_states):
            torch.testing.assert_close(hb, ha, rtol=0, atol=1e-6)
    return a, b


def _offloaded(lm) -> set[str]:
    """Names of parameters that live on the meta device (their weights come from disk per forward)."""
    return {n for n, p in lm.model.named_parameters() if p.device.type == "meta"}


def test_gpt2_layers_split_between_cpu_and_disk(gpt2_folder, tmp_path):
    device_map = {"transformer.wte": "cpu", "transformer.wpe": "cpu", "transformer.h.0": "cpu",
                  "transformer.h.1": "disk", "transformer.h.2": "disk", "transformer.h.3": "cpu",
                  "transformer.ln_f": "cpu", "lm_head": "cpu"}
    ref = models.load(gpt2_folder, device="cpu")
    split = models.load(gpt2_folder, device_map=device_map, offload_folder=str(tmp_path / "offload"))
    assert split.model.hf_device_map == device_map
    assert split.model.config._attn_implementation == capture.ATTENTION_NAME
    offloaded = _offloaded(split)
    assert offloaded and all(n.startswith(("transformer.h.1.", "transformer.h.2.")) for n in offloaded)
    assert split.device.type == "cpu"

    options = capture.CaptureOptions(keep_probs_layers=(1,), keep_scores_layers=(2,), hidden_states=True)
    # Left padding: the boolean mask must reach the attention calls inside the offloaded layers too.
    batch = inputs.encode_batch(ref, TEXTS, padding_side="left")
    a, b = _assert_same_capture(ref, split, batch, options)
    assert (a.attention.count[1:3] > 0).all()  # the offloaded layers were seen
    # The weights were streamed in for the forward and released again.
    assert _offloaded(split) == offloaded


def test_bert_encoder_layers_on_disk(bert_folder, tmp_path):
    device_map = {"bert.embeddings": "cpu", "bert.encoder.layer.0": "disk", "bert.encoder.layer.1": "cpu",
                  "bert.encoder.layer.2": "disk", "bert.encoder.layer.3": "disk", "cls": "cpu"}
    ref = models.load(bert_folder, device="cpu")
    split = models.load(bert_folder, device_map=device_map, offload_folder=str(tmp_path / "offload"))
    assert _offloaded(split)
    batch = inputs.encode_batch(ref, TEXTS)  # right padding, token_type_ids
    _assert_same_capture(ref, split, batch, capture.CaptureOptions(keep_probs_layers=(3,)))


def test_gpt2_embeddings_and_head_on_disk(gpt2_folder, tmp_path):
    device_map = {"transformer.wte": "disk", "transformer.wpe": "cpu", "transformer.h.0": "cpu",
                  "transformer.h.1": "disk", "transformer.h.2": "disk", "transformer.h.3": "cpu",
                  "transformer.ln_f": "cpu", "lm_head": "disk"}
    ref = models.load(gpt2_folder, device="cpu")
    split = models.load(gpt2_folder, device_map=device_map, offload_folder=str(tmp_path / "offload"))
    assert "transformer.wte.weight" in _offloaded(split)
    batch = inputs.encode_batch(ref, TEXTS, padding_side="left")
    _assert_same_capture(ref, split, batch, capture.CaptureOptions(embeddings=True))
    assert split.device.type == "cpu"
