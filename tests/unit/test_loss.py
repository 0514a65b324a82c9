"""Per-token loss analyses against independent computations with the model's own forward and loss.

Expected values come from `model(..., labels=...)`, plain softmax of `model(...).logits`, a
Hugging Face-guide style sliding-window loop, a one-mask-at-a-time PLL loop and torch.autograd
on the full model: never from inspector.analyses.loss itself.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import _TRAIN_TEXT, tiny_bert_model, tiny_gpt2_model
from inspector.analyses import loss as L
from inspector.analyses._common import from_dict, results_equal, to_dict
from inspector.errors import InputError, NotAvailableError
from inspector.inputs import encode
from inspector.models import wrap

SHORT = "The quick brown fox jumps over the lazy dog."
LONG = _TRAIN_TEXT  # ~210 tokens: more than three times the tiny models' 64 positions


@pytest.fixture(scope="module")
def gpt2():
    model, tok = tiny_gpt2_model(seed=2, init_range=0.3)  # a peaked, non-uniform predictor
    return wrap(model, tok)


@pytest.fixture(scope="module")
def bert_mlm():
    model, tok = tiny_bert_model(seed=2, init_range=0.3, cls_name="BertForMaskedLM")
    return wrap(model, tok)


@pytest.fixture(scope="module")
def bert_pt():
    model, tok = tiny_bert_model(seed=2, init_range=0.3, cls_name="BertForPreTraining")
    return wrap(model, tok)


@pytest.fixture(scope="module")
def bert_encoder():
    from transformers import BertModel

    model, tok = tiny_bert_model(seed=2, init_range=0.3, cls_name="BertModel")
    assert type(model) is BertModel
    return wrap(model, tok)


def _ids(lm, text):
    return torch.tensor([lm.tokenizer(text)["input_ids"]])


# --------------------------------------------------------------------------- causal LM


def test_causal_mean_ce_equals_model_labels_loss(gpt2):
    rep = L.causal_token_loss(gpt2, SHORT, top_k=5)
    ids = _ids(gpt2, SHORT)
    with torch.no_grad():
        out = gpt2.model(ids, labels=ids, use_cache=False)
    assert rep.n_scored == ids.shape[1] - 1
    np.testing.assert_array_equal(rep.positions, np.arange(1, ids.shape[1]))
    np.testing.assert_array_equal(rep.token_ids, ids[0].numpy())
    assert rep.mean_ce_nats == pytest.approx(float(out.loss), rel=1e-6)
    assert rep.perplexity == pytest.approx(math.exp(float(out.loss)), rel=1e-6)
    assert rep.n_windows == 1

    # Per-token figures from a plain softmax of the model's logits.
    logp = torch.log_softmax(out.logits[0, :-1].double(), dim=-1)  # predicts tokens 1..T-1
    target = ids[0, 1:]
    true = logp[torch.arange(len(target)), target]
    np.testing.assert_allclose(rep.ce_nats, -true.numpy(), rtol=1e-5)
    np.testing.assert_allclose(rep.ce_bits, -true.numpy() / math.log(2), rtol=1e-5)
    np.testing.assert_allclose(rep.surprisal_bits, rep.ce_bits)
    np.testing.assert_allclose(rep.prob, true.exp().numpy(), rtol=1e-5)
    ent = -(logp.exp() * logp).sum(-1)
    np.testing.assert_allclose(rep.entropy_nats, ent.numpy(), rtol=1e-4)
    np.testing.assert_allclose(rep.entropy_bits, ent.numpy() / math.log(2), rtol=1e-4)
    expected_rank = (logp > true[:, None]).sum(-1) + 1
    np.testing.assert_array_equal(rep.rank, expected_rank.numpy())
    top = logp.topk(5, dim=-1)
    np.testing.assert_array_equal(rep.top_ids, top.indices.numpy())
    np.testing.assert_allclose(rep.top_probs, top.values.exp().numpy(), rtol=1e-5)
    assert rep.top_tokens[0][0] == gpt2.tokenizer.decode([int(top.indices[0, 0])])
    np.testing.assert_array_equal(rep.context_len, np.arange(1, ids.shape[1]))


def _hf_guide_nll(model, ids: torch.Tensor, max_length: int, stride: int) -> tuple[float, int, int]:
    """The loop of Hugging Face's "Perplexity of fixed-length models" guide, one window per forward.

    Counts the scored tokens as the labels that survive the model's internal shift (the guide's
    "- batch_size" correction is exact only for the first window).
    """
    seq_len = ids.size(1)
    nll_sum, n_tokens, prev_end_loc, n_windows = 0.0, 0, 0, 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc
        input_ids = ids[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            outputs = model(input_ids, labels=target_ids, use_cache=False)
        num_loss_tokens = int((target_ids[:, 1:] != -100).sum())
        nll_sum += float(outputs.loss) * num_loss_tokens
        n_tokens += num_loss_tokens
        prev_end_loc = end_loc
        n_windows += 1
        if end_loc == seq_len:
            break
    return nll_sum, n_tokens, n_windows


@pytest.mark.parametrize("stride,batch_size", [(16, 8), (32, 3), (63, 2), (8, 64)])
def test_sliding_window_equals_hf_guide_loop(gpt2, stride, batch_size):
    ids = _ids(gpt2, LONG)
    assert ids.shape[1] > 3 * gpt2.max_positions
    nll, n, n_windows = _hf_guide_nll(gpt2.model, ids, gpt2.max_positions, stride)
    rep = L.causal_token_loss(gpt2, LONG, stride=stride, batch_size=batch_size)
    assert rep.n_scored == n == ids.shape[1] - 1
    np.testing.assert_array_equal(rep.positions, np.arange(1, ids.shape[1]))  # every token once
    assert rep.ce_nats.sum() == pytest.approx(nll, rel=1e-5)
    assert rep.perplexity == pytest.approx(math.exp(nll / n), rel=1e-5)
    assert rep.window == gpt2.max_positions and rep.stride == stride and rep.n_windows == n_windows
    # After the first window each prediction sees at least window - stride tokens.
    assert rep.context_len.max() <= gpt2.max_positions - 1
    assert rep.context_len[gpt2.max_positions:].min() >= gpt2.max_positions - stride

    score = L.score_corpus(gpt2, LONG, window=gpt2.max_positions, stride=stride, batch_size=batch_size)
    nll_sum, n_tokens, ppl, tps = score  # unpacks like a tuple
    assert n_tokens == n
    assert nll_sum == pytest.approx(nll, rel=1e-5)
    assert ppl == pytest.approx(math.exp(nll / n), rel=1e-5)
    assert tps > 0


@pytest.mark.parametrize("window,stride", [(40, 10), (8, 1), (2, 1)])
def test_score_corpus_smaller_window_and_ids_input(gpt2, window, stride):
    ids = _ids(gpt2, LONG if window > 8 else SHORT)
    nll, n, n_windows = _hf_guide_nll(gpt2.model, ids, window, stride)
    from_ids = L.score_corpus(gpt2, ids[0].tolist(), window=window, stride=stride, batch_size=5)
    from_array = L.score_corpus(gpt2, ids[0].numpy(), window=window, stride=stride, batch_size=16)
    assert from_ids.n_tokens == from_array.n_tokens == n == ids.shape[1] - 1
    assert from_ids.n_windows == from_array.n_windows == n_windows
    assert from_ids.nll_sum == pytest.approx(nll, rel=1e-5)
    assert from_array.nll_sum == pytest.approx(nll, rel=1e-5)


def test_causal_bad_input(gpt2):
    for bad in ("", "   \n\t "):
        with pytest.raises(InputError):
            L.causal_token_loss(gpt2, bad)
    one_token = next(t for t in ("a", "x", "T") if len(gpt2.tokenizer(t)["input_ids"]) == 1)
    with pytest.raises(InputError, match="at least 2"):
        L.causal_token_loss(gpt2, one_token)
    for stride in (0, -3, gpt2.max_positions, gpt2.max_positions + 10):
        with pytest.raises(InputError, match="stride"):
            L.causal_token_loss(gpt2, LONG, stride=stride)
    for window in (1, gpt2.max_positions + 1):
        with pytest.raises(InputError, match="window"):
            L.causal_token_loss(gpt2, SHORT, window=window)
    with pytest.raises(InputError):
        L.causal_token_loss(gpt2, SHORT, top_k=0)
    with pytest.raises(InputError):
        L.score_corpus(gpt2, [5], window=16, stride=8)
    with pytest.raises(InputError):
        L.score_corpus(gpt2, [1, 2, gpt2.vocab_size], window=16, stride=8)
    with pytest.raises(InputError, match="stride"):
        L.score_corpus(gpt2, LONG, window=16, stride=16)


# --------------------------------------------------------------------------- masked LM


def test_mlm_loss_equals_model_labels_loss_on_same_masking(bert_mlm):
    text = "the quick brown fox jumps over the lazy dog while the cat sleeps in the warm sun."
    rep = L.masked_lm_loss(bert_mlm, text, seed=3)
    tok = bert_mlm.tokenizer
    content = tok(text, add_special_tokens=False)["input_ids"]
    np.testing.assert_array_equal(rep.token_ids, content)
    assert rep.n_chosen == round(0.15 * len(content)) and rep.n_chunks == 1
    corrupted = list(content)
    for pos, rid in zip(rep.positions, rep.replacement_ids):
        corrupted[pos] = int(rid)
    ids = torch.tensor([[tok.cls_token_id] + corrupted + [tok.sep_token_id]])
    labels = torch.full_like(ids, -100)
    labels[0, rep.positions + 1] = torch.as_tensor(np.array(content)[rep.positions])
    with torch.no_grad():
        out = bert_mlm.model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)
    assert rep.loss == pytest.approx(float(out.loss), rel=1e-5)
    logp = torch.log_softmax(out.logits[0, rep.positions + 1].double(), -1)
    true = logp[torch.arange(rep.n_chosen), torch.as_tensor(rep.original_ids)]
    np.testing.assert_allclose(rep.ce_nats, -true.numpy(), rtol=1e-5)
    np.testing.assert_array_equal(rep.rank, ((logp > true[:, None]).sum(-1) + 1).numpy())
    np.testing.assert_array_equal(rep.top_ids[:, 0], logp.argmax(-1).numpy())
    # Same seed, same masking; another seed, another one.
    again = L.masked_lm_loss(bert_mlm, text, seed=3)
    assert results_equal(rep, again)
    other = L.masked_lm_loss(bert_mlm, text, seed=4)
    assert not np.array_equal(other.positions, rep.positions) or not np.array_equal(
        other.replacement_kind, rep.replacement_kind)


def test_mlm_long_text_is_chunked_and_matches_labels_loss(bert_mlm):
    tok = bert_mlm.tokenizer
    text = LONG
    rep = L.masked_lm_loss(bert_mlm, text, seed=0)
    content = tok(text, add_special_tokens=False)["input_ids"]
    per = bert_mlm.max_positions - 2
    assert rep.n_chunks == math.ceil(len(content) / per) > 1
    corrupted = np.array(content)
    corrupted[rep.positions] = rep.replacement_ids
    labels_flat = np.full(len(content), -100)
    labels_flat[rep.positions] = rep.original_ids
    rows, lab_rows, masks = [], [], []
    for s in range(0, len(content), per):
        seg, lab = corrupted[s:s + per].tolist(), labels_flat[s:s + per].tolist()
        pad = bert_mlm.max_positions - len(seg) - 2
        rows.append([tok.cls_token_id] + seg + [tok.sep_token_id] + [tok.pad_token_id] * pad)
        lab_rows.append([-100] + lab + [-100] * (pad + 1))
        masks.append([1] * (len(seg) + 2) + [0] * pad)
    with torch.no_grad():
        out = bert_mlm.model(input_ids=torch.tensor(rows), attention_mask=torch.tensor(masks),
                             labels=torch.tensor(lab_rows))
    assert rep.loss == pytest.approx(float(out.loss), rel=1e-5)


def test_mlm_empirical_split_near_80_10_10(bert_mlm):
    text = (_TRAIN_TEXT * 30)[:19000]
    rep = L.masked_lm_loss(bert_mlm, text, seed=11)
    n = rep.n_candidates
    assert n > 3000
    assert rep.n_chosen == round(0.15 * n)
    assert rep.n_mask + rep.n_random + rep.n_unchanged == rep.n_chosen
    assert rep.n_mask / rep.n_chosen == pytest.approx(0.8, abs=0.05)
    assert rep.n_random / rep.n_chosen == pytest.approx(0.1, abs=0.04)
    assert rep.n_unchanged / rep.n_chosen == pytest.approx(0.1, abs=0.04)
    kind = rep.replacement_kind
    tok = bert_mlm.tokenizer
    assert np.all(rep.replacement_ids[kind == L.REPLACED_BY_MASK] == tok.mask_token_id)
    np.testing.assert_array_equal(rep.replacement_ids[kind == L.KEPT_UNCHANGED],
                                  rep.original_ids[kind == L.KEPT_UNCHANGED])
    assert not np.isin(rep.replacement_ids[kind == L.REPLACED_BY_RANDOM], tok.all_special_ids).any()
    assert len(np.unique(rep.positions)) == rep.n_chosen
    assert rep.loss == pytest.approx(float(np.mean(rep.ce_nats)))


def test_pll_equals_one_mask_at_a_time_loop(bert_mlm):
    text = "the cat sat on the mat, and then it slept."
    rep = L.pseudo_log_likelihood(bert_mlm, text, batch_size=4)
    tok = bert_mlm.tokenizer
    ids = torch.tensor([tok(text)["input_ids"]])  # [CLS] ... [SEP]
    expected = []
    for i in range(1, ids.shape[1] - 1):
        masked = ids.clone()
        masked[0, i] = tok.mask_token_id
        with torch.no_grad():
            logits = bert_mlm.model(input_ids=masked, attention_mask=torch.ones_like(masked)).logits
        expected.append(float(torch.log_softmax(logits[0, i].double(), -1)[ids[0, i]]))
    expected = np.array(expected)
    assert rep.n_tokens == len(expected)
    np.testing.assert_allclose(rep.log_prob, expected, rtol=1e-5)
    assert rep.pll == pytest.approx(expected.sum(), rel=1e-6)
    assert rep.pseudo_perplexity == pytest.approx(math.exp(-expected.mean()), rel=1e-6)
    assert np.all(rep.log_prob <= 0)


def test_next_sentence_probability(bert_pt):
    rep = L.next_sentence(bert_pt, "the cat sat on the mat.", "then it slept.")
    tok = bert_pt.tokenizer
    enc = tok("the cat sat on the mat.", "then it slept.", return_tensors="pt")
    with torch.no_grad():
        logits = bert_pt.model(**enc).seq_relationship_logits[0].double()
    p = torch.softmax(logits, -1)
    assert rep.p_is_next == pytest.approx(float(p[0]), rel=1e-6)
    assert rep.p_is_next + rep.p_not_next == pytest.approx(1.0)
    assert rep.loss_if_next == pytest.approx(-math.log(float(p[0])), rel=1e-6)
    np.testing.assert_array_equal(rep.token_type_ids, enc["token_type_ids"][0].numpy())
    assert rep.prediction == ("IsNext" if p[0] >= p[1] else "NotNext")


# --------------------------------------------------------------------------- models without the head


def test_not_available_without_the_relevant_head(bert_encoder, gpt2, bert_mlm):
    with pytest.raises(NotAvailableError, match="encoder-only"):
        L.masked_lm_loss(bert_encoder, SHORT)
    with pytest.raises(NotAvailableError, match="encoder-only"):
        L.pseudo_log_likelihood(bert_encoder, SHORT)
    with pytest.raises(NotAvailableError, match="encoder-only"):
        L.causal_token_loss(bert_encoder, SHORT)
    with pytest.raises(NotAvailableError):
        L.next_sentence(bert_encoder, "a b.", "c d.")
    with pytest.raises(NotAvailableError, match="encoder-only"):
        L.logit_gradient_check(bert_encoder, encode(bert_encoder, SHORT), 1)
    with pytest.raises(NotAvailableError, match="causal"):
        L.masked_lm_loss(gpt2, SHORT)
    with pytest.raises(NotAvailableError, match="masked"):
        L.causal_token_loss(bert_mlm, SHORT)
    with pytest.raises(NotAvailableError, match="NSP"):
        L.next_sentence(bert_mlm, "a b.", "c d.")
    with pytest.raises(NotAvailableError, match="NSP"):
        L.next_sentence(gpt2, "a b.", "c d.")


def test_masked_bad_input(bert_mlm):
    for bad in ("", "  "):
        with pytest.raises(InputError):
            L.masked_lm_loss(bert_mlm, bad)
        with pytest.raises(InputError):
            L.pseudo_log_likelihood(bert_mlm, bad)
    for p in (0.0, -0.1, 1.5):
        with pytest.raises(InputError):
            L.masked_lm_loss(bert_mlm, SHORT, mask_prob=p)


# --------------------------------------------------------------------------- gradient view (seed 000)


def _independent_grads(lm, ids, position, target_id, token_type_ids=None):
    """Autograd through the whole model (logits from model.forward) w.r.t. inputs_embeds and logits."""
    emb = lm.model.get_input_embeddings()(ids).detach().requires_grad_(True)
    kwargs = {"inputs_embeds": emb, "attention_mask": torch.ones_like(ids), "output_hidden_states": True}
    if token_type_ids is not None:
        kwargs["token_type_ids"] = token_type_ids
    if lm.family == "gpt2":
        kwargs["use_cache"] = False
    out = lm.model(**kwargs)
    z = out.logits[0, position]
    loss = torch.nn.functional.cross_entropy(z[None], torch.tensor([target_id]))
    g_z, g_emb = torch.autograd.grad(loss, [z, emb])
    return loss.detach(), z.detach(), g_z, g_emb[0], out.hidden_states[-1][0, position].detach()


def test_logit_gradient_equals_p_minus_onehot_causal(gpt2):
    model = gpt2.model
    flags = [p.requires_grad for p in model.parameters()]
    enc = encode(gpt2, SHORT)
    pos = 4
    rep = L.logit_gradient_check(gpt2, enc, pos, top_k=8)
    target = int(enc.input_ids[0, pos + 1])
    loss, z, g_z, g_emb, h = _independent_grads(gpt2, enc.input_ids, pos, target)
    p = torch.softmax(z.double(), -1)
    onehot = torch.zeros_like(p)
    onehot[target] = 1
    assert float((g_z.double() - (p - onehot)).abs().max()) <= 1e-6  # the identity itself
    assert rep.logit_grad_max_abs_diff <= 1e-6
    assert rep.objective == "next-token" and rep.target_id == target
    assert rep.loss == pytest.approx(float(loss), rel=1e-5)
    assert rep.prob_target == pytest.approx(float(p[target]), rel=1e-5)
    assert rep.logit_grad_target == pytest.approx(float(p[target]) - 1, abs=1e-6)
    assert abs(rep.logit_grad_sum) <= 1e-5
    np.testing.assert_allclose(rep.top_logit_grads, (p - onehot)[rep.top_ids].numpy(), atol=1e-6)
    # Gradient reaching each input position; nothing flows back from later positions.
    np.testing.assert_allclose(rep.input_grad_norm, g_emb.norm(dim=-1).numpy(), rtol=1e-4, atol=1e-7)
    assert np.all(rep.input_grad_norm[pos + 1:] == 0) and np.all(rep.input_grad_norm[:pos + 1] > 0)
    # Output side (tied): row i gets (P(i) − y_i) · h.
    assert rep.tied
    assert rep.hidden_norm == pytest.approx(float(h.norm()), rel=1e-5)
    assert rep.output_formula_max_abs_diff <= 1e-6
    expected_norms = ((p - onehot).abs() * float(h.norm())).numpy()
    np.testing.assert_allclose(rep.output_top_norms, expected_norms[rep.output_top_ids], rtol=1e-4)
    assert rep.output_top_norms[0] == pytest.approx(np.sort(expected_norms)[-1], rel=1e-4)
    assert rep.target_row_grad_norm == pytest.approx((1 - float(p[target])) * float(h.norm()), rel=1e-4)
    assert rep.target_row_cos_h == pytest.approx(1.0, abs=1e-5)
    # Tied total: output side plus the input side summed over the positions holding that token.
    total = torch.outer((p - onehot).float(), h)
    total.index_add_(0, enc.input_ids[0], g_emb)
    np.testing.assert_allclose(rep.embedding_top_norms, total.norm(dim=-1)[rep.embedding_top_ids].numpy(), rtol=1e-4)
    # The shared model is untouched.
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())


def test_logit_gradient_masked_lm(bert_mlm):
    text = "the quick brown fox jumps."
    enc = encode(bert_mlm, text)
    pos = 3
    rep = L.logit_gradient_check(bert_mlm, enc, pos)
    target = int(enc.input_ids[0, pos])
    masked = enc.input_ids.clone()
    masked[0, pos] = bert_mlm.tokenizer.mask_token_id
    loss, z, g_z, g_emb, _ = _independent_grads(bert_mlm, masked, pos, target, enc.token_type_ids)
    p = torch.softmax(z.double(), -1)
    onehot = torch.zeros_like(p)
    onehot[target] = 1
    assert rep.objective == "masked-token" and rep.target_id == target
    assert rep.tokens[pos] == "[MASK]"
    assert rep.logit_grad_max_abs_diff <= 1e-6
    assert rep.output_formula_max_abs_diff <= 1e-6
    assert rep.loss == pytest.approx(float(loss), rel=1e-5)
    np.testing.assert_allclose(rep.input_grad_norm, g_emb.norm(dim=-1).numpy(), rtol=1e-4, atol=1e-7)
    assert all(p.grad is None for p in bert_mlm.model.parameters())
    with pytest.raises(InputError):
        L.logit_gradient_check(bert_mlm, enc, 0)  # [CLS]
    with pytest.raises(InputError):
        L.logit_gradient_check(bert_mlm, enc, enc.n_tokens)


def test_logit_gradient_bad_position(gpt2):
    enc = encode(gpt2, SHORT)
    for pos in (-1, enc.n_tokens - 1, enc.n_tokens, 2.5):
        with pytest.raises(InputError):
            L.logit_gradient_check(gpt2, enc, pos)


# --------------------------------------------------------------------------- serialisation


def test_results_round_trip_through_json(gpt2, bert_mlm, bert_pt):
    results = [
        L.causal_token_loss(gpt2, SHORT),
        L.score_corpus(gpt2, LONG, window=32, stride=16),
        L.masked_lm_loss(bert_mlm, SHORT),
        L.pseudo_log_likelihood(bert_mlm, SHORT),
        L.next_sentence(bert_pt, "a cat.", "it sleeps."),
        L.logit_gradient_check(gpt2, encode(gpt2, SHORT), 2),
    ]
    for res in results:
        d = json.loads(json.dumps(to_dict(res)))
        back = from_dict(type(res), d)
        assert results_equal(res, back), type(res).__name__


# --------------------------------------------------------------------------- the report section (LossAnalysis)


def _metrics(blocks) -> dict:
    from inspector.analysis import Metric

    return {b.label: b.value for b in blocks if isinstance(b, Metric)}


def _number(value) -> float:
    return float(str(value).replace(",", ""))


def _section_html(rep) -> str:
    from inspector import report as R

    html = R.to_html(rep)
    sec = html[html.index('id="sec-loss"'):]
    return sec[:sec.index("</section>")]


def test_loss_section_causal_view_html_and_markdown(gpt2):
    from inspector import report as R
    from inspector.analysis import Chart, ColouredTokens, Heading, Table
    from inspector.tokens import visible

    text = SHORT + " Then the fox sleeps."
    rep = R.build_report(gpt2, text, sections=("loss",), strict=True)
    ids = _ids(gpt2, text)
    T = ids.shape[1]
    with torch.no_grad():
        logits = gpt2.model(ids, use_cache=False).logits[0, :-1].double()
    logp = torch.log_softmax(logits, -1)
    ce = -logp[torch.arange(T - 1), ids[0, 1:]].numpy()  # independent per-token loss, positions 1..T-1
    blocks = R.contract_view("loss", rep.section("loss"))
    m = _metrics(blocks)
    label = f"Perplexity (next token, first token unscored; {T - 1} tokens)"
    assert _number(m[label]) == pytest.approx(math.exp(ce.mean()), rel=1e-5)
    assert m["mean loss (nats/token)"] == pytest.approx(ce.mean(), rel=1e-5)
    assert m["bits per token"] == pytest.approx(ce.mean() / math.log(2), rel=1e-5)
    assert m["scored tokens"] == T - 1 and m["window / stride / windows"] == "64 / 32 / 1"
    assert m["top-1 accuracy"] == pytest.approx(float((logits.argmax(-1) == ids[0, 1:]).double().mean()))

    bar, hist = [b for b in blocks if isinstance(b, Chart)]
    assert bar.kind == "bar" and bar.title == "loss of each predicted token" and bar.reference_label == "mean"
    np.testing.assert_allclose(bar.series[0][2], ce, rtol=1e-5)
    assert bar.reference == pytest.approx(ce.mean(), rel=1e-5)
    assert list(bar.series[0][1]) == [visible(gpt2.tokenizer.decode([int(i)])) for i in ids[0, 1:]]
    counts, edges = np.histogram(ce, bins=30)
    assert list(hist.series[0][2]) == counts.tolist()
    np.testing.assert_allclose(hist.series[0][1], edges, rtol=1e-5)
    assert hist.markers[0][0] == "mean" and hist.markers[0][1] == pytest.approx(ce.mean(), rel=1e-5)
    coloured = next(b for b in blocks if isinstance(b, ColouredTokens))
    assert coloured.values[0] is None
    np.testing.assert_allclose(coloured.values[1:], ce, rtol=1e-5)

    worst = next(b for b in blocks if isinstance(b, Table) and b.title == "Most surprising tokens")
    expected_order = (np.argsort(-ce, kind="stable")[:10] + 1).tolist()
    assert [row[0] for row in worst.rows] == expected_order
    for row in worst.rows:
        assert row[2] == pytest.approx(ce[row[0] - 1], rel=1e-5)
        assert row[3] == pytest.approx(math.exp(-ce[row[0] - 1]), rel=1e-5)
        assert row[4] == 1 + int((logp[row[0] - 1] > logp[row[0] - 1, ids[0, row[0]]]).sum())
    # The gradient part at the default position (the last prediction): its loss is the last token's CE.
    assert Heading(f"Gradient of the loss at position {T - 2} (next-token)") in blocks
    grad = blocks[blocks.index(Heading(f"Gradient of the loss at position {T - 2} (next-token)")):]
    assert _metrics(grad)["loss (nats)"] == pytest.approx(ce[-1], rel=1e-5)

    res = rep.result("loss", "loss")
    html = _section_html(rep)
    assert html.count("<svg") == 2 and "<h3>Most surprising tokens</h3>" in html
    assert f"<tr><td>{label}</td><td>{m[label]}</td></tr>" in html
    assert "Tokens coloured by their loss (darker = more surprising):" in html
    for p, v in zip(res.positions, res.ce_nats):
        assert f'title="#{int(p)}: {R._fmt(float(v))} nats"' in html
    md = R.to_markdown(rep)
    assert f"| {label} | {m[label]} |" in md and "### Most surprising tokens" in md
    assert f"| mean loss (nats/token) | {res.mean_ce_nats:.6g} |" in md
    assert R.blocks_text(rep)[0].startswith(f"Loss and perplexity: {label} {m[label]}; ")


def test_loss_section_masked_lm_with_pll_nsp_and_gradient(bert_pt):
    from inspector import report as R
    from inspector.analysis import Heading, Table

    text, pair = "the cat sat on the mat, and then it slept.", "the dog barked."
    rep = R.build_report(bert_pt, text, sections=("loss",), strict=True, text_pair=pair)
    sec = rep.section("loss")
    assert set(sec.results) == {"loss", "pll", "nsp", "gradient"}
    res = rep.result("loss", "loss")
    tok = bert_pt.tokenizer
    ids = torch.tensor([tok(text)["input_ids"]])  # the MLM loss reads the first sentence alone
    corrupted, labels = ids.clone(), torch.full_like(ids, -100)
    corrupted[0, torch.as_tensor(res.positions) + 1] = torch.as_tensor(res.replacement_ids)
    labels[0, torch.as_tensor(res.positions) + 1] = torch.as_tensor(res.original_ids)
    with torch.no_grad():
        out = bert_pt.model(input_ids=corrupted, labels=labels, next_sentence_label=torch.tensor([0]))
        mlm = float(torch.nn.functional.cross_entropy(out.prediction_logits[0], labels[0], ignore_index=-100))
    blocks = R.contract_view("loss", sec)
    m = _metrics(blocks[:blocks.index(Heading("Pseudo-log-likelihood (each token masked in turn)"))])
    assert _number(m[f"Perplexity (MLM, seeded 15 % masked, seed 0; {len(res.positions)} tokens)"]) == pytest.approx(
        math.exp(mlm), rel=1e-5)
    assert m["MLM loss (nats)"] == pytest.approx(mlm, rel=1e-5)
    n_content = ids.shape[1] - 2
    assert m["chosen / content tokens"] == f"{max(1, math.floor(0.15 * n_content + 0.5))} / {n_content}"
    table = next(b for b in blocks if isinstance(b, Table) and "model saw" in b.columns)
    assert [row[0] for row in table.rows] == res.positions.tolist()
    for row, rid, oid in zip(table.rows, res.replacement_ids, res.original_ids):
        assert row[3] == ("[MASK]" if rid == tok.mask_token_id else "unchanged" if rid == oid else "random")

    # PLL: each content token masked in turn, plain forward passes.
    lps = []
    for i in range(1, ids.shape[1] - 1):
        masked = ids.clone()
        masked[0, i] = tok.mask_token_id
        with torch.no_grad():
            lg = bert_pt.model(input_ids=masked).prediction_logits[0, i].double()
        lps.append(float(torch.log_softmax(lg, -1)[ids[0, i]]))
    pll = _metrics(blocks[blocks.index(Heading("Pseudo-log-likelihood (each token masked in turn)")):
                          blocks.index(Heading("Next-sentence prediction"))])
    assert _number(pll[f"Perplexity (pseudo, each token masked in turn; {len(lps)} tokens)"]) == pytest.approx(
        math.exp(-np.mean(lps)), rel=1e-5)
    assert pll["PLL (nats)"] == pytest.approx(sum(lps), rel=1e-5)

    # NSP on the pair, and the gradient at the middle ordinary token of the pair's encoding.
    enc = tok(text, pair, return_tensors="pt")
    with torch.no_grad():
        p_next = float(torch.softmax(bert_pt.model(**enc).seq_relationship_logits[0].double(), -1)[0])
    assert _metrics(blocks)["P(IsNext)"] == pytest.approx(p_next, rel=1e-5)
    special = set(tok.all_special_ids)
    content = [i for i, t in enumerate(enc["input_ids"][0].tolist()) if t not in special]
    pos = content[len(content) // 2]
    masked = enc["input_ids"].clone()
    masked[0, pos] = tok.mask_token_id
    with torch.no_grad():
        lg = bert_pt.model(input_ids=masked, token_type_ids=enc["token_type_ids"]).prediction_logits[0, pos].double()
    heading = Heading(f"Gradient of the loss at position {pos} (masked-token)")
    grad = _metrics(blocks[blocks.index(heading):])
    assert grad["loss (nats)"] == pytest.approx(-float(torch.log_softmax(lg, -1)[enc["input_ids"][0, pos]]), rel=1e-4)

    html = _section_html(rep)
    for h in ("Pseudo-log-likelihood (each token masked in turn)", "Next-sentence prediction", heading.text):
        assert f"<h3>{h}</h3>" in html
    assert f"<tr><td>MLM loss (nats)</td><td>{res.loss:.6g}</td></tr>" in html
    assert f"<tr><td>P(IsNext)</td><td>{R._fmt(rep.result('loss', 'nsp').p_is_next)}</td></tr>" in html
    md = R.to_markdown(rep)
    assert "### Next-sentence prediction" in md and f"| MLM loss (nats) | {res.loss:.6g} |" in md


def test_loss_section_settings_parts_and_json(gpt2, bert_mlm, bert_encoder):
    from inspector import report as R

    rep = R.build_report(gpt2, LONG, sections=("loss",), strict=True,
                         settings={"loss_top_k": 3, "loss_stride": 16, "gradient_position": 2})
    assert (rep.settings["loss_top_k"], rep.settings["loss_stride"], rep.settings["gradient_position"]) == (3, 16, 2)
    res = rep.result("loss", "loss")
    ids = _ids(gpt2, LONG)[:, :64]  # the report analyses the text cut to the context
    nll, n, n_windows = _hf_guide_nll(gpt2.model, ids, 64, 16)
    assert res.top_ids.shape[1] == 3 and res.n_windows == n_windows == 1
    assert res.mean_ce_nats == pytest.approx(nll / n, rel=1e-5)
    assert rep.result("loss", "gradient").position == 2
    doc = json.loads(R.render(rep, "json"))
    types = {k: v["type"] for k, v in doc["sections"]["loss"]["results"].items()}
    assert types == {"loss": "inspector.analyses.loss.CausalLossReport",
                     "gradient": "inspector.analyses.loss.GradientCheck"}
    assert R.reports_equal(rep, R.report_from_json(R.render(rep, "json")))

    short = R.build_report(bert_mlm, SHORT, sections=("loss",), strict=True,
                           settings={"mlm_pll_max_tokens": 3, "mlm_seed": 5})
    assert set(short.section("loss").results) == {"loss", "gradient"}  # PLL skipped (too long), no NSP head
    assert short.result("loss", "loss").seed == 5
    for bad in ({"loss_top_k": 0}, {"mlm_seed": -1}, {"loss_stride": 0}):
        with pytest.raises(InputError):
            R.build_report(gpt2, SHORT, sections=("loss",), settings=bad, strict=True)

    none = R.build_report(bert_encoder, SHORT, sections=("loss",), strict=True)
    sec = none.section("loss")
    assert sec.status == "unavailable"
    assert sec.reason == (f"Loss needs a language-model head; this model is {bert_encoder.kind.label}, "
                          "so it has no loss or perplexity.")
