"""The seeded, reproducible build of the bundled models (``python -m inspector.training build``).

Trains the tokenizers and the two models on ``data/corpus`` and writes checkpoints plus a
``training.json`` with loss curves and held-out figures next to them. Lives outside the library's
import path: `inspector.models` and the registry in `inspector.bundled` never import this module
(``python -m inspector.bundled build`` forwards here).

One concern that reads better whole (about 660 lines): the two seeded build recipes, their shared
corpus/tokenizer steps and the training.json they record (imported only by the build commands).
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import platform
import random
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from inspector.bundled import _TRAINED, BUNDLED_ROOT, CORPUS_DIR, FINAL, README_PATH, list_bundled

# ----------------------------------------------------------------------------- build settings

@dataclass
class GPT2Settings:
    vocab_size: int = 8000
    d_model: int = 128
    n_layer: int = 4
    n_head: int = 4
    context: int = 256             # training window and n_positions
    batch_size: int = 8            # windows per step
    steps: int = 400
    early_step: int = 100          # the intermediate checkpoint step-<early_step>
    # More save points for a training trajectory (log-spaced with 0, early_step and steps: 0, 12, 25,
    # 50, 100, 200, 400). Saving reads no random numbers (dropout is 0, batches come from a seeded
    # generator of their own), so adding save points leaves every trained weight unchanged.
    extra_steps: tuple[int, ...] = (12, 25, 50, 200)
    lr: float = 3e-3               # peak; linear warmup then cosine to lr/10
    warmup: int = 30
    weight_decay: float = 0.1
    eval_every: int = 100


@dataclass
class BERTSettings:
    vocab_size: int = 8000
    d_model: int = 128
    n_layer: int = 4
    n_head: int = 4
    max_len: int = 64              # [CLS] A [SEP] B [SEP], also max_position_embeddings
    batch_size: int = 32           # sentence pairs per step
    steps: int = 4000              # a post-LN BERT sits on the unigram plateau (masked accuracy = always '.')
    early_step: int = 500          # for its first few hundred steps; NSP leaves chance only after ~1000
    lr: float = 1e-3               # at 2e-3 (batch 32 x 128) it was still on the plateau after 400 steps
    warmup: int = 100
    weight_decay: float = 0.1
    eval_every: int = 500
    eval_pairs: int = 512          # fixed validation pairs, masked once with a fixed seed
    mask_prob: float = 0.15        # chosen tokens; of them 80 % [MASK], 10 % random, 10 % unchanged


def tiny_settings() -> tuple[GPT2Settings, BERTSettings]:
    """A few-second build for tests: same code path, toy sizes."""
    gpt = GPT2Settings(vocab_size=400, d_model=32, n_layer=2, n_head=2, context=32, batch_size=4, steps=2,
                       early_step=1, extra_steps=(), warmup=1, eval_every=1)
    bert = BERTSettings(vocab_size=400, d_model=32, n_layer=2, n_head=2, max_len=32, batch_size=4, steps=2,
                        early_step=1, warmup=1, eval_every=1, eval_pairs=16)
    return gpt, bert


# ----------------------------------------------------------------------------- corpus and tokenizers

def read_documents(path: Path, max_chars: int | None = None) -> list[str]:
    """Documents separated by blank lines (one paragraph per line inside a document)."""
    text = path.read_text(encoding="utf-8")
    if max_chars is not None:
        text = text[:max_chars]
    return [doc.strip() for doc in text.split("\n\n") if doc.strip()]


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'`])")


def split_sentences(document: str) -> list[str]:
    return [s for paragraph in document.split("\n") for s in _SENTENCE_END.split(paragraph) if s.strip()]


EOT = "<|endoftext|>"
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_gpt2_tokenizer(documents: list[str], vocab_size: int, context: int):
    """Byte-level BPE as in GPT-2 (no prefix space, <|endoftext|> = id 0) -> (raw, transformers) tokenizers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import GPT2TokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    raw.train_from_iterator(documents, trainer)
    wrapped = GPT2TokenizerFast(tokenizer_object=raw, bos_token=EOT, eos_token=EOT, unk_token=EOT,
                                model_max_length=context)
    return raw, wrapped


def train_bert_tokenizer(documents: list[str], vocab_size: int, max_len: int):
    """Uncased WordPiece with BERT's normaliser, pre-tokeniser and [CLS] A [SEP] B [SEP] template."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    raw = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    raw.normalizer = normalizers.BertNormalizer(lowercase=True)
    raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    raw.decoder = decoders.WordPiece()
    raw.train_from_iterator(documents, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=BERT_SPECIALS,
                                                                 show_progress=False))
    cls_id, sep_id = raw.token_to_id("[CLS]"), raw.token_to_id("[SEP]")
    raw.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    wrapped = BertTokenizerFast(tokenizer_object=raw, do_lower_case=True, unk_token="[UNK]", sep_token="[SEP]",
                                pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]", model_max_length=max_len)
    return raw, wrapped


# ----------------------------------------------------------------------------- training helpers

def _lr_at(step: int, peak: float, warmup: int, total: int) -> float:
    """Linear warmup to `peak`, then cosine down to peak/10 at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _optimizer(model, lr: float, weight_decay: float):
    import torch
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))


def _step(model, optimizer, loss) -> None:
    """One AdamW update with the gradient norm clipped at 1.0 (both models train this way)."""
    import torch

    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()


def save_checkpoint(model, tokenizer, folder: Path) -> None:
    """save_pretrained with fp16 safetensors (half the bytes) and config dtype float32, so a plain
    from_pretrained (dtype="auto" reads config.json) returns a float32 model."""
    folder.mkdir(parents=True, exist_ok=True)
    copy.deepcopy(model).half().save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["dtype"] = "float32"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _checkpoint_steps(steps: int, early: int, extra: tuple[int, ...] = ()) -> dict[int, str]:
    names = {0: "step-0", steps: FINAL}
    for step in (early, *extra):
        if 0 < step < steps:
            names[step] = f"step-{step}"
    return dict(sorted(names.items()))


class _Log:
    def __init__(self, quiet: bool):
        self.quiet, self.start = quiet, time.time()

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"[{time.time() - self.start:7.1f}s] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- GPT-2

def _gpt2_stream(raw_tokenizer, documents: list[str]):
    """All documents as one id stream, each followed by <|endoftext|> (as GPT-2 was trained)."""
    import torch
    eot = raw_tokenizer.token_to_id(EOT)
    ids: list[int] = []
    for encoding in raw_tokenizer.encode_batch(documents):
        ids.extend(encoding.ids)
        ids.append(eot)
    return torch.tensor(ids, dtype=torch.long)


def _gpt2_valid_loss(model, windows, batch_size: int = 16) -> float:
    """Mean next-token cross-entropy (nats) over every target of the fixed validation windows."""
    import torch
    import torch.nn.functional as F
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(windows), batch_size):
            x = windows[i:i + batch_size]                                   # (B, T)
            logits = model(input_ids=x).logits[:, :-1]                       # (B, T-1, V)
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                     reduction="sum").item()
            count += x[:, 1:].numel()
    model.train()
    return total / count


def build_gpt2(out: Path, train_docs: list[str], valid_docs: list[str], s: GPT2Settings, seed: int,
               log: Callable[[str], None]) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    raw, tokenizer = train_gpt2_tokenizer(train_docs, s.vocab_size, s.context)
    train_ids, valid_ids = _gpt2_stream(raw, train_docs), _gpt2_stream(raw, valid_docs)
    n_windows = len(valid_ids) // s.context
    windows = valid_ids[:n_windows * s.context].view(n_windows, s.context)    # (N, T) fixed validation set
    log(f"gpt2-mini: vocab {raw.get_vocab_size()}, {len(train_ids):,} train / {windows[:, 1:].numel():,} valid tokens")

    # Unigram baseline: add-one smoothed train frequencies, scored on the same validation targets.
    counts = torch.bincount(train_ids, minlength=s.vocab_size).double() + 1.0
    log_p = torch.log(counts / counts.sum())
    unigram_loss = float(-log_p[windows[:, 1:].reshape(-1)].mean())

    torch.manual_seed(seed)
    eot = raw.token_to_id(EOT)
    config = GPT2Config(vocab_size=raw.get_vocab_size(), n_positions=s.context, n_embd=s.d_model,
                        n_layer=s.n_layer, n_head=s.n_head, n_inner=4 * s.d_model, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=eot, eos_token_id=eot,
                        tie_word_embeddings=True)
    model = GPT2LMHeadModel(config)
    model.train()
    optimizer = _optimizer(model, s.lr, s.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    saves = _checkpoint_steps(s.steps, s.early_step, s.extra_steps)
    train_loss: list[float] = []
    valid_curve: list[list[float]] = []
    checkpoints: dict[str, dict] = {}
    t0 = time.time()
    for step in range(s.steps + 1):
        if step in saves:
            folder = out / saves[step]
            save_checkpoint(model, tokenizer, folder)
            reloaded = AutoModelForCausalLM.from_pretrained(folder)          # score what was saved (fp16 weights)
            loss = _gpt2_valid_loss(reloaded, windows)
            checkpoints[saves[step]] = {"step": step, "valid_loss": loss, "valid_perplexity": math.exp(loss)}
            valid_curve.append([step, loss])
            log(f"gpt2-mini: saved {saves[step]} valid loss {loss:.3f} (ppl {math.exp(loss):.1f})")
        elif step % s.eval_every == 0:
            valid_curve.append([step, _gpt2_valid_loss(model, windows)])
        if step == s.steps:
            break
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, s.lr, s.warmup, s.steps)
        starts = torch.randint(0, len(train_ids) - s.context, (s.batch_size,), generator=generator)
        x = torch.stack([train_ids[i:i + s.context] for i in starts.tolist()])   # (B, T)
        loss = model(input_ids=x, labels=x).loss                                  # labels shift inside
        _step(model, optimizer, loss)
        train_loss.append(loss.item())
        if (step + 1) % 25 == 0:
            log(f"gpt2-mini step {step + 1}/{s.steps} loss {sum(train_loss[-25:]) / 25:.3f} "
                f"({(time.time() - t0) / (step + 1):.2f} s/step)")
    return {
        "model": "gpt2-mini", "architecture": "GPT2LMHeadModel", "seed": seed, "settings": asdict(s),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_tokens": len(train_ids), "valid_targets": windows[:, 1:].numel(),
        "train_loss": train_loss, "valid_loss": valid_curve, "checkpoints": checkpoints,
        "baselines": {"unigram_valid_loss": unigram_loss, "unigram_valid_perplexity": math.exp(unigram_loss),
                      "uniform_valid_perplexity": float(raw.get_vocab_size())},
        "train_seconds": time.time() - t0,
        "notes": "loss = mean next-token cross-entropy in nats; valid figures over every target of the "
                 "non-overlapping 256-token windows of valid.txt, scored on the saved (fp16) checkpoint.",
    }


# ----------------------------------------------------------------------------- BERT

@dataclass
class _PairMaker:
    """BERT pre-training examples: sentence pairs (50 % true next), 15 % of tokens chosen for MLM."""

    docs: list[list[list[int]]]        # document -> sentences -> token ids (no specials)
    max_len: int
    vocab_size: int
    cls_id: int
    sep_id: int
    mask_id: int
    first_normal_id: int               # ids below this are special tokens
    mask_prob: float
    multi: list[int] = field(init=False)

    def __post_init__(self):
        self.multi = [i for i, d in enumerate(self.docs) if len(d) >= 2]

    def _take(self, sentences: list[list[int]], start: int, budget: int, stop: int) -> tuple[list[int], int]:
        """Whole sentences from `start` while they fit in `budget` (always at least one)."""
        out, i = list(sentences[start]), start + 1
        while i < stop and len(out) + len(sentences[i]) <= budget:
            out.extend(sentences[i])
            i += 1
        return out, i

    def pair(self, rng: random.Random) -> tuple[list[int], list[int], int]:
        target = self.max_len - 3
        d = self.multi[rng.randrange(len(self.multi))]
        sents = self.docs[d]
        start = rng.randrange(len(sents) - 1)
        a, end = self._take(sents, start, max(1, target // 2), len(sents) - 1)
        if rng.random() < 0.5:
            b, _ = self._take(sents, end, target - len(a), len(sents))
            is_random = 0                                            # 0 = B continues A (HF convention)
        else:
            other = rng.randrange(len(self.docs) - 1)
            other += other >= d                                      # any document but this one
            k = rng.randrange(len(self.docs[other]))
            b, _ = self._take(self.docs[other], k, target - len(a), len(self.docs[other]))
            is_random = 1
        while len(a) + len(b) > target:                              # trim the longer side from its end
            (a if len(a) > len(b) else b).pop()
        return a, b, is_random

    def example(self, rng: random.Random) -> dict:
        a, b, nsp = self.pair(rng)
        ids = [self.cls_id] + a + [self.sep_id] + b + [self.sep_id]
        types = [0] * (len(a) + 2) + [1] * (len(b) + 1)
        labels = [-100] * len(ids)
        candidates = [i for i, t in enumerate(ids) if t >= self.first_normal_id]
        for i in rng.sample(candidates, max(1, round(self.mask_prob * len(candidates)))):
            labels[i] = ids[i]
            r = rng.random()
            if r < 0.8:
                ids[i] = self.mask_id
            elif r < 0.9:
                ids[i] = rng.randrange(self.first_normal_id, self.vocab_size)
        return {"input_ids": ids, "token_type_ids": types, "labels": labels, "next_sentence_label": nsp}


def _collate(examples: list[dict], pad_id: int) -> dict:
    import torch
    width = max(len(e["input_ids"]) for e in examples)

    def pad(key, value):
        return torch.tensor([e[key] + [value] * (width - len(e[key])) for e in examples])

    return {"input_ids": pad("input_ids", pad_id), "token_type_ids": pad("token_type_ids", 0),
            "attention_mask": torch.tensor([[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"]))
                                            for e in examples]),
            "labels": pad("labels", -100),
            "next_sentence_label": torch.tensor([e["next_sentence_label"] for e in examples])}


def _bert_eval(model, batches: list[dict]) -> dict:
    """MLM loss/accuracy over every chosen position and NSP loss/accuracy of the fixed validation pairs."""
    import torch
    import torch.nn.functional as F
    model.eval()
    mlm_sum = nsp_sum = 0.0
    mlm_right = nsp_right = mlm_n = nsp_n = 0
    with torch.no_grad():
        for batch in batches:
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        token_type_ids=batch["token_type_ids"])
            chosen = batch["labels"] != -100
            logits, targets = out.prediction_logits[chosen], batch["labels"][chosen]      # (M, V), (M,)
            mlm_sum += F.cross_entropy(logits, targets, reduction="sum").item()
            mlm_right += int((logits.argmax(-1) == targets).sum())
            mlm_n += len(targets)
            nsp = out.seq_relationship_logits                                               # (B, 2)
            nsp_sum += F.cross_entropy(nsp, batch["next_sentence_label"], reduction="sum").item()
            nsp_right += int((nsp.argmax(-1) == batch["next_sentence_label"]).sum())
            nsp_n += len(nsp)
    model.train()
    return {"mlm_loss": mlm_sum / mlm_n, "mlm_accuracy": mlm_right / mlm_n,
            "nsp_loss": nsp_sum / nsp_n, "nsp_accuracy": nsp_right / nsp_n,
            "loss": mlm_sum / mlm_n + nsp_sum / nsp_n, "masked_positions": mlm_n, "pairs": nsp_n}


def bert_pretraining_losses(model, batch: dict):
    """(MLM, NSP) cross-entropies whose sum equals BertForPreTraining(**batch).loss, but the vocabulary
    projection runs only on the ~15 % chosen positions instead of every position."""
    import torch.nn.functional as F
    sequence, pooled = model.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                  token_type_ids=batch["token_type_ids"])[:2]             # (B, T, D), (B, D)
    chosen = batch["labels"] != -100                                                       # (B, T)
    mlm = F.cross_entropy(model.cls.predictions(sequence[chosen]), batch["labels"][chosen])
    nsp = F.cross_entropy(model.cls.seq_relationship(pooled), batch["next_sentence_label"])
    return mlm, nsp


def _bert_docs(raw, documents: list[str], max_sentence: int) -> list[list[list[int]]]:
    sentences = [split_sentences(d) for d in documents]
    flat = [s for doc in sentences for s in doc]
    encoded = iter(e.ids[:max_sentence] for e in raw.encode_batch(flat, add_special_tokens=False))
    docs = [[next(encoded) for _ in doc] for doc in sentences]
    return [[s for s in doc if s] for doc in docs if any(doc)]


def build_bert(out: Path, train_docs: list[str], valid_docs: list[str], s: BERTSettings, seed: int,
               log: Callable[[str], None]) -> dict:
    import torch
    from transformers import BertConfig, BertForPreTraining

    raw, tokenizer = train_bert_tokenizer(train_docs, s.vocab_size, s.max_len)
    vocab = raw.get_vocab_size()
    ids = {t: raw.token_to_id(t) for t in BERT_SPECIALS}
    assert sorted(ids.values()) == list(range(len(BERT_SPECIALS))), ids
    max_sentence = (s.max_len - 3) // 2
    train_sents, valid_sents = _bert_docs(raw, train_docs, max_sentence), _bert_docs(raw, valid_docs, max_sentence)

    def maker(docs):
        return _PairMaker(docs, s.max_len, vocab, ids["[CLS]"], ids["[SEP]"], ids["[MASK]"], len(BERT_SPECIALS),
                          s.mask_prob)

    train_maker = maker(train_sents)
    valid_rng = random.Random(seed + 1)
    valid_examples = [maker(valid_sents).example(valid_rng) for _ in range(s.eval_pairs)]
    valid_batches = [_collate(valid_examples[i:i + 32], ids["[PAD]"]) for i in range(0, len(valid_examples), 32)]

    # Baseline: always predict the most frequent training token at the chosen positions.
    counts = torch.bincount(torch.tensor([t for d in train_sents for sent in d for t in sent]), minlength=vocab)
    top = int(counts.argmax())
    labels = torch.cat([b["labels"][b["labels"] != -100] for b in valid_batches])
    log_p = torch.log((counts.double() + 1) / (counts.sum() + vocab))
    baselines = {"most_frequent_token": raw.id_to_token(top),
                 "most_frequent_token_accuracy": float((labels == top).double().mean()),
                 "unigram_mlm_loss": float(-log_p[labels].mean()), "nsp_chance_accuracy": 0.5}
    log(f"bert-mini: vocab {vocab}, {int(counts.sum()):,} train tokens, {len(labels)} masked valid positions, "
        f"baseline '{baselines['most_frequent_token']}' {baselines['most_frequent_token_accuracy']:.3f}")

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab, hidden_size=s.d_model, num_hidden_layers=s.n_layer,
                        num_attention_heads=s.n_head, intermediate_size=4 * s.d_model,
                        max_position_embeddings=s.max_len, type_vocab_size=2, pad_token_id=ids["[PAD]"],
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BertForPreTraining(config)
    model.train()
    optimizer = _optimizer(model, s.lr, s.weight_decay)
    rng = random.Random(seed)
    saves = _checkpoint_steps(s.steps, s.early_step)
    train_loss: list[float] = []
    train_mlm: list[float] = []
    train_nsp: list[float] = []
    valid_curve: list[dict] = []
    checkpoints: dict[str, dict] = {}
    t0 = time.time()
    for step in range(s.steps + 1):
        if step in saves:
            folder = out / saves[step]
            save_checkpoint(model, tokenizer, folder)
            figures = _bert_eval(BertForPreTraining.from_pretrained(folder), valid_batches)
            checkpoints[saves[step]] = {"step": step, **figures}
            valid_curve.append({"step": step, **figures})
            log(f"bert-mini: saved {saves[step]} MLM acc {figures['mlm_accuracy']:.3f} "
                f"loss {figures['mlm_loss']:.3f}, NSP acc {figures['nsp_accuracy']:.3f}")
        elif step % s.eval_every == 0:
            figures = _bert_eval(model, valid_batches)
            valid_curve.append({"step": step, **figures})
            log(f"bert-mini: step {step} MLM acc {figures['mlm_accuracy']:.3f} "
                f"loss {figures['mlm_loss']:.3f}, NSP acc {figures['nsp_accuracy']:.3f}")
        if step == s.steps:
            break
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, s.lr, s.warmup, s.steps)
        batch = _collate([train_maker.example(rng) for _ in range(s.batch_size)], ids["[PAD]"])
        mlm, nsp = bert_pretraining_losses(model, batch)
        loss = mlm + nsp
        _step(model, optimizer, loss)
        train_loss.append(loss.item())
        train_mlm.append(mlm.item())
        train_nsp.append(nsp.item())
        if (step + 1) % 50 == 0:
            log(f"bert-mini step {step + 1}/{s.steps} loss {sum(train_loss[-50:]) / 50:.3f} "
                f"(mlm {sum(train_mlm[-50:]) / 50:.3f}) ({(time.time() - t0) / (step + 1):.2f} s/step)")
    return {
        "model": "bert-mini", "architecture": "BertForPreTraining", "seed": seed, "settings": asdict(s),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_tokens": int(counts.sum()),
        "train_loss": train_loss, "train_mlm_loss": train_mlm, "train_nsp_loss": train_nsp,
        "valid": valid_curve, "checkpoints": checkpoints, "baselines": baselines,
        "train_seconds": time.time() - t0,
        "notes": "loss = MLM + NSP cross-entropy (nats). MLM figures over every chosen position (15 % of "
                 "tokens: 80 % [MASK], 10 % random, 10 % unchanged) of a fixed, seeded set of validation "
                 "pairs from valid.txt (50 % true next); scored on the saved (fp16) checkpoint.",
    }


# ----------------------------------------------------------------------------- build driver

def _environment(corpus_dir: Path) -> dict:
    import tokenizers
    import torch
    import transformers
    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
            "threads": torch.get_num_threads(),
            "corpus_sha256": {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                              for p in sorted(corpus_dir.glob("*.txt"))}}


def _install(staging: Path, final: Path) -> None:
    """Replace `final` by the fully written `staging` folder (no half-built model is ever visible)."""
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)


def _build_one(name: str, out: Path, tiny: bool, seed: int, corpus: Path, threads: int, quiet: bool) -> None:
    """Train one model into `out/.<name>.partial`, then rename it to `out/<name>`."""
    import torch

    torch.set_num_threads(threads)
    started = time.time()
    max_chars = 60_000 if tiny else None
    train_docs = read_documents(corpus / "train.txt", max_chars)
    valid_docs = read_documents(corpus / "valid.txt", max_chars // 4 if max_chars else None)
    gpt_settings, bert_settings = tiny_settings() if tiny else (GPT2Settings(), BERTSettings())
    fn, settings = {"gpt2-mini": (build_gpt2, gpt_settings), "bert-mini": (build_bert, bert_settings)}[name]
    staging = out / f".{name}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    record = fn(staging, train_docs, valid_docs, settings, seed, _Log(quiet))
    record["tiny"] = tiny
    record["build_seconds"] = time.time() - started
    record["environment"] = _environment(corpus)
    (staging / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    _install(staging, out / name)
    _Log(quiet)(f"{name}: done in {record['build_seconds']:.0f} s -> {out / name}")


def build(out_dir: str | Path | None = None, tiny: bool = False, seed: int = 0,
          corpus_dir: str | Path | None = None, models: tuple[str, ...] = ("gpt2-mini", "bert-mini"),
          threads: int = 1, parallel: bool = True, quiet: bool = False) -> Path:
    """Train the bundled models into `out_dir` (default data/models; with `tiny`, a new temp dir).

    Each model gets `<out>/<name>/{step-0, step-<early>, final}/` (save_pretrained folders with the
    tokenizer) and `<out>/<name>/training.json`. With `parallel` (and more than one model) each model
    trains in its own process with `threads` threads: on 2 cores two 1-thread processes finish sooner
    than one 2-thread process training them in turn. Returns `out_dir`.
    """
    corpus = Path(corpus_dir) if corpus_dir is not None else CORPUS_DIR
    if out_dir is None:
        out_dir = Path(tempfile.mkdtemp(prefix="inspector-bundled-")) if tiny else BUNDLED_ROOT
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(name, out, tiny, seed, corpus, threads, quiet) for name in models]
    if parallel and len(jobs) > 1 and not tiny:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(len(jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
            for future in [pool.submit(_build_one, *job) for job in jobs]:
                future.result()                                  # re-raises a worker's exception
    else:
        for job in jobs:
            _build_one(*job)
    if not tiny and out.resolve() == BUNDLED_ROOT.resolve() and README_PATH.exists():
        write_results_into_readme(out, README_PATH)
    return out


# ----------------------------------------------------------------------------- figures for data/README.md

_BEGIN, _END = "<!-- bundled-results:begin -->", "<!-- bundled-results:end -->"


def results_markdown(models_dir: Path) -> str:
    """Markdown tables of the held-out figures stored in each training.json."""
    lines = []
    gpt_path, bert_path = models_dir / "gpt2-mini" / "training.json", models_dir / "bert-mini" / "training.json"
    if gpt_path.exists():
        g = json.loads(gpt_path.read_text())
        lines += ["**gpt2-mini** — validation perplexity on valid.txt "
                  f"({g['valid_targets']:,} next-token targets; {g['parameters']:,} parameters, "
                  f"{g['settings']['steps']} steps, {g['train_seconds'] / 60:.1f} min):", "",
                  "| checkpoint | valid loss (nats) | valid perplexity |", "|---|---|---|"]
        for name, c in g["checkpoints"].items():
            mark = " (rebuild: see below)" if c.get("run") == "rebuild" else ""
            lines.append(f"| {name}{mark} | {c['valid_loss']:.3f} | {c['valid_perplexity']:.1f} |")
        b = g["baselines"]
        lines += [f"| unigram baseline (add-one, train counts) | {b['unigram_valid_loss']:.3f} | "
                  f"{b['unigram_valid_perplexity']:.1f} |",
                  f"| uniform over the vocabulary | {math.log(b['uniform_valid_perplexity']):.3f} | "
                  f"{b['uniform_valid_perplexity']:.0f} |", ""]
        if "rebuild" in g:
            lines += [g["rebuild"]["notes"], ""]
    if bert_path.exists():
        r = json.loads(bert_path.read_text())
        first = next(iter(r["checkpoints"].values()))
        lines += ["**bert-mini** — masked-token prediction and NSP on "
                  f"{first['pairs']} validation pairs ({first['masked_positions']:,} masked positions; "
                  f"{r['parameters']:,} parameters, {r['settings']['steps']} steps, "
                  f"{r['train_seconds'] / 60:.1f} min):", "",
                  "| checkpoint | MLM accuracy | MLM loss | NSP accuracy |", "|---|---|---|---|"]
        for name, c in r["checkpoints"].items():
            lines.append(f"| {name} | {c['mlm_accuracy']:.3f} | {c['mlm_loss']:.3f} | {c['nsp_accuracy']:.3f} |")
        b = r["baselines"]
        lines += [f"| baseline: always '{b['most_frequent_token']}' / unigram / chance | "
                  f"{b['most_frequent_token_accuracy']:.3f} | {b['unigram_mlm_loss']:.3f} | "
                  f"{b['nsp_chance_accuracy']:.3f} |", ""]
    return "\n".join(lines)


def write_results_into_readme(models_dir: Path, readme: Path) -> None:
    text = readme.read_text(encoding="utf-8")
    if _BEGIN not in text or _END not in text:
        return
    head, rest = text.split(_BEGIN, 1)
    _, tail = rest.split(_END, 1)
    readme.write_text(f"{head}{_BEGIN}\n{results_markdown(models_dir)}\n{_END}{tail}", encoding="utf-8")


# ----------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inspector.training", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="train the bundled models (seeded)")
    b.add_argument("--tiny", action="store_true", help="toy sizes, 2 steps, into a temp dir (for tests)")
    b.add_argument("--out", type=Path, default=None, help="output folder (default data/models)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--corpus", type=Path, default=None, help="folder with train.txt and valid.txt")
    b.add_argument("--only", choices=sorted(_TRAINED), action="append", help="build only this model")
    b.add_argument("--threads", type=int, default=1,
                   help="torch threads per model (default 1: on a shared 2-core machine 2 threads ran ~2x slower)")
    b.add_argument("--sequential", action="store_true", help="train the models one after the other")
    sub.add_parser("list", help="list the bundled models and their checkpoints")
    sub.add_parser("results", help="print the held-out figures as Markdown")
    args = parser.parse_args(argv)
    if args.command == "build":
        out = build(args.out, tiny=args.tiny, seed=args.seed, corpus_dir=args.corpus,
                    models=tuple(args.only or ("gpt2-mini", "bert-mini")), threads=args.threads,
                    parallel=not args.sequential)
        print(out)
    elif args.command == "list":
        for m in list_bundled():
            state = ", ".join(m.checkpoints) if m.available else "not available"
            print(f"{m.name:10} {m.kind:12} [{state}] {m.description}")
    else:
        print(results_markdown(BUNDLED_ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
