"""The shared scoring machinery (analyses.scoring) against hand-worked examples and plain torch / numpy.

Windows and chunks are checked against examples worked out by hand, BERT's masking against the
recipe re-drawn here with numpy's default_rng, the chunked log-softmax against torch.log_softmax
of the whole matrix, and the hidden rows against one plain forward pass.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import _TRAIN_TEXT, make_bert_tokenizer, tiny_bert_model, tiny_gpt2_model
from inspector.analyses import scoring as S
from inspector.models import wrap


@pytest.fixture(scope="module")
def gpt2():
    return wrap(*tiny_gpt2_model(seed=2, init_range=0.3))


@pytest.fixture(scope="module")
def bert_mlm():
    return wrap(*tiny_bert_model(seed=2, init_range=0.3, cls_name="BertForMaskedLM"))


# --------------------------------------------------------------------------- sliding windows


def test_windows_hand_worked_example():
    # n = 10 tokens, window 4, stride 2: windows start at 0, 2, 4, 6; each scores what the one before did not reach.
    assert S.windows(10, 4, 2) == [(0, 4, 1), (2, 6, 4), (4, 8, 6), (6, 10, 8)]
    # n = 11, window 5, stride 3: [0, 5) scores 1..4, [3, 8) scores 5..7, [6, 11) scores 8..10.
    assert S.windows(11, 5, 3) == [(0, 5, 1), (3, 8, 5), (6, 11, 8)]
    assert S.windows(7, 16, 8) == [(0, 7, 1)]  # the text fits: one window, every token but the first


@pytest.mark.parametrize("n,window,stride", [(10, 4, 2), (11, 5, 3), (50, 8, 1), (64, 16, 15), (2, 2, 1), (33, 32, 16)])
def test_windows_score_every_position_but_the_first_exactly_once(n, window, stride):
    scored = [p for _, end, first in S.windows(n, window, stride) for p in range(first, end)]
    assert scored == list(range(1, n))
    for begin, end, first in S.windows(n, window, stride):
        assert 0 <= begin < first <= end <= n and end - begin <= window
        assert first - begin >= min(window - stride, first)  # left context after the first window


def test_window_batches_group_equal_lengths_only():
    wins = S.windows(11, 5, 3) + [(0, 2, 1)]
    assert [[w for w in g] for g in S.window_batches(wins, 2)] == [[(0, 5, 1), (3, 8, 5)], [(6, 11, 8)], [(0, 2, 1)]]


def test_window_settings_defaults_and_checks(gpt2):
    assert S.window_settings(gpt2, None, None) == (64, 32)  # the tiny model's context, half of it
    assert S.window_settings(gpt2, 20, 7) == (20, 7)
    from inspector.errors import InputError
    for window, stride in ((65, None), (1, None), (20, 20), (20, 0)):
        with pytest.raises(InputError):
            S.window_settings(gpt2, window, stride)


def test_scored_hidden_equals_one_plain_forward_pass(gpt2):
    ids = torch.tensor(gpt2.tokenizer(_TRAIN_TEXT)["input_ids"][:40])
    with torch.no_grad():
        full = gpt2.model.base_model(input_ids=ids[None], use_cache=False).last_hidden_state[0]  # (40, D)
        got = list(S.scored_hidden(gpt2, ids, S.windows(40, 40, 20), batch_size=4))
    assert len(got) == 1
    pos, ctx, rows = got[0]
    np.testing.assert_array_equal(pos.numpy(), np.arange(1, 40))
    np.testing.assert_array_equal(ctx.numpy(), np.arange(1, 40))
    torch.testing.assert_close(rows, full[:-1], rtol=0, atol=1e-5)  # row t predicts token t + 1


# --------------------------------------------------------------------------- chunked log-softmax


def test_chunked_log_softmax_equals_torch_log_softmax():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 37)
    hidden = torch.randn(10, 8) * 3
    with torch.no_grad():
        expected = torch.log_softmax(head(hidden), dim=-1)
        for dtype in (torch.float32, torch.float64):
            parts = list(S.log_softmax_rows(head, hidden, 37, dtype=dtype, elements=3 * 37))  # 3 rows a chunk
            assert [(sl.start, sl.stop) for sl, _ in parts] == [(0, 3), (3, 6), (6, 9), (9, 10)]
            got = torch.cat([lp for _, lp in parts])
            assert got.dtype == dtype
            torch.testing.assert_close(got.float(), expected, rtol=0, atol=1e-6)
        one = torch.log_softmax(head(hidden).double(), dim=-1)
        torch.testing.assert_close(S.log_softmax(head, hidden, torch.float64), one, rtol=0, atol=0)


def test_logit_chunk_rows():
    cpu = torch.device("cpu")
    assert S.logit_chunk_rows(cpu, 1000) == (1 << 22) // 1000
    assert S.logit_chunk_rows(torch.device("cuda"), 1000) == (1 << 24) // 1000  # no GPU needed: arithmetic only
    assert S.logit_chunk_rows(cpu, 10, elements=35) == 3
    assert S.logit_chunk_rows(cpu, 10 ** 9) == 1  # never zero rows


def test_row_stats_against_plain_formulas():
    torch.manual_seed(1)
    logp = torch.log_softmax(torch.randn(6, 11, dtype=torch.float64) * 2, dim=-1)
    target = torch.tensor([0, 3, 10, 5, 5, 1])
    ce, ent, rank, top_ids, top_p = S.row_stats(logp, target, 3)
    p = logp.exp().numpy()
    for i, t in enumerate(target.tolist()):
        assert float(ce[i]) == pytest.approx(-math.log(p[i, t]))
        assert float(ent[i]) == pytest.approx(-(p[i] * np.log(p[i])).sum())
        assert int(rank[i]) == 1 + int((p[i] > p[i, t]).sum())
        order = np.argsort(-p[i], kind="stable")[:3]
        np.testing.assert_array_equal(top_ids[i].numpy(), order)
        np.testing.assert_allclose(top_p[i].numpy(), p[i, order])


# --------------------------------------------------------------------------- masked-LM chunks


def test_make_chunks_hand_worked_example():
    tok = make_bert_tokenizer()
    cls, sep, pad = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id
    assert S.special_frame(tok) == ([cls], [sep])
    content = list(range(1000, 1010))  # 10 content tokens; 6 positions leave 4 per chunk
    ch = S.make_chunks(tok, content, 6)
    assert ch.chunk_tokens == 4 and ch.input_ids.shape == (3, 6)
    assert ch.input_ids.tolist() == [[cls, 1000, 1001, 1002, 1003, sep],
                                     [cls, 1004, 1005, 1006, 1007, sep],
                                     [cls, 1008, 1009, sep, pad, pad]]
    assert ch.attention_mask.tolist() == [[1] * 6, [1] * 6, [1, 1, 1, 1, 0, 0]]
    assert ch.row.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert ch.col.tolist() == [1, 2, 3, 4, 1, 2, 3, 4, 1, 2]
    assert not ch.token_type_ids.any()


def test_mlm_logprobs_equal_the_models_own_logits(bert_mlm):
    tok = bert_mlm.tokenizer
    content, _ = S.content_tokens(bert_mlm, _TRAIN_TEXT)
    ch = S.make_chunks(tok, content, bert_mlm.max_positions)
    assert ch.input_ids.shape[0] > 1  # the text is longer than the context
    cells = np.array([0, 5, len(content) - 1, 70])
    got = torch.zeros((len(cells), S.vocab_out(bert_mlm)))
    with torch.no_grad():
        for sel, logp in S.mlm_logprobs(bert_mlm, ch.input_ids, ch.attention_mask, ch.token_type_ids,
                                        ch.row[cells], ch.col[cells], batch_size=2):
            got[sel] = logp
        for i, c in enumerate(cells):
            r = int(ch.row[c])
            logits = bert_mlm.model(input_ids=ch.input_ids[r:r + 1], attention_mask=ch.attention_mask[r:r + 1]).logits
            torch.testing.assert_close(got[i], torch.log_softmax(logits[0, ch.col[c]], -1), rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- BERT's seeded masking


def _hand_masking(n: int, seed: int, vocab: np.ndarray, mask_prob: float = 0.15):
    """BERT's 15 % / 80-10-10 recipe drawn directly with numpy: positions, then uniforms, then random ids."""
    rng = np.random.default_rng(seed)
    m = min(n, max(1, int(math.floor(mask_prob * n + 0.5))))  # round half up, at least one
    positions = np.sort(rng.choice(n, size=m, replace=False))
    u = rng.random(m)
    random_ids = vocab[rng.integers(0, len(vocab), size=m)]
    return positions, u, random_ids


@pytest.mark.parametrize("n,seed", [(50, 0), (50, 7), (3, 1), (200, 123), (1, 5)])
def test_masking_split_counts_match_a_hand_computation(n, seed):
    tok = make_bert_tokenizer()
    content = [int(i) for i in np.random.default_rng(99).integers(1000, 1100, size=n)]
    positions, kind, original, replacement = S.choose_masking(tok, content, seed, 0.15, 10 ** 6)
    vocab = np.setdiff1d(np.arange(len(tok)), np.array(tok.all_special_ids))
    h_pos, u, h_random = _hand_masking(n, seed, vocab)
    assert len(positions) == len(h_pos) == max(1, math.floor(0.15 * n + 0.5))
    np.testing.assert_array_equal(positions, h_pos)
    assert int((kind == S.REPLACED_BY_MASK).sum()) == int((u < 0.8).sum())
    assert int((kind == S.REPLACED_BY_RANDOM).sum()) == int(((u >= 0.8) & (u < 0.9)).sum())
    assert int((kind == S.KEPT_UNCHANGED).sum()) == int((u >= 0.9).sum())
    np.testing.assert_array_equal(original, np.asarray(content)[h_pos])
    expected = np.where(u < 0.8, tok.mask_token_id, np.where(u < 0.9, h_random, np.asarray(content)[h_pos]))
    np.testing.assert_array_equal(replacement, expected)
    assert not set(h_random.tolist()) & set(tok.all_special_ids)


def test_random_vocab_excludes_special_ids_and_respects_the_limit():
    tok = make_bert_tokenizer()
    v = S.random_vocab(tok, 10 ** 6)
    assert len(v) == len(tok) - len(set(tok.all_special_ids))
    assert S.random_vocab(tok, 50).max() < 50


def test_loss_and_compare_draw_the_same_corruption(bert_mlm):
    """masked_lm_loss and the comparison's seeded masking share `choose_masking`: same seed, same corruption."""
    from inspector.analyses import compare as C
    from inspector.analyses import loss as L

    text = _TRAIN_TEXT[:300]
    rep = L.masked_lm_loss(bert_mlm, text, seed=4)
    content, _ = S.content_tokens(bert_mlm, text)
    positions, seen, corrupted = C._seeded_corruption(bert_mlm.tokenizer, content, S.vocab_out(bert_mlm), 4)
    np.testing.assert_array_equal(positions, rep.positions)
    np.testing.assert_array_equal(seen, rep.replacement_ids)
    assert [corrupted[i] for i in positions] == rep.replacement_ids.tolist()
    split = L.masking_split(bert_mlm, text, seed=4)
    assert (split.n_mask, split.n_random, split.n_unchanged) == (rep.n_mask, rep.n_random, rep.n_unchanged)
