"""Checkpoint comparison against independent computations on tiny models.

Expected values come from plain `model(...)` logits with numpy/scipy formulas, the model's own
`labels=` loss, a one-mask-at-a-time loop, and a character → word map built here: never from
inspector.analyses.compare itself.
"""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import log_softmax, rel_entr

from conftest import _TRAIN_TEXT, tiny_bert_model, tiny_gpt2_model
from inspector.analyses import compare as C
from inspector.analyses._common import from_dict, results_equal, to_dict
from inspector.errors import InputError, NotAvailableError
from inspector.models import wrap

SHORT = "The quick brown fox jumps over the lazy dog."
MIXED = "Tiếng Việt có dấu. Emoji 🙂 and CJK 漢字 appear; def f(x): return x**2\n\n  end  "


@pytest.fixture(scope="module")
def gpt2_a():
    return wrap(*tiny_gpt2_model(seed=2, init_range=0.3))


@pytest.fixture(scope="module")
def gpt2_b():
    return wrap(*tiny_gpt2_model(seed=3, init_range=0.3))


@pytest.fixture(scope="module")
def mlm_a():
    return wrap(*tiny_bert_model(seed=2, init_range=0.3, cls_name="BertForMaskedLM"))


@pytest.fixture(scope="module")
def mlm_b():
    return wrap(*tiny_bert_model(seed=3, init_range=0.3, cls_name="BertForMaskedLM"))


def _ids(lm, text):
    return lm.tokenizer(text, add_special_tokens=False)["input_ids"]


def _causal_logits(lm, text):
    """float64 log-probabilities (T, V) of a plain forward on <bos> + text; row t predicts text token t."""
    ids = [lm.tokenizer.bos_token_id] + _ids(lm, text)
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([ids])).logits[0, :-1].double().numpy()
    return log_softmax(logits, axis=-1), np.array(ids[1:])


def _one_mask_at_a_time(lm, text, labels=False):
    """Copy i of [CLS] text [SEP] has content token i masked; returns (copies, content, model output)."""
    tok = lm.tokenizer
    content = _ids(lm, text)
    ids = torch.tensor([[tok.cls_token_id] + content + [tok.sep_token_id]] * len(content))
    rows = torch.arange(len(content))
    ids[rows, rows + 1] = tok.mask_token_id
    with torch.no_grad():
        out = lm.model(input_ids=ids).logits[rows, rows + 1].double().numpy()  # (T, V) at the masked slot
    return content, log_softmax(out, axis=-1)


def _kl(lp, lq):
    return rel_entr(np.exp(lp), np.exp(lq)).sum(-1)


# --------------------------------------------------------------------------- divergences


def test_causal_kl_js_match_numpy(gpt2_a, gpt2_b):
    d = C.token_divergence(gpt2_a, gpt2_b, SHORT, top_k=4)
    la, target = _causal_logits(gpt2_a, SHORT)
    lb, _ = _causal_logits(gpt2_b, SHORT)
    assert d.n_positions == len(target) == len(d.tokens)
    np.testing.assert_array_equal(d.target_ids, target)
    np.testing.assert_allclose(d.kl_ab_nats, _kl(la, lb), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(d.kl_ba_nats, _kl(lb, la), rtol=1e-5, atol=1e-7)
    js = np.array([jensenshannon(np.exp(a), np.exp(b)) ** 2 for a, b in zip(la, lb)])
    np.testing.assert_allclose(d.js_nats, js, rtol=1e-5, atol=1e-7)
    assert np.all(d.js_nats <= math.log(2) + 1e-12) and np.all(d.kl_ab_nats >= 0)
    ent_a = -(np.exp(la) * la).sum(-1)
    np.testing.assert_allclose(d.entropy_a_nats, ent_a, rtol=1e-5)
    np.testing.assert_allclose(d.cross_entropy_ab_nats, -(np.exp(la) * lb).sum(-1), rtol=1e-5)
    assert d.identity_max_abs_residual < 1e-10  # H(P_A, P_B) = H(P_A) + KL(P_A‖P_B)
    np.testing.assert_allclose(d.loss_a_nats, -la[np.arange(len(target)), target], rtol=1e-5)
    np.testing.assert_allclose(d.loss_diff_nats, d.loss_b_nats - d.loss_a_nats)
    # Top-k predictions and the disagreements (largest JS first).
    np.testing.assert_array_equal(d.top_ids_a[:, 0], la.argmax(-1))
    np.testing.assert_allclose(d.top_probs_b[:, 0], np.exp(lb.max(-1)), rtol=1e-5)
    worst = d.disagreements[0]
    assert worst.position == int(np.argmax(js)) and len(worst.top_tokens_a) == 4
    assert worst.top_tokens_b[0] == gpt2_b.tokenizer.decode([int(lb[worst.position].argmax())])
    assert [x.js_nats for x in d.disagreements] == sorted((x.js_nats for x in d.disagreements), reverse=True)


def test_kl_of_a_model_with_itself_is_zero(gpt2_a, mlm_a):
    for lm in (gpt2_a, mlm_a):
        d = C.token_divergence(lm, lm, SHORT)
        assert np.all(d.kl_ab_nats == 0.0) and np.all(d.kl_ba_nats == 0.0)
        np.testing.assert_allclose(d.js_nats, 0.0, atol=1e-12)
        np.testing.assert_array_equal(d.loss_a_nats, d.loss_b_nats)
        assert d.perplexity_a == d.perplexity_b


def test_causal_loss_equals_model_labels_loss(gpt2_a, gpt2_b):
    d = C.token_divergence(gpt2_a, gpt2_b, SHORT)
    for lm, per_token, ppl in ((gpt2_a, d.loss_a_nats, d.perplexity_a), (gpt2_b, d.loss_b_nats, d.perplexity_b)):
        ids = torch.tensor([[lm.tokenizer.bos_token_id] + _ids(lm, SHORT)])
        with torch.no_grad():
            loss = float(lm.model(input_ids=ids, labels=ids).loss)
        assert per_token.mean() == pytest.approx(loss, rel=1e-5)
        assert ppl == pytest.approx(math.exp(loss), rel=1e-5)


def test_causal_without_prefix_skips_first_token(gpt2_a, gpt2_b):
    d = C.token_divergence(gpt2_a, gpt2_b, SHORT, prepend_bos=False)
    ids = torch.tensor([_ids(gpt2_a, SHORT)])
    with torch.no_grad():
        loss = float(gpt2_a.model(input_ids=ids, labels=ids).loss)
    assert d.positions[0] == 1 and d.prefix_token is None
    assert d.mean_loss_a_nats == pytest.approx(loss, rel=1e-5)


def test_long_text_sliding_window(gpt2_a, gpt2_b):
    """Longer than the 64-position context: every token compared; the first window matches a plain forward."""
    d = C.token_divergence(gpt2_a, gpt2_b, _TRAIN_TEXT)
    n = len(_ids(gpt2_a, _TRAIN_TEXT))
    assert n > 64 and d.n_positions == n and d.window == 64
    ids = [gpt2_a.tokenizer.bos_token_id] + _ids(gpt2_a, _TRAIN_TEXT)
    with torch.no_grad():
        la = log_softmax(gpt2_a.model(input_ids=torch.tensor([ids[:64]])).logits[0].double().numpy(), -1)
    np.testing.assert_allclose(d.loss_a_nats[:63], -la[np.arange(63), ids[1:64]], rtol=1e-5)


def test_masked_each_matches_one_mask_at_a_time(mlm_a, mlm_b):
    d = C.token_divergence(mlm_a, mlm_b, SHORT, masking="each")
    content, la = _one_mask_at_a_time(mlm_a, SHORT)
    _, lb = _one_mask_at_a_time(mlm_b, SHORT)
    assert d.masking == "each" and d.n_positions == len(content)
    np.testing.assert_allclose(d.loss_a_nats, -la[np.arange(len(content)), content], rtol=1e-5)
    np.testing.assert_allclose(d.kl_ab_nats, _kl(la, lb), rtol=1e-5, atol=1e-8)
    js = np.array([jensenshannon(np.exp(a), np.exp(b)) ** 2 for a, b in zip(la, lb)])
    np.testing.assert_allclose(d.js_nats, js, rtol=1e-5, atol=1e-8)
    # One position through the model's own labels= loss.
    tok, pos = mlm_a.tokenizer, 2
    ids = torch.tensor([[tok.cls_token_id] + content + [tok.sep_token_id]])
    labels = torch.full_like(ids, -100)
    labels[0, pos + 1] = content[pos]
    ids[0, pos + 1] = tok.mask_token_id
    with torch.no_grad():
        assert d.loss_a_nats[pos] == pytest.approx(float(mlm_a.model(input_ids=ids, labels=labels).loss), rel=1e-5)


def test_masked_seeded_is_one_corruption_for_both(mlm_a, mlm_b):
    d = C.token_divergence(mlm_a, mlm_b, _TRAIN_TEXT[:250], masking="seeded", seed=7)
    tok = mlm_a.tokenizer
    content = np.array(_ids(mlm_a, _TRAIN_TEXT[:250]))
    assert d.masking == "seeded" and d.seed == 7 and "seeded 15 %" in d.objective_label
    assert d.n_positions == round(0.15 * len(content))
    corrupted = content.copy()
    corrupted[d.positions] = d.input_ids
    ids = torch.tensor([[tok.cls_token_id, *corrupted, tok.sep_token_id]])
    labels = torch.full_like(ids, -100)
    labels[0, d.positions + 1] = torch.as_tensor(content[d.positions])
    with torch.no_grad():
        loss_a = float(mlm_a.model(input_ids=ids, labels=labels).loss)
        loss_b = float(mlm_b.model(input_ids=ids, labels=labels).loss)
    assert d.mean_loss_a_nats == pytest.approx(loss_a, rel=1e-5)
    assert d.mean_loss_b_nats == pytest.approx(loss_b, rel=1e-5)


# --------------------------------------------------------------------------- different tokenizers


def _char_words(text):
    """Word index per character; whitespace belongs to the next word (the last one at the end)."""
    words = text.split()
    owner = np.full(len(text), -1)
    pos = 0
    for w, word in enumerate(words):
        start = text.index(word, pos)
        owner[start:start + len(word)] = w
        pos = start + len(word)
    nxt = len(words) - 1
    for i in range(len(text) - 1, -1, -1):
        if owner[i] >= 0 and not text[i].isspace():
            nxt = owner[i]
        elif text[i].isspace():
            owner[i] = nxt
    return words, owner


def test_alignment_across_tokenizers(gpt2_a, mlm_a):
    """Byte-level BPE against WordPiece on accents, emoji, CJK and code."""
    sa = C.score_text(gpt2_a, MIXED)
    sb = C.score_text(mlm_a, MIXED)
    wc = C.align_words(MIXED, sa, sb)
    words, owner = _char_words(MIXED)
    assert wc.words == words  # the same word boundaries for both models
    for score, word_of in ((sa, wc.token_word_a), (sb, wc.token_word_b)):
        for t, (s, e) in enumerate(score.offsets):
            c = next((i for i in range(s, e) if not MIXED[i].isspace()), s)
            assert word_of[t] == owner[c], (t, score.tokens[t], (s, e))
    assert np.all(wc.n_tokens_a >= 1) and np.all(wc.n_tokens_b >= 1)  # every word accounted for
    assert wc.comparable.all()
    # Per-word sums preserve each model's total NLL ...
    assert wc.nll_a_nats.sum() == pytest.approx(sa.total_nll_nats, rel=1e-12)
    assert wc.nll_b_nats.sum() == pytest.approx(sb.total_nll_nats, rel=1e-12)
    # ... which is the model's own labels= loss (causal) and a one-mask-at-a-time PLL (masked).
    ids = torch.tensor([[gpt2_a.tokenizer.bos_token_id] + _ids(gpt2_a, MIXED)])
    with torch.no_grad():
        loss = float(gpt2_a.model(input_ids=ids, labels=ids).loss)
    assert sa.total_nll_nats == pytest.approx(loss * (ids.shape[1] - 1), rel=1e-5)
    content, lp = _one_mask_at_a_time(mlm_a, MIXED)
    assert sb.total_nll_nats == pytest.approx(-lp[np.arange(len(content)), content].sum(), rel=1e-5)
    n_bytes = len(MIXED.encode("utf-8"))
    assert sa.n_bytes == sb.n_bytes == n_bytes
    assert sa.bits_per_byte == pytest.approx(sa.total_nll_nats / math.log(2) / n_bytes)
    np.testing.assert_array_equal(wc.n_bytes, [len(w.encode()) for w in words])
    assert sb.n_unknown >= 1 and sb.lowercases  # emoji → [UNK]; uncased WordPiece
    assert wc.n_whitespace_tokens_a > 0 and wc.n_whitespace_tokens_b == 0


def test_different_tokenizers_report(gpt2_a, mlm_a):
    r = C.compare_models(gpt2_a, mlm_a, MIXED)
    assert not r.same_tokenizer and "vocabularies differ" in r.tokenizer_difference
    assert r.divergence is None and r.divergence_unavailable_reason.startswith("not comparable")
    assert r.words is not None and r.words.score_a.objective == "next-token"
    assert r.words.score_b.objective == "pseudo-log-likelihood"
    assert any("pseudo-log-likelihood" in n for n in r.notes)
    assert r.drift is None and "different architectures" in r.drift_unavailable_reason
    assert r.embedding_drift is None and r.embedding_drift_unavailable_reason
    assert r.attention is not None  # both have 2 layers × 4 heads
    assert not r.attention.same_tokenisation


def test_same_tokenizer_different_kinds():
    """A causal GPT-2 that reads BERT's WordPiece vs a BERT MLM: same ids, different objectives."""
    bert = wrap(*tiny_bert_model(seed=0, cls_name="BertForMaskedLM"))
    model, _ = tiny_gpt2_model(seed=0, vocab_size=bert.tokenizer.vocab_size)
    causal = wrap(model, bert.tokenizer)
    r = C.compare_models(causal, bert, SHORT)
    assert r.same_tokenizer and r.divergence is None
    assert "causal language model" in r.divergence_unavailable_reason
    assert r.words.score_a.prefix_token is None and not r.words.score_a.scored[0]  # no BOS in WordPiece
    assert not r.words.comparable[0] and r.words.comparable[1:].all()
    with pytest.raises(NotAvailableError):
        C.token_divergence(causal, bert, SHORT)


# --------------------------------------------------------------------------- parameters


def test_drift_zero_for_deep_copy_and_only_where_perturbed(gpt2_a):
    twin = wrap(copy.deepcopy(gpt2_a.model), gpt2_a.tokenizer)
    same = C.parameter_drift(gpt2_a, twin)
    assert np.all(same.delta_norm == 0.0) and np.all(same.rel_change == 0.0) and same.n_changed == 0
    nonzero = same.norm_a > 0  # zero-initialised biases have no direction
    np.testing.assert_allclose(same.cosine[nonzero], 1.0, atol=1e-12)
    assert np.isnan(same.cosine[~nonzero]).all()
    assert np.all(same.norm_mean_abs_dgamma == 0.0) and np.all(same.layer_rel_change == 0.0)

    name = "transformer.h.1.attn.c_proj.weight"
    with torch.no_grad():
        dict(twin.model.named_parameters())[name][3, 5] += 0.25
    d = C.parameter_drift(gpt2_a, twin)
    i = d.names.index(name)
    assert d.changed.sum() == 1 and d.changed[i] and d.n_changed == 1
    assert d.delta_norm[i] == pytest.approx(0.25, rel=1e-6) and d.max_abs_delta[i] == pytest.approx(0.25, rel=1e-6)
    a = gpt2_a.model.get_parameter(name).detach().double()
    assert d.rel_change[i] == pytest.approx(d.delta_norm[i] / float(a.norm()), rel=1e-12)
    assert np.all(np.delete(d.delta_norm, i) == 0.0)
    assert d.layer[i] == 1 and d.component[i] == "attention"
    assert d.layer_rel_change[0] == 0.0 and d.layer_rel_change[1] > 0
    assert d.layer_component_rel_change[1, d.components.index("attention")] > 0
    assert d.layer_component_rel_change[1, d.components.index("mlp")] == 0.0


def test_norm_layer_drift(gpt2_a):
    twin = wrap(copy.deepcopy(gpt2_a.model), gpt2_a.tokenizer)
    with torch.no_grad():
        twin.model.transformer.h[0].ln_2.weight += 0.1
        twin.model.transformer.ln_f.bias -= 0.2
    d = C.parameter_drift(gpt2_a, twin)
    k = d.norm_modules.index("transformer.h.0.ln_2")
    assert d.norm_mean_abs_dgamma[k] == pytest.approx(0.1, rel=1e-5) and d.norm_mean_abs_dbeta[k] == 0.0
    f = d.norm_modules.index("transformer.ln_f")
    assert d.norm_layer[f] == -1 and d.norm_mean_abs_dbeta[f] == pytest.approx(0.2, rel=1e-5)
    assert d.component[d.names.index("transformer.h.0.ln_2.weight")] == "norm"
    assert d.outside_rel_change > 0


def test_embedding_drift_and_frequency(gpt2_a):
    twin = wrap(copy.deepcopy(gpt2_a.model), gpt2_a.tokenizer)
    ids = _ids(gpt2_a, SHORT)
    counts = np.bincount(ids, minlength=gpt2_a.vocab_size)
    with torch.no_grad():
        emb = twin.model.get_input_embeddings().weight
        torch.manual_seed(0)
        for tid in np.flatnonzero(counts):  # frequent tokens of the text move more
            emb[tid] += 0.05 * counts[tid] * torch.randn(emb.shape[1])
    e = C.embedding_drift(gpt2_a, twin, SHORT)
    np.testing.assert_array_equal(e.frequency, counts)
    a = gpt2_a.model.get_input_embeddings().weight.detach().double().numpy()
    b = emb.detach().double().numpy()
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    np.testing.assert_allclose(e.cosine, cos, atol=1e-12)
    assert np.all(e.cosine[counts == 0] == pytest.approx(1.0))
    assert e.rho_all > 0 and e.n_seen == int((counts > 0).sum())
    assert set(e.most_drifted_ids[:3]) <= set(np.flatnonzero(counts))


def test_different_layer_counts_not_comparable(gpt2_a):
    deeper = wrap(*tiny_gpt2_model(seed=2, init_range=0.3, n_layer=3))
    r = C.compare_models(gpt2_a, deeper, SHORT)
    assert r.drift is None and r.drift_unavailable_reason == "not comparable: A has 2 layers, B has 3"
    assert r.attention is None and r.attention_unavailable_reason == "not comparable: A has 2 layers, B has 3"
    assert r.embedding_drift is None
    assert r.divergence is not None  # same tokenizer and objective: distributions still compare
    with pytest.raises(NotAvailableError, match="A has 2 layers, B has 3"):
        C.parameter_drift(gpt2_a, deeper)


def test_attention_sigma_matches_capture(gpt2_a, gpt2_b):
    from inspector import capture
    from inspector.inputs import encode

    a = C.attention_sigma(gpt2_a, gpt2_b, SHORT)
    ref = capture.run(gpt2_b, encode(gpt2_b, SHORT).batch()).attention
    np.testing.assert_allclose(a.std_b, ref.std)
    np.testing.assert_allclose(a.std_scaled_b, ref.std_scaled)
    np.testing.assert_allclose(a.std_diff, a.std_b - a.std_a)
    assert a.std_a.shape == (2, 4) and a.same_tokenisation


# --------------------------------------------------------------------------- whole report, input errors


def test_compare_models_same_architecture_roundtrips(gpt2_a, gpt2_b):
    r = C.compare_models(gpt2_a, gpt2_b, SHORT, top_k=3)
    assert r.divergence is not None and r.drift is not None and r.attention is not None
    assert r.embedding_drift is not None and r.words is not None
    assert all(reason is None for reason in (r.divergence_unavailable_reason, r.drift_unavailable_reason,
                                              r.attention_unavailable_reason, r.words_unavailable_reason))
    # The words reuse the divergence's per-token losses.
    assert r.words.total_nll_a_nats == pytest.approx(r.divergence.loss_a_nats.sum(), rel=1e-12)
    back = from_dict(C.ComparisonReport, json.loads(json.dumps(to_dict(r))))
    assert results_equal(r, back)


def test_masked_report_roundtrips(mlm_a, mlm_b):
    r = C.compare_models(mlm_a, mlm_b, SHORT, masking="seeded", seed=3)
    assert r.divergence.masking == "seeded" and r.words.score_a.objective == "pseudo-log-likelihood"
    assert results_equal(r, from_dict(C.ComparisonReport, json.loads(json.dumps(to_dict(r)))))


@pytest.mark.parametrize("text", ["", "   \n", "x"])
def test_bad_text_raises_input_error(gpt2_a, mlm_a, text):
    for b in (gpt2_a, mlm_a):
        with pytest.raises(InputError):
            C.compare_models(gpt2_a, b, text)


def test_bad_settings_raise_input_error(gpt2_a, gpt2_b):
    with pytest.raises(InputError):
        C.compare_models(gpt2_a, gpt2_b, SHORT, top_k=0)
    with pytest.raises(InputError):
        C.compare_models(gpt2_a, gpt2_b, SHORT, masking="half")


def test_encoder_without_head_and_backbone_matching():
    """A bare BertModel against a BertForMaskedLM built on the same weights: no loss, drift on the backbone."""
    enc = wrap(*tiny_bert_model(seed=0, cls_name="BertModel"))
    model, tok = tiny_bert_model(seed=1, cls_name="BertForMaskedLM")
    model.bert.load_state_dict(enc.model.state_dict(), strict=False)  # BertForMaskedLM has no pooler
    mlm = wrap(model, tok)
    r = C.compare_models(enc, mlm, SHORT)
    assert r.divergence is None and r.words is None
    assert "without a language-model head" in r.words_unavailable_reason
    d = r.drift
    assert d is not None and d.n_changed == 0 and len(d.names) == len(list(mlm.model.bert.parameters()))
    assert d.only_in_a == ["pooler.dense.weight", "pooler.dense.bias"]
    assert all(n.startswith("cls.") for n in d.only_in_b)
    np.testing.assert_allclose(r.attention.std_a, r.attention.std_b, rtol=1e-6)
