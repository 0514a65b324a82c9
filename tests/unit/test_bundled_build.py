"""The seeded build of the bundled models, end to end at toy size, plus its building blocks."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, BertConfig, BertForPreTraining

from inspector import bundled
from inspector.errors import ModelNotFoundError

CHECKPOINTS = ["step-0", "step-1", "final"]


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory) -> Path:
    return bundled.build(tmp_path_factory.mktemp("bundled"), tiny=True, quiet=True)


def test_tiny_build_writes_every_checkpoint_and_curve(tiny_build):
    for name in ("gpt2-mini", "bert-mini"):
        folder = tiny_build / name
        assert sorted(p.name for p in folder.iterdir()) == sorted(CHECKPOINTS + ["training.json"])
        record = json.loads((folder / "training.json").read_text())
        assert record["model"] == name and record["tiny"] is True
        assert len(record["train_loss"]) == 2
        assert list(record["checkpoints"]) == CHECKPOINTS
        assert record["environment"]["corpus_sha256"].keys() == {"train.txt", "valid.txt"}
    assert not list(tiny_build.glob(".*.partial"))            # staging folders are renamed away


def test_tiny_gpt2_checkpoints_load_as_float32_from_fp16_files(tiny_build):
    text = "Return the number of items in the container."
    for checkpoint in CHECKPOINTS:
        folder = tiny_build / "gpt2-mini" / checkpoint
        with safe_open(folder / "model.safetensors", "pt") as f:
            assert all(f.get_tensor(k).dtype == torch.float16 for k in f.keys())
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        assert next(model.parameters()).dtype == torch.float32
        assert tokenizer.is_fast and tokenizer.eos_token == bundled.EOT
        enc = tokenizer(text, return_tensors="pt", return_offsets_mapping=True)
        assert tokenizer.decode(enc.input_ids[0]) == text
        assert "".join(text[a:b] for a, b in enc.offset_mapping[0].tolist()) == text
        logits = model(input_ids=enc.input_ids).logits
        assert logits.shape == (1, enc.input_ids.shape[1], tokenizer.vocab_size)


def test_tiny_bert_checkpoints_load_with_both_heads(tiny_build):
    folder = tiny_build / "bert-mini" / "final"
    model = BertForPreTraining.from_pretrained(folder, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    enc = tokenizer("The first sentence.", "The second one.", return_tensors="pt")
    assert tokenizer.convert_ids_to_tokens(enc.input_ids[0].tolist())[0] == "[CLS]"
    assert enc.token_type_ids[0].tolist().count(1) > 0
    out = model(**enc)
    assert out.prediction_logits.shape[-1] == model.config.vocab_size
    assert out.seq_relationship_logits.shape == (1, 2)


def test_validation_curve_starts_at_the_step0_checkpoint_figure(tiny_build):
    record = json.loads((tiny_build / "gpt2-mini" / "training.json").read_text())
    assert record["valid_loss"][0] == [0, record["checkpoints"]["step-0"]["valid_loss"]]
    assert record["baselines"]["unigram_valid_perplexity"] > 1


def test_registry_resolves_names_against_a_built_tree(tiny_build, monkeypatch):
    monkeypatch.setattr(bundled, "BUNDLED_ROOT", tiny_build)
    assert bundled.resolve("gpt2-mini") == tiny_build / "gpt2-mini" / "final"
    assert bundled.resolve("bundled:bert-mini@step-1") == tiny_build / "bert-mini" / "step-1"
    listed = {m.name: m for m in bundled.list_bundled()}
    assert listed["gpt2-mini"].checkpoints == CHECKPOINTS and listed["gpt2-mini"].kind == "causal-lm"
    with pytest.raises(ModelNotFoundError, match="step-0, step-1, final"):
        bundled.resolve("gpt2-mini@step-7")


def test_unbuilt_model_names_the_build_command(tmp_path, monkeypatch):
    monkeypatch.setattr(bundled, "BUNDLED_ROOT", tmp_path)
    assert not {m.name: m for m in bundled.list_bundled()}["bert-mini"].available
    with pytest.raises(ModelNotFoundError) as err:
        bundled.resolve("bert-mini")
    assert "inspector.bundled build" in err.value.hint


def test_lr_schedule_warms_up_then_decays_to_a_tenth():
    lrs = [bundled._lr_at(s, 1.0, 10, 100) for s in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[100] == pytest.approx(0.1)


def _pair_maker(max_len: int = 64) -> bundled._PairMaker:
    rng = random.Random(3)
    docs = [[[rng.randrange(5, 100) for _ in range(rng.randrange(3, 12))] for _ in range(rng.randrange(1, 6))]
            for _ in range(200)]
    return bundled._PairMaker(docs, max_len, vocab_size=100, cls_id=2, sep_id=3, mask_id=4, first_normal_id=5,
                              mask_prob=0.15)


def test_pretraining_examples_follow_the_bert_recipe():
    maker, rng = _pair_maker(), random.Random(0)
    examples = [maker.example(rng) for _ in range(2000)]
    chosen = kept = masked = normal = 0
    for e in examples:
        ids, types, labels = e["input_ids"], e["token_type_ids"], e["labels"]
        assert len(ids) <= 64 and ids[0] == 2 and ids[-1] == 3 and ids.count(3) == 2
        first_b = ids.index(3) + 1
        assert types == [0] * first_b + [1] * (len(ids) - first_b)
        n_normal = len(ids) - 3
        n_chosen = sum(label != -100 for label in labels)
        assert n_chosen == max(1, round(0.15 * n_normal))
        assert all(labels[i] == -100 for i in (0, first_b - 1, len(ids) - 1))    # specials never chosen
        for tok, label in zip(ids, labels):
            if label != -100:
                chosen += 1
                masked += tok == 4
                kept += tok == label
        normal += n_normal
    assert chosen / normal == pytest.approx(0.15, abs=0.01)
    assert masked / chosen == pytest.approx(0.8, abs=0.03)
    assert kept / chosen == pytest.approx(0.1 + 0.1 / 95, abs=0.03)                 # unchanged (+ random hits)
    true_next = sum(e["next_sentence_label"] == 0 for e in examples) / len(examples)
    assert true_next == pytest.approx(0.5, abs=0.04)


def test_true_next_pairs_continue_the_same_document():
    maker, rng = _pair_maker(max_len=512), random.Random(1)
    for _ in range(300):
        state = rng.getstate()
        a, b, label = maker.pair(rng)
        if label == 0:
            rng2 = random.Random()
            rng2.setstate(state)
            d = maker.multi[rng2.randrange(len(maker.multi))]
            flat = [t for s in maker.docs[d] for t in s]
            joined = a + b
            assert any(flat[i:i + len(joined)] == joined for i in range(len(flat)))


def test_fast_pretraining_loss_equals_the_model_loss():
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                          num_attention_heads=2, intermediate_size=64,
                                          max_position_embeddings=64)).eval()
    maker, rng = _pair_maker(), random.Random(2)
    batch = bundled._collate([maker.example(rng) for _ in range(8)], pad_id=0)
    mlm, nsp = bundled.bert_pretraining_losses(model, batch)
    reference = model(**batch).loss
    assert (mlm + nsp).item() == pytest.approx(reference.item(), rel=1e-5)


def test_split_sentences_keeps_every_sentence():
    doc = "First sentence here. Second one follows! Is this third?\nA new paragraph e.g. with abbreviations."
    assert bundled.split_sentences(doc) == ["First sentence here.", "Second one follows!", "Is this third?",
                                            "A new paragraph e.g. with abbreviations."]
