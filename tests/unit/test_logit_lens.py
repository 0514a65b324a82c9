"""Logit lens against an independent computation: plain transformers' output_hidden_states, the
final norm written out by hand (F.layer_norm with ln_f's weights) and the unembedding as a matmul."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_gpt2_model
from inspector import analysis
from inspector.analyses.logit_lens import LogitLens
from inspector.errors import NotAvailableError
from inspector.inputs import encode
from inspector.models import wrap

TEXT = "The quick brown fox jumps over the lazy dog. Attention compares queries with keys."


@torch.no_grad()
def reference_gpt2(lm, enc, k: int):
    """(ranks, target probs, top ids) per lens row, from hidden_states by hand."""
    model = lm.model
    with torch.no_grad():
        out = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, output_hidden_states=True,
                    use_cache=False)
    hs = out.hidden_states
    ln = model.transformer.ln_f
    W = model.lm_head.weight.double()  # (V, d), tied to wte
    ids = enc.input_ids[0]
    targets = ids[1:]
    ranks, probs, tops = [], [], []
    for i, h in enumerate(hs):
        h = h[0, :-1].double()
        if i < len(hs) - 1:  # hidden_states[-1] already went through ln_f in GPT-2
            h = F.layer_norm(h, (h.shape[-1],), ln.weight.double(), ln.bias.double(), ln.eps)
        logp = torch.log_softmax(h @ W.T, dim=-1)
        lp_t = logp[torch.arange(len(targets)), targets]
        ranks.append((logp > lp_t[:, None]).sum(1).numpy() + 1)
        probs.append(lp_t.exp().numpy())
        tops.append(logp.topk(k, dim=-1).indices.numpy())
    return np.array(ranks), np.array(probs), np.array(tops), out.logits[0, :-1].double()


@pytest.fixture(scope="module")
def random_gpt2():
    model, tok = tiny_gpt2_model(seed=3, init_range=0.3)  # far from uniform predictions
    return wrap(model, tok)


@pytest.fixture(scope="module")
def gpt2_mini():
    from inspector import models

    return models.load("bundled:gpt2-mini")


@pytest.mark.parametrize("which", ["random_gpt2", "gpt2_mini"])
def test_causal_lens_equals_hidden_states_through_ln_f_and_unembedding(which, request):
    lm = request.getfixturevalue(which)
    enc = encode(lm, TEXT)
    res = analysis.run_analysis("logit_lens", lm, enc, {"top_k": 5})
    ranks, probs, tops, final_logits = reference_gpt2(lm, enc, 5)
    n_layers = lm.model.config.n_layer
    assert res.mode == "causal" and len(res.layer_names) == n_layers + 1
    np.testing.assert_array_equal(res.positions, np.arange(enc.n_tokens - 1))
    np.testing.assert_array_equal(res.target_ids, enc.input_ids[0, 1:].numpy())
    np.testing.assert_array_equal(res.target_rank, ranks)
    np.testing.assert_allclose(res.target_prob, probs, rtol=1e-5, atol=1e-9)
    np.testing.assert_array_equal(res.top_ids, tops)
    # the last row is the model's own prediction
    np.testing.assert_array_equal(res.top_ids[-1, :, 0], final_logits.argmax(-1).numpy())
    np.testing.assert_allclose(res.top_probs[-1, :, 0], torch.softmax(final_logits, -1).max(-1).values.numpy(),
                               rtol=1e-5)
    # the layers really differ (the lens is not reading one row n times)
    assert not np.array_equal(res.target_rank[0], res.target_rank[-1])
    assert res.top1_accuracy[-1] == pytest.approx(float((ranks[-1] == 1).mean()))


def test_masked_lens_predicts_the_original_token_at_masked_positions(tiny_bert_mlm):
    lm = tiny_bert_mlm
    enc = encode(lm, TEXT)
    res = analysis.run_analysis("logit_lens", lm, enc, {"mask_seed": 1, "mask_share": 0.3})
    assert res.mode == "masked" and len(res.positions) >= 3
    assert not enc.special[res.positions].any()
    np.testing.assert_array_equal(res.target_ids, enc.input_ids[0, res.positions].numpy())
    ids = enc.input_ids.clone()
    ids[0, res.positions] = lm.tokenizer.mask_token_id
    model = lm.model
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=enc.attention_mask, token_type_ids=enc.token_type_ids,
                    output_hidden_states=True)
        for i, h in enumerate(out.hidden_states):
            logits = model.cls.predictions(h)[0, res.positions].double()
            logp = torch.log_softmax(logits, -1)
            lp_t = logp[torch.arange(len(res.positions)), torch.as_tensor(res.target_ids)]
            np.testing.assert_array_equal(res.target_rank[i], (logp > lp_t[:, None]).sum(1).numpy() + 1)
            np.testing.assert_allclose(res.target_prob[i], lp_t.exp().numpy(), rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(out.hidden_states[-1].shape[1], enc.n_tokens)
    assert all(res.tokens[p] == lm.tokenizer.mask_token for p in res.positions)


def test_encoder_only_model_is_not_available(tiny_bert):
    from conftest import tiny_bert_model

    model, tok = tiny_bert_model(cls_name="BertModel")
    lm = wrap(model, tok)
    ok, reason = LogitLens().available(lm)
    assert not ok and "encoder-only" in reason
    with pytest.raises(NotAvailableError):
        analysis.run_analysis("logit_lens", lm, encode(lm, TEXT))


def test_settings_are_checked_and_the_view_declares_blocks(random_gpt2):
    from inspector.errors import InputError

    with pytest.raises(InputError):
        analysis.run_analysis("logit_lens", random_gpt2, encode(random_gpt2, TEXT), {"top_k": 0})
    with pytest.raises(InputError):
        analysis.run_analysis("logit_lens", random_gpt2, encode(random_gpt2, TEXT), {"nope": 1})
    res = analysis.run_analysis("logit_lens", random_gpt2, encode(random_gpt2, TEXT))
    blocks = LogitLens().view(res)
    charts = [b for b in blocks if isinstance(b, analysis.Chart)]
    assert {c.kind for c in charts} == {"line", "heatmap"}
    per_layer = next(b for b in blocks if isinstance(b, analysis.Table) and b.title == "Per layer")
    assert [row[2] for row in per_layer.rows] == pytest.approx(res.mean_target_prob.tolist())
    assert "logit_lens" in analysis.registry()


def test_llama_lens_uses_its_rms_norm_and_ends_on_the_logits():
    """A tiny random Llama: rows < L are model.norm(hidden) @ lm_head.T, the last row is the model's logits."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from conftest import make_gpt2_tokenizer

    tok = make_gpt2_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      initializer_range=0.3, tie_word_embeddings=False, attn_implementation="sdpa")
    from inspector.errors import UnsupportedArchitectureError

    try:
        lm = wrap(LlamaForCausalLM(cfg).eval(), tok)
    except UnsupportedArchitectureError:
        pytest.skip("inspector.models does not load Llama-family models yet")
    enc = encode(lm, TEXT)
    res = analysis.run_analysis("logit_lens", lm, enc)
    with torch.no_grad():
        out = lm.model(input_ids=enc.input_ids, output_hidden_states=True, use_cache=False)
        norm, W = lm.model.model.norm, lm.model.lm_head.weight.double()
        targets = enc.input_ids[0, 1:]
        for i in range(len(res.layer_names)):
            if i < len(res.layer_names) - 1:
                h = out.hidden_states[i][0, :-1]
                logits = norm(h).double() @ W.T
            else:
                logits = out.logits[0, :-1].double()
            logp = torch.log_softmax(logits, -1)
            lp_t = logp[torch.arange(len(targets)), targets]
            np.testing.assert_array_equal(res.target_rank[i], (logp > lp_t[:, None]).sum(1).numpy() + 1)
            np.testing.assert_allclose(res.target_prob[i], lp_t.exp().numpy(), rtol=1e-5, atol=1e-12)
    assert len(res.layer_names) == cfg.num_hidden_layers + 1


def test_a_single_token_has_nothing_to_score(random_gpt2):
    enc = encode(random_gpt2, "The")
    if enc.n_tokens != 1:
        pytest.skip("'The' is more than one token for this tokenizer")
    res = analysis.run_analysis("logit_lens", random_gpt2, enc)
    assert res.target_rank.shape == (random_gpt2.model.config.n_layer + 1, 0)
    blocks = LogitLens().view(res)
    assert any(isinstance(b, analysis.Note) and "No position" in b.text for b in blocks)
