"""One interface for causal LMs, masked LMs and encoders: every report section on each bundled model.

The unit tests check each analysis against an independent computation on tiny random models;
these check that the same calls work on the real bundled checkpoints (trained GPT-2 and BERT with
both pre-training heads, and the pretrained MiniLM encoder), that what does not apply says so,
and a few headline numbers against plain transformers on the real weights.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, BertForPreTraining

from inspector import bundled, models, report
from inspector.analyses import loss

TEXT = ("The function returns a list of the names of the files in the directory. "
        "If the path does not exist, an error is raised.")
PAIR = "The list is in arbitrary order."


@pytest.fixture(scope="module", params=["bundled:gpt2-mini", "bundled:bert-mini", "bundled:minilm"])
def lm(request):
    return models.load(request.param, device="cpu")


def test_every_section_runs_or_says_why_not(lm):
    rep = report.build_report(lm, TEXT, text_pair=None if lm.is_causal else PAIR)
    by_name = rep.sections if isinstance(rep.sections, dict) else {s.name: s for s in rep.sections}
    failed = {name: s.reason for name, s in by_name.items() if s.status == "failed"}
    assert not failed
    for name in ("overview", "layernorm", "attention", "embeddings", "foundations"):
        assert by_name[name].available, (name, by_name[name].reason)
    if lm.kind.value == "encoder":                     # MiniLM: no LM head, so no loss and no loss attribution
        assert not by_name["loss"].available and "no loss" in by_name["loss"].reason
    else:
        assert by_name["loss"].available and by_name["attribution"].available
    n_norms = sum(1 for m in lm.model.modules() if isinstance(m, torch.nn.LayerNorm))
    assert len(by_name["layernorm"].get("params").layers) == n_norms
    logits = by_name["attention"].get("logits")
    assert logits.std.shape == (lm.n_layers, lm.n_heads) and (logits.std > 0).all()


def test_bert_mini_masked_loss_and_nsp_match_plain_transformers():
    lm = models.load("bundled:bert-mini", device="cpu")
    folder = bundled.resolve("bert-mini")
    plain = BertForPreTraining.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)

    rep = loss.masked_lm_loss(lm, TEXT, seed=3)
    assert rep.n_chunks == 1 and rep.n_chosen == round(0.15 * rep.n_candidates)
    # Rebuild the corrupted input from the report ([CLS] content [SEP], chosen positions replaced)
    # and score it with plain transformers.
    content = torch.tensor(rep.token_ids)
    assert content.tolist() == tok(TEXT, add_special_tokens=False).input_ids
    corrupted = content.clone()
    corrupted[rep.positions] = torch.tensor(rep.replacement_ids)
    ids = torch.cat([torch.tensor([tok.cls_token_id]), corrupted, torch.tensor([tok.sep_token_id])])[None]
    with torch.no_grad():
        logits = plain(input_ids=ids).prediction_logits[0, 1:-1]
    ce = F.cross_entropy(logits[rep.positions], content[rep.positions], reduction="none").numpy()
    assert ce == pytest.approx(rep.ce_nats, rel=1e-4, abs=1e-5)
    assert rep.loss == pytest.approx(float(ce.mean()), rel=1e-5)

    nsp = loss.next_sentence(lm, TEXT, PAIR)
    pair = tok(TEXT, PAIR, return_tensors="pt")
    with torch.no_grad():
        p = plain(**pair).seq_relationship_logits[0].softmax(-1)
    assert nsp.p_is_next == pytest.approx(float(p[0]), abs=1e-6)
    assert nsp.prediction == ("IsNext" if p[0] > p[1] else "NotNext")


def test_gpt2_mini_perplexity_matches_plain_transformers():
    lm = models.load("bundled:gpt2-mini", device="cpu")
    rep = loss.causal_token_loss(lm, TEXT)
    ids = torch.tensor([lm.tokenizer(TEXT).input_ids])
    with torch.no_grad():
        plain = lm.model(input_ids=ids, labels=ids).loss.item()
    assert math.log(rep.perplexity) == pytest.approx(plain, rel=1e-5)
