"""Every supported decoder family (tiny random configs: GQA, RoPE, RMSNorm, untied head, sliding window,
Gemma's softcapping and query_pre_attn_scalar) through the capture engine, against the independent
reference of family_models.py; logits with capture bit-identical to the same model without it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from family_models import FAMILY_CONFIGS, installed_families, reference_stats, scaling_of, tiny_family_model
from inspector import capture, families
from inspector.errors import UnsupportedArchitectureError
from inspector.inputs import encode_batch
from inspector.models import wrap

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Attention compares queries with keys.",
    "A model reads tokens and predicts the next one, again and again.",
]
FAMS = installed_families()


@pytest.fixture(scope="module", params=FAMS)
def pair(request):
    """(model_type, inspector-wrapped model, separately built plain model with the same weights)."""
    model_type = request.param
    model, tok = tiny_family_model(model_type, seed=1)
    plain_attn = "eager" if getattr(model.config, "attn_logit_softcapping", None) else "sdpa"
    plain, _ = tiny_family_model(model_type, seed=2, attn=plain_attn, tok=tok)
    plain.load_state_dict(model.state_dict())
    return model_type, wrap(model, tok), plain.eval()


def _batch(lm, padding):
    if padding == "none":
        return encode_batch(lm, TEXTS[:1])
    return encode_batch(lm, TEXTS, padding_side=padding)


def test_all_expected_families_are_installed():
    # transformers 5.x ships all of them; a missing one would silently shrink the test matrix
    assert set(FAMS) == set(FAMILY_CONFIGS)


@pytest.mark.parametrize("padding", ["none", "left", "right"])
def test_statistics_match_independent_reference(pair, padding):
    model_type, lm, plain = pair
    batch = _batch(lm, padding)
    T = batch["input_ids"].shape[1]
    windows = families.sliding_windows(plain.config)
    if any(windows):
        assert min(w for w in windows if w) < T, "the window must be shorter than the text to matter"
    got = capture.run(lm, batch).attention
    ref = reference_stats(plain, {k: v for k, v in batch.items() if k != "token_type_ids"})
    assert got.std.shape == (lm.n_layers, lm.n_heads)
    np.testing.assert_array_equal(got.count, ref["count"])
    for name in ("mean", "std", "min", "max", "entropy", "entropy_fraction", "max_prob", "sink_mass"):
        np.testing.assert_allclose(getattr(got, name), ref[name], rtol=1e-4, atol=1e-6,
                                   err_msg=f"{model_type} {padding} {name}")
    np.testing.assert_allclose(got.scaling, scaling_of(plain.config), rtol=1e-12)
    assert got.d_head == plain.config.head_dim


@pytest.mark.parametrize("padding", ["none", "left", "right"])
def test_logits_bit_identical_to_plain_model(pair, padding):
    model_type, lm, plain = pair
    batch = {k: v for k, v in _batch(lm, padding).items() if k != "token_type_ids"}
    res = capture.run(lm, batch)
    with torch.no_grad():
        ref = plain(**batch, use_cache=False).logits
    real = batch["attention_mask"].bool()
    assert torch.equal(res.logits[real], ref[real].float()), model_type


def test_wrap_reads_family_facts(pair):
    model_type, lm, plain = pair
    cfg = plain.config
    assert lm.family == model_type
    assert lm.n_kv_heads == 2 and lm.n_heads == 4 and lm.d_head == cfg.head_dim == 8
    assert lm.fam.positions == "rotary" and lm.fam.norm == "rmsnorm"
    d = lm.describe()
    assert d["n_kv_heads"] == 2 and d["positions"] == "rotary"
    assert d["tied_embeddings"] == (lm.model.lm_head.weight is lm.model.model.embed_tokens.weight)
    assert d["tied_embeddings"] is model_type.startswith("gemma")
    assert families.kv_groups(4, 2) == [[0, 1], [2, 3]]


def test_embedding_outputs_rotary_have_token_only(pair):
    _, lm, plain = pair
    batch = _batch(lm, "none")
    res = capture.run(lm, batch, capture.CaptureOptions(embeddings=True, hidden_states=True))
    assert set(res.embeddings) == {"token"}
    with torch.no_grad():
        ref = plain.model.embed_tokens(batch["input_ids"])  # Gemma's module multiplies by √d itself
    torch.testing.assert_close(res.embeddings["token"], ref.float(), rtol=0, atol=0)


def test_unsupported_family_is_refused_clearly():
    from transformers import FalconConfig, FalconForCausalLM

    from conftest import make_gpt2_tokenizer

    tok = make_gpt2_tokenizer()
    model = FalconForCausalLM(FalconConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                           num_attention_heads=4))
    with pytest.raises(UnsupportedArchitectureError, match="'falcon' is not supported yet"):
        wrap(model, tok)


def test_multimodal_gemma3_wrapper_is_refused():
    class Cfg:
        model_type = "gemma3"
        architectures = ["Gemma3ForConditionalGeneration"]

    with pytest.raises(UnsupportedArchitectureError, match="not supported yet"):
        families.family_of(Cfg())


def test_sliding_windows_per_layer():
    _, _, plain = None, None, tiny_family_model("gemma2")[0]
    assert families.sliding_windows(plain.config) == (4, None)
    assert families.sliding_windows(tiny_family_model("llama")[0].config) == (None, None)
    assert families.sliding_windows(tiny_family_model("mistral")[0].config) == (4, 4)


def test_distance_profile_matches_reference(pair):
    """σ and mean of q·k per |query − key| distance (rotary models show their positions here)."""
    from family_models import reference_logits, reference_qk, reference_valid

    model_type, lm, plain = pair
    batch = {k: v for k, v in _batch(lm, "left").items() if k != "token_type_ids"}
    D = 6
    got = capture.run(lm, batch, capture.CaptureOptions(distance_profile=D)).attention
    assert got.distance_std.shape == (lm.n_layers, lm.n_heads, D + 1)
    T = batch["input_ids"].shape[1]
    dist = np.minimum(np.abs(np.arange(T)[:, None] - np.arange(T)[None, :]), D)
    for layer, (q, k) in enumerate(reference_qk(plain, batch)):
        scores, _ = reference_logits(plain.config, q, k)
        valid = np.broadcast_to(reference_valid(plain.config, batch, layer), scores.shape)
        for h in range(lm.n_heads):
            for d in range(D + 1):
                sel = valid[:, h] & (dist == d)[None]
                vals = scores[:, h][sel]
                assert got.distance_count[layer, h, d] == vals.size, (model_type, layer, h, d)
                if vals.size:
                    np.testing.assert_allclose(got.distance_mean[layer, h, d], vals.mean(), rtol=1e-4, atol=1e-6)
                    np.testing.assert_allclose(got.distance_std[layer, h, d], vals.std(), rtol=1e-4, atol=1e-6)
    # the ordinary statistics are unchanged by the extra reduction
    plain_stats = capture.run(lm, batch).attention
    np.testing.assert_allclose(got.std, plain_stats.std, rtol=1e-6)


def test_output_embeddings_untied_and_tied(pair):
    from scipy.stats import spearmanr

    from inspector.analyses import embeddings

    model_type, lm, plain = pair
    out = embeddings.output_embeddings(lm)
    W_in = plain.model.embed_tokens.weight.detach().double().numpy()
    W_out = plain.lm_head.weight.detach().double().numpy()
    with np.errstate(invalid="ignore"):  # the padding row is all zeros: cosine undefined (NaN)
        cos = (W_in * W_out).sum(1) / (np.linalg.norm(W_in, axis=1) * np.linalg.norm(W_out, axis=1))
    assert out.tied is model_type.startswith("gemma")
    np.testing.assert_allclose(out.row_cosine, cos, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(out.output_norms, np.linalg.norm(W_out, axis=1), rtol=1e-6)
    np.testing.assert_allclose(out.norm_spearman, spearmanr(np.linalg.norm(W_in, axis=1),
                                                             np.linalg.norm(W_out, axis=1)).statistic, rtol=1e-6)
    if out.tied:
        np.testing.assert_allclose(out.row_cosine[np.isfinite(cos)], 1.0, rtol=1e-9)
    else:
        assert abs(out.mean_row_cosine) < 0.5  # independent random matrices


def test_position_table_refused_with_rotary_message(pair):
    from inspector.analyses import embeddings
    from inspector.errors import NotAvailableError

    _, lm, _ = pair
    with pytest.raises(NotAvailableError, match="rotary positions"):
        embeddings.position_embeddings(lm)


def test_causal_loss_equals_plain_model(pair):
    """Per-token loss through inspector's body + head (Gemma 2: with its final logit softcap) equals the
    cross-entropy of the plain model's own logits."""
    from inspector.analyses import loss

    model_type, lm, plain = pair
    rep = loss.causal_token_loss(lm, TEXTS[2])
    ids = torch.tensor([rep.token_ids])
    with torch.no_grad():
        logits = plain(input_ids=ids, use_cache=False).logits[0].double()
    ce = -torch.log_softmax(logits[:-1], dim=-1).gather(1, ids[0, 1:, None])[:, 0]
    np.testing.assert_allclose(rep.ce_nats, ce.numpy(), rtol=1e-5, atol=1e-6, err_msg=model_type)
