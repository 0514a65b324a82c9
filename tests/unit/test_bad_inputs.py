"""The table of hostile and broken inputs: each row names the input and the clear message expected.

A row expects either a typed `InspectorError` whose message matches, or success (`None`) with an
extra check. No row may end in an untyped exception (a traceback in the UI).
"""
from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from conftest import tiny_bert_model, tiny_gpt2_model
from inspector import inputs, models
from inspector.analyses import attention, attribution, compare, embeddings, loss
from inspector.escaping import WORD_JOINER, md_literal
from inspector.errors import (CorruptCheckpointError, HubUnreachableError, InputError, InspectorError,
                              ModelNotFoundError, NotAvailableError, PathNotAllowedError, RemoteCodeError,
                              ReportPathError, ResourceLimitError, UnsafeWeightsError,
                              UnsupportedArchitectureError)


@dataclass
class Row:
    name: str
    run: Callable  # (ctx) -> result
    error: type | None  # expected typed error, or None for "works"
    message: str = ""  # regex the message must contain
    check: Callable | None = None  # extra check of the result when it works


class Ctx:
    """Models and folders built once for the whole table."""

    def __init__(self, tmp: Path):
        from inspector.models import wrap

        self.tmp = tmp
        gpt_model, gpt_tok = tiny_gpt2_model()
        self.gpt2 = wrap(gpt_model, gpt_tok)
        self.bert = wrap(*tiny_bert_model())
        self.bert_mlm = wrap(*tiny_bert_model(cls_name="BertForMaskedLM"))
        self.gpt2_deep = wrap(*tiny_gpt2_model(n_layer=3))
        self.gpt2_folder = tmp / "gpt2"
        gpt_model.save_pretrained(self.gpt2_folder)
        gpt_tok.save_pretrained(self.gpt2_folder)
        self.state_dict = gpt_model.state_dict()

    def copy_folder(self, name: str, skip_weights: bool = False) -> Path:
        dst = self.tmp / name
        dst.mkdir()
        for f in self.gpt2_folder.iterdir():
            if skip_weights and f.suffix == ".safetensors":
                continue
            (dst / f.name).write_bytes(f.read_bytes())
        return dst


def _no_weights(c):
    return models.load(str(c.copy_folder("noweights", skip_weights=True)))


def _truncated(c):
    d = c.copy_folder("truncated")
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    return models.load(str(d))


def _pickle_only(c, allow: bool):
    import torch

    d = c.copy_folder(f"pickle{allow}", skip_weights=True)
    torch.save(c.state_dict, d / "pytorch_model.bin")
    return models.load(str(d), allow_pickle=allow)


def _remote_code(c):
    d = c.copy_folder("remote")
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "evil.Model"}
    (d / "config.json").write_text(json.dumps(cfg))
    return models.load(str(d))


def _unsupported(c):
    from transformers import T5Config, T5ForConditionalGeneration

    d = c.tmp / "t5"
    T5ForConditionalGeneration(T5Config(d_model=16, num_layers=1, num_heads=2, d_kv=8, d_ff=16,
                                        vocab_size=50)).save_pretrained(d)
    return models.load(str(d))


def _outside_roots(c, path_fn):
    root = c.tmp / "root"
    root.mkdir(exist_ok=True)
    return models.check_path_allowed(path_fn(c, root), roots=[root])


def _symlink_out(c, root):
    link = root / "escape"
    if not link.exists():
        link.symlink_to(c.gpt2_folder, target_is_directory=True)
    return str(link)


def _safetensors_header(c, name: str, header: bytes):
    """A folder whose model.safetensors has `header` as its JSON header (and some bytes of data)."""
    import struct

    d = c.copy_folder(name)
    (d / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 64)
    return models.load(str(d))


def _edited_json(c, name: str, file: str, edit: Callable[[dict], None], **load_kwargs):
    d = c.copy_folder(name)
    data = json.loads((d / file).read_text())
    edit(data)
    (d / file).write_text(json.dumps(data))
    return models.load(str(d), **load_kwargs)


class _RunsCode:
    def __reduce__(self):
        return (print, ("this would run",))


def _pickle_with_code(c):
    """Pickle weights explicitly allowed, holding an object the safe unpickler (weights_only=True) refuses."""
    import torch

    d = c.copy_folder("pickle_code", skip_weights=True)
    torch.save({**c.state_dict, "extra": _RunsCode()}, d / "pytorch_model.bin")
    return models.load(str(d), allow_pickle=True)


def _with_cap(c, cap: str):
    os.environ["INSPECTOR_MAX_MODEL_BYTES"] = cap
    try:
        return models.load(str(c.gpt2_folder))
    finally:
        os.environ.pop("INSPECTOR_MAX_MODEL_BYTES", None)


def _long_pair_nsp(c):
    long = "The cat sat on the mat and looked at the birds outside. " * 20
    return loss.next_sentence(c.bert, long, "It was happy on the mat. " * 20)


def _default_gradient_position_bert_pair(c):
    """The token-loss page's default position (middle of the offered ones) on a BERT sentence pair."""
    from pages._common import gradient_positions

    enc = inputs.encode(c.bert_mlm, "The cat sat on the mat.", "It was happy on the mat.")
    offered = list(gradient_positions(enc, causal=False))
    assert offered and not any(enc.special[i] for i in offered)
    return loss.logit_gradient_check(c.bert_mlm, enc, offered[len(offered) // 2])


def _md_shown(md: str) -> str:
    """What a CommonMark renderer shows for `md`: its HTML must hold no tag but the paragraph."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").render(md)


HOSTILE_MARKDOWN = "**bold** _em_ [link](http://example.com) $x^2$ <b>tag</b> `code` # heading :material/home:"


def _hub_unreachable(monkeypatch_env):
    os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing listens on the discard port
    os.environ["HF_HUB_OFFLINE"] = "0"
    try:
        return models.load("someone/some-model")
    finally:
        os.environ.pop("HF_ENDPOINT", None)
        os.environ["HF_HUB_OFFLINE"] = "1"


def _works_finite_perplexity(r):
    assert np.isfinite(r.perplexity) and r.n_scored >= 1


TEXT = "The quick brown fox jumps over the lazy dog."

ROWS = [
    # ---- text
    Row("empty text", lambda c: loss.causal_token_loss(c.gpt2, ""), InputError, "empty"),
    Row("whitespace-only text", lambda c: loss.causal_token_loss(c.gpt2, " \n\t  "), InputError, "empty"),
    Row("one-token text (causal loss)", lambda c: loss.causal_token_loss(c.gpt2, "x"), InputError, "at least 2"),
    Row("100 000-character text", lambda c: loss.causal_token_loss(c.gpt2, "a" * 100_000), ResourceLimitError,
        "limit is"),
    Row("only NUL and control characters", lambda c: inputs.encode(c.gpt2, "\x00\x01\x02\x7f"), InputError,
        "empty"),
    Row("NUL inside text is dropped", lambda c: inputs.encode(c.gpt2, "a\x00b the fox"), None,
        check=lambda r: "\x00" not in r.text and r.n_tokens >= 2),
    Row("emoji", lambda c: loss.causal_token_loss(c.gpt2, "I 🙂 love 🚀 rockets 👩‍👩‍👧"), None,
        check=_works_finite_perplexity),
    Row("Vietnamese", lambda c: loss.causal_token_loss(c.gpt2, "Tiếng Việt có dấu, người ta nói."), None,
        check=_works_finite_perplexity),
    Row("CJK", lambda c: loss.causal_token_loss(c.gpt2, "漢字とかなを混ぜた文章です。中文句子。"), None,
        check=_works_finite_perplexity),
    Row("right-to-left scripts", lambda c: loss.pseudo_log_likelihood(c.bert, "مرحبا بالعالم שלום עולם"), None,
        check=lambda r: np.isfinite(r.pll)),
    Row("zero-width and bidi control characters",
        lambda c: loss.causal_token_loss(c.gpt2, "a\u200bb\u200c c\u200d d \u2067rtl\u2069 e\ufeff"), None,
        check=_works_finite_perplexity),
    Row("<script> in text keeps the raw string for escaping at display time",
        lambda c: inputs.encode(c.gpt2, "<script>alert(1)</script>"), None,
        check=lambda r: "".join(r.tokens).replace(" ", "") .startswith("<script>")),
    Row("blank text to attribution", lambda c: attribution.attribute(c.gpt2, "  \n "), InputError, "empty"),
    Row("BERT sentence pair longer than the context: NSP cuts it and says so", _long_pair_nsp, None,
        check=lambda r: r.truncated and len(r.tokens) == 64 and 0.0 <= r.p_is_next <= 1.0),
    Row("BERT sentence pair: the default gradient position is a word piece, never [SEP]",
        _default_gradient_position_bert_pair, None, check=lambda g: g.target_token not in ("[SEP]", "[CLS]")),
    Row("Markdown, LaTeX, links and HTML in user input are quoted literally", lambda c: _md_shown(
        md_literal(HOSTILE_MARKDOWN)), None,
        check=lambda h: h.startswith("<p>") and h.count("<") == 2 and "href" not in h
        and html.unescape(h[3:-5]).replace(WORD_JOINER, "") == HOSTILE_MARKDOWN),
    Row("second sentence only whitespace is ignored",
        lambda c: inputs.encode(c.bert, TEXT, "   "), None, check=lambda r: r.text_pair is None),
    # ---- models
    Row("unknown bundled model", lambda c: models.load("bundled:no-such-model"), ModelNotFoundError, "no-such"),
    Row("unknown hub id while offline", lambda c: models.load("no-such-org/no-such-model"), HubUnreachableError,
        "cannot be reached"),
    Row("hub unreachable (endpoint refuses)", _hub_unreachable, HubUnreachableError, "cannot be reached"),
    Row("model spec with control characters", lambda c: models.load("gpt2\x00"), InputError, "control"),
    Row("missing local folder", lambda c: models.load("/no/such/folder"), ModelNotFoundError, "does not exist"),
    Row("local folder with no weights", _no_weights, CorruptCheckpointError, "no weights"),
    Row("truncated safetensors file", _truncated, CorruptCheckpointError, "truncated|not a valid"),
    Row("only a pickle .bin (refused)", lambda c: _pickle_only(c, False), UnsafeWeightsError, "pickle"),
    Row("only a pickle .bin (explicitly allowed)", lambda c: _pickle_only(c, True), None,
        check=lambda lm: lm.family == "gpt2"),
    Row("config asking for trust_remote_code", _remote_code, RemoteCodeError, "trust_remote_code"),
    Row("unsupported architecture (T5)", _unsupported, UnsupportedArchitectureError, "not supported"),
    Row("safetensors header is a JSON list", lambda c: _safetensors_header(c, "st_list", b"[1, 2, 3]"),
        CorruptCheckpointError, "header is a JSON list, not an object"),
    Row("safetensors entry is not an object", lambda c: _safetensors_header(c, "st_entry", b'{"wte": 5}'),
        CorruptCheckpointError, "entry of tensor 'wte' is a JSON int, not an object"),
    Row("safetensors header nested 200 000 deep",
        lambda c: _safetensors_header(c, "st_deep", b"[" * 200_000 + b"]" * 200_000),
        CorruptCheckpointError, "nested more than 64 levels"),
    Row("safetensors tensor with an unknown dtype",
        lambda c: _safetensors_header(c, "st_dtype", json.dumps(
            {"wte": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}}).encode()),
        CorruptCheckpointError, "unknown dtype 'Q7'"),
    Row("safetensors byte count does not match dtype x shape",
        lambda c: _safetensors_header(c, "st_size", json.dumps(
            {"wte": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}).encode()),
        CorruptCheckpointError, "should take 16 bytes"),
    Row("pickle allowed, but the safe unpickler refuses it", _pickle_with_code, UnsafeWeightsError,
        "safe unpickler .*refused"),
    Row("config with absurd sizes (10^6 layers, 4096 wide)",
        lambda c: _edited_json(c, "absurd", "config.json", lambda d: d.update(n_layer=10 ** 6, n_embd=4096, n_head=32)),
        ResourceLimitError, "describes about .* parameters .*more than the free memory.*nothing was loaded"),
    Row("config with a negative layer count",
        lambda c: _edited_json(c, "negative", "config.json", lambda d: d.update(n_layer=-3)),
        CorruptCheckpointError, "not a non-negative integer"),
    Row("model larger than INSPECTOR_MAX_MODEL_BYTES", lambda c: _with_cap(c, "10K"), ResourceLimitError,
        "more than the cap INSPECTOR_MAX_MODEL_BYTES"),
    Row("tokenizer_config.json with auto_map (custom tokenizer code)",
        lambda c: _edited_json(c, "tok_auto_map", "tokenizer_config.json",
                               lambda d: d.update(auto_map={"AutoTokenizer": ["evil.Tokenizer", None]})),
        RemoteCodeError, "tokenizer config .*auto_map"),
    Row("unknown dtype", lambda c: models.load(str(c.gpt2_folder), dtype="float8"), InputError, "dtype"),
    Row("GPU asked for on a machine without one",
        lambda c: models.resolve_device("cuda") if not __import__("torch").cuda.is_available()
        else (_ for _ in ()).throw(InputError("A GPU was asked for but none is available.")),
        InputError, "GPU"),
    # ---- paths typed into the web UI
    Row("path with '..'", lambda c: _outside_roots(c, lambda c, root: str(root / ".." / "gpt2")),
        PathNotAllowedError, r"\.\."),
    Row("absolute path outside the model roots", lambda c: _outside_roots(c, lambda c, root: "/etc"),
        PathNotAllowedError, "outside"),
    Row("symbolic link out of the roots", lambda c: _outside_roots(c, _symlink_out), PathNotAllowedError,
        "outside"),
    # ---- analyses: heads, ranges, tokens
    Row("MLM asked of a causal model (no mask token)", lambda c: loss.masked_lm_loss(c.gpt2, TEXT),
        NotAvailableError, "not available"),
    Row("NSP asked of a model without the head", lambda c: loss.next_sentence(c.gpt2, "a b", "c d"),
        NotAvailableError, "NSP"),
    Row("unknown token in a neighbour query", lambda c: embeddings.nearest_neighbours(c.gpt2, "zzqqxx", k=5),
        InputError, "not a single token"),
    Row("k = 0 neighbours", lambda c: embeddings.nearest_neighbours(c.gpt2, 5, k=0), InputError, "between 1"),
    Row("k larger than the vocabulary", lambda c: embeddings.nearest_neighbours(c.gpt2, 5, k=10 ** 6),
        InputError, "between 1"),
    Row("top-k = 0", lambda c: loss.causal_token_loss(c.gpt2, TEXT, top_k=0), InputError, "top_k"),
    Row("stride = 0", lambda c: loss.causal_token_loss(c.gpt2, TEXT, stride=0), InputError, "stride"),
    Row("window larger than the context", lambda c: loss.causal_token_loss(c.gpt2, TEXT, window=10 ** 6),
        InputError, "window"),
    Row("attention layer out of range",
        lambda c: attention.attention_pattern(c.gpt2, inputs.encode(c.gpt2, TEXT), 99, 0), InputError, "Layer"),
    Row("attention head out of range",
        lambda c: attention.attention_pattern(c.gpt2, inputs.encode(c.gpt2, TEXT), 0, 99), InputError, "Head"),
    Row("too many texts in one batch", lambda c: inputs.encode_batch(c.gpt2, ["a b"] * 1000), ResourceLimitError,
        "limit"),
    # ---- comparisons
    Row("compare models with different tokenizers: divergences not comparable",
        lambda c: compare.divergence_unavailable_reason(c.gpt2, c.bert, TEXT), None,
        check=lambda reason: reason is not None and "not comparable" in reason and "vocabular" in reason),
    Row("compare models with different layer counts: drift not comparable",
        lambda c: compare.drift_unavailable_reason(c.gpt2, c.gpt2_deep), None,
        check=lambda reason: reason is not None and "layer" in reason.lower()),
    Row("compare models of different kinds: says what is comparable",
        lambda c: compare.compare_models(c.gpt2, c.bert, TEXT), None,
        check=lambda r: r.divergence is None and "not comparable" in r.divergence_unavailable_reason
        and r.words is not None and len(r.comparable) > 0),
]


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return Ctx(tmp_path_factory.mktemp("bad_inputs"))


def test_table_has_at_least_thirty_rows():
    assert len(ROWS) + len(REPORT_ROWS) >= 30


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_bad_input(row: Row, ctx):
    if row.error is None:
        result = row.run(ctx)
        if row.check is not None:
            assert row.check(result) is not False
        return
    with pytest.raises(row.error) as err:
        row.run(ctx)
    assert isinstance(err.value, InspectorError)
    import re

    assert re.search(row.message, str(err.value), re.IGNORECASE), str(err.value)
    assert err.value.user_message().strip()


# ---- report paths (need a built report)


def _report(c):
    from inspector import report

    return report.build_report(c.gpt2, TEXT, sections=("overview",))


def _write_existing(c):
    from inspector import report

    p = c.tmp / "exists.html"
    p.write_text("keep me")
    try:
        report.write_report(_report(c), p)
    finally:
        assert p.read_text() == "keep me"  # nothing lost


def _write_directory(c):
    from inspector import report

    return report.write_report(_report(c), c.tmp)


def _write_unwritable(c):
    """A read-only directory; as root (which ignores permissions) a path whose parent is a file."""
    from inspector import report

    d = c.tmp / "readonly"
    d.mkdir(exist_ok=True)
    d.chmod(0o500)
    try:
        target = d / "r.html"
        if os.access(d, os.W_OK):
            blocker = c.tmp / "a_file"
            blocker.write_text("x")
            target = blocker / "r.html"
        return report.write_report(_report(c), target)
    finally:
        d.chmod(0o700)


REPORT_ROWS = [
    Row("report path that exists", _write_existing, ReportPathError, "exists"),
    Row("report path that is a directory", _write_directory, ReportPathError, "directory"),
    Row("report path not writable", _write_unwritable, ReportPathError, "writ|not a (directory|folder)|cannot"),
]


@pytest.mark.parametrize("row", REPORT_ROWS, ids=[r.name for r in REPORT_ROWS])
def test_bad_report_path(row: Row, ctx):
    test_bad_input(row, ctx)
