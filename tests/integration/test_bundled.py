"""The bundled checkpoints in data/models (and the MiniLM package) load offline with plain
transformers, their tokenizers round-trip text, and training really improved them."""
from __future__ import annotations

import json
import random
from functools import lru_cache

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, BertForPreTraining, BertModel

from inspector import bundled
from inspector.errors import ModelNotFoundError

VALID_TEXT = (bundled.CORPUS_DIR / "valid.txt").read_text(encoding="utf-8")
ASCII_LINES = [line for line in VALID_TEXT.splitlines() if line.strip() and line.isascii()][:200]
MODEL_CLASS = {"causal-lm": AutoModelForCausalLM, "pretraining": BertForPreTraining, "encoder": AutoModel}
BUNDLED = bundled.list_bundled()
# smollm2 is a GGUF conversion with its own tests (tests/integration/test_smollm2.py, one conversion per session)
SPECS = [f"{m.name}@{c}" for m in BUNDLED for c in m.checkpoints if m.name != "smollm2"]


def _model_for(spec: str):
    return next(m for m in BUNDLED if m.name == spec.split("@")[0])


@lru_cache(maxsize=None)
def _load(spec: str):
    folder = bundled.resolve(spec)
    model = MODEL_CLASS[_model_for(spec).kind].from_pretrained(folder, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return model, tokenizer


def test_every_bundled_model_is_built_and_listed():
    by_name = {m.name: m for m in BUNDLED}
    assert list(by_name) == ["smollm2", "gpt2-mini", "bert-mini", "minilm"]  # SmolLM2 first in the picker
    assert by_name["smollm2"].available, bundled.SMOLLM2_INSTALL
    assert by_name["smollm2"].licence == "Apache-2.0" and "Q4_1 GGUF" in by_name["smollm2"].description
    for name in ("gpt2-mini", "bert-mini"):
        assert by_name[name].available, "run: python -m inspector.bundled build"
        assert len(by_name[name].checkpoints) >= 3
        assert by_name[name].checkpoints[0] == "step-0" and by_name[name].checkpoints[-1] == "final"
    assert "encoder-only" in by_name["minilm"].description and "no MLM" in by_name["minilm"].description
    assert bundled.DEFAULT_MODEL == "bundled:gpt2-mini"


@pytest.mark.parametrize("spec", SPECS)
def test_checkpoint_loads_offline_and_runs(spec):
    model, tokenizer = _load(spec)
    assert tokenizer.is_fast
    assert next(model.parameters()).dtype == torch.float32
    enc = tokenizer(ASCII_LINES[0], return_tensors="pt", truncation=True)
    with torch.no_grad():
        out = model(**enc)
    kind = _model_for(spec).kind
    if kind == "causal-lm":
        assert isinstance(model, torch.nn.Module) and out.logits.shape[-1] == model.config.vocab_size
        assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()   # tied
    elif kind == "pretraining":
        assert out.prediction_logits.shape[-1] == model.config.vocab_size
        assert out.seq_relationship_logits.shape == (1, 2)
    else:
        assert isinstance(model, BertModel) and out.last_hidden_state.shape[-1] == 384
    tensor = out.logits if kind == "causal-lm" else (
        out.prediction_logits if kind == "pretraining" else out.last_hidden_state)
    assert torch.isfinite(tensor).all()


@pytest.mark.parametrize("spec", SPECS)
def test_tokenizer_matches_its_tokenizer_json_and_maps_offsets(spec):
    _, tokenizer = _load(spec)
    raw = Tokenizer.from_file(str(bundled.resolve(spec) / "tokenizer.json"))
    raw.no_padding()                 # MiniLM's tokenizer.json pads and truncates to 128;
    raw.no_truncation()              # the HF wrapper does neither unless asked
    for line in ASCII_LINES[:50]:
        enc = tokenizer(line, return_offsets_mapping=True)
        assert enc.input_ids == raw.encode(line).ids
        tokens = tokenizer.convert_ids_to_tokens(enc.input_ids)
        if _model_for(spec).kind == "causal-lm":                  # byte-level BPE: exact round trip
            assert tokenizer.decode(enc.input_ids) == line
            assert "".join(line[a:b] for a, b in enc.offset_mapping) == line
        else:                                                     # uncased WordPiece
            assert tokenizer.unk_token_id not in enc.input_ids
            for token, (a, b) in zip(tokens, enc.offset_mapping):
                if token not in tokenizer.all_special_tokens:
                    assert line[a:b].lower() == token.removeprefix("##")
            decoded = tokenizer.decode(enc.input_ids, skip_special_tokens=True)
            assert decoded.replace(" ", "") == line.lower().replace(" ", "")


@lru_cache(maxsize=None)
def _gpt2_valid_loss(spec: str, windows: int = 24, context: int = 128) -> float:
    model, tokenizer = _load(spec)
    ids = torch.tensor(tokenizer(VALID_TEXT[:200_000]).input_ids[:windows * context]).view(windows, context)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[:, :-1]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)).item()


def test_trained_gpt2_beats_its_initialisation_on_held_out_text():
    first, *_, last = _model_for("gpt2-mini").checkpoints
    assert _gpt2_valid_loss(f"gpt2-mini@{last}") < _gpt2_valid_loss(f"gpt2-mini@{first}") - 2.0
    if len(_model_for("gpt2-mini").checkpoints) > 2:
        early = _model_for("gpt2-mini").checkpoints[1]
        assert _gpt2_valid_loss(f"gpt2-mini@{last}") < _gpt2_valid_loss(f"gpt2-mini@{early}")


def _masked_accuracy(spec: str, lines: list[str], always: str | None = None) -> float:
    """Replace 15 % of the word pieces of each line by [MASK] (seeded) and count exact recoveries
    (of the model's top prediction, or of always predicting the token `always`)."""
    model, tokenizer = _load(spec)
    rng, right, total = random.Random(0), 0, 0
    for line in lines:
        ids = tokenizer(line, truncation=True, return_tensors="pt").input_ids
        positions = list(range(1, ids.shape[1] - 1))
        chosen = rng.sample(positions, max(1, round(0.15 * len(positions))))
        masked = ids.clone()
        masked[0, chosen] = tokenizer.mask_token_id
        if always is not None:
            predicted = torch.full((len(chosen),), tokenizer.convert_tokens_to_ids(always))
        else:
            with torch.no_grad():
                predicted = model(input_ids=masked).prediction_logits[0, chosen].argmax(-1)
        right += int((predicted == ids[0, chosen]).sum())
        total += len(chosen)
    return right / total


def test_trained_bert_recovers_masked_tokens_far_better_than_at_initialisation():
    lines = ASCII_LINES[:120]
    final, initial = _masked_accuracy("bert-mini@final", lines), _masked_accuracy("bert-mini@step-0", lines)
    record = json.loads((bundled.BUNDLED_ROOT / "bert-mini" / "training.json").read_text())
    baseline = _masked_accuracy("bert-mini@final", lines, always=record["baselines"]["most_frequent_token"])
    assert initial < 0.05 and 0.03 < baseline < 0.1
    assert final > 2.5 * baseline


def test_training_records_hold_the_held_out_figures():
    gpt = json.loads((bundled.BUNDLED_ROOT / "gpt2-mini" / "training.json").read_text())
    final = gpt["checkpoints"]["final"]["valid_perplexity"]
    assert final < gpt["baselines"]["unigram_valid_perplexity"] / 3
    assert gpt["checkpoints"]["step-0"]["valid_perplexity"] > gpt["baselines"]["unigram_valid_perplexity"]
    assert len(gpt["train_loss"]) == gpt["settings"]["steps"]
    bert = json.loads((bundled.BUNDLED_ROOT / "bert-mini" / "training.json").read_text())
    assert bert["checkpoints"]["final"]["mlm_accuracy"] > 3 * bert["baselines"]["most_frequent_token_accuracy"]
    assert bert["checkpoints"]["final"]["nsp_accuracy"] > 0.6


def test_minilm_is_the_real_pretrained_encoder():
    model, tokenizer = _load("minilm@final")
    sentences = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell today."]
    enc = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state                                    # (3, T, 384)
    mask = enc.attention_mask.unsqueeze(-1).float()
    vectors = F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    similar, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert similar > 0.6 and unrelated < 0.3


def test_names_resolve_with_and_without_prefix_and_checkpoint():
    assert bundled.resolve("gpt2-mini") == bundled.resolve("bundled:gpt2-mini@final")
    assert bundled.resolve("gpt2-mini@step-0") == bundled.BUNDLED_ROOT / "gpt2-mini" / "step-0"
    assert bundled.resolve("minilm") == bundled.minilm_dir()


@pytest.mark.parametrize("spec, listed", [("nope", "gpt2-mini, bert-mini, minilm"),
                                          ("gpt2-mini@step-999999", "step-0"),
                                          ("bert-mini@best", "final"),
                                          ("minilm@step-0", "final")])
def test_unknown_names_raise_model_not_found_listing_what_exists(spec, listed):
    with pytest.raises(ModelNotFoundError, match=listed):
        bundled.resolve(spec)


def test_bundled_weights_stay_under_40_mb():
    size = sum(p.stat().st_size for p in bundled.BUNDLED_ROOT.rglob("*") if p.is_file())
    assert size <= 40 * 1024 * 1024
