"""Reports: one collector, three writers; safe HTML, exact JSON round-trip, atomic writes."""
from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from html.parser import HTMLParser

import numpy as np
import pytest

from conftest import make_gpt2_tokenizer, tiny_bert_model, tiny_gpt2_model
from inspector import report as R
from inspector import report_files, svg_charts
from inspector.analyses import foundations
from inspector.errors import InputError, ReportPathError
from inspector.models import wrap

FAST = {"embeddings_corpus": None, "foundations_corpus": "text", "attribution_steps": 8}
TEXT = "The quick brown fox jumps over the lazy dog. Attention compares queries with keys."
EVIL = "Hello <script>alert(1)</script> & 'quotes' \"double\" <b>bold</b> https://example.com/x?a=1 done."


@pytest.fixture(scope="module")
def gpt2_report(tiny_gpt2):
    return R.build_report(tiny_gpt2, TEXT, settings=FAST, strict=True)


@pytest.fixture(scope="module")
def bert_report(tiny_bert):
    # Attribution and the claims run on GPT-2 above; here what differs for BERT (MLM, NSP, segments).
    return R.build_report(tiny_bert, TEXT, sections=("overview", "layernorm", "attention", "loss", "embeddings"),
                          settings=FAST, strict=True, text_pair="Keys are compared with queries.")


@pytest.fixture(scope="module")
def encoder_lm():
    model, tok = tiny_bert_model(cls_name="BertModel")
    return wrap(model, tok)


@pytest.fixture(scope="module")
def evil_lm():
    """A tiny GPT-2 whose vocabulary has the token '<b>', so a token string itself carries markup."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = make_gpt2_tokenizer()
    tok.add_tokens(["<b>"])
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                       attn_implementation="sdpa")).eval()
    return wrap(model, tok)


@pytest.fixture(scope="module")
def evil_report(evil_lm):
    return R.build_report(evil_lm, EVIL, settings=FAST, strict=True)


# --------------------------------------------------------------------------- collector


def test_every_existing_analysis_runs(gpt2_report):
    assert tuple(gpt2_report.sections) == R.SECTIONS
    for name, sec in gpt2_report.sections.items():
        assert sec.status == "ok", (name, sec.reason)
    att = gpt2_report.result("attention", "logits")
    assert att.std.shape == (2, 4) and att.fidelity_max_abs_diff == 0.0
    assert gpt2_report.section("overview").result.n_tokens == len(gpt2_report.section("overview").result.tokens)


def test_report_metadata(gpt2_report, tiny_gpt2):
    r = gpt2_report
    assert r.schema_version == R.SCHEMA_VERSION and r.kind == "model"
    for key in ("torch", "transformers", "captum", "numpy", "sklearn", "streamlit", "inspector", "python"):
        assert key in r.versions
    assert r.versions["torch"] and r.versions["numpy"]
    created = datetime.fromisoformat(r.created_utc)
    assert created.utcoffset() == timezone.utc.utcoffset(None)
    assert r.model["spec"] == tiny_gpt2.spec and r.model["dtype"] == "float32" and r.model["device"] == "cpu"
    assert {"spec", "revision", "commit_hash", "source"} <= set(r.model["provenance"])
    assert r.settings["attribution_steps"] == 8 and r.settings["layernorm_bins"] == R.DEFAULT_SETTINGS["layernorm_bins"]
    assert r.text == TEXT and r.seconds > 0


def test_encoder_only_model_marks_loss_unavailable(encoder_lm):
    rep = R.build_report(encoder_lm, TEXT, sections=("overview", "loss", "attribution", "attention"), settings=FAST,
                         strict=True)
    for name in ("loss", "attribution"):
        sec = rep.section(name)
        assert sec.status == "unavailable" and "head" in sec.reason
        assert str(sec).startswith("not available: ")
        assert isinstance(rep.result(name), R.Unavailable)
    assert rep.section("attention").available


def test_bert_sections_and_parts(bert_report):
    seg = bert_report.section("embeddings").results["segments"]
    assert seg.n_types == 2
    loss = bert_report.section("loss")
    assert loss.available and loss.results["loss"].n_chosen >= 1
    assert loss.results["nsp"].prediction in ("IsNext", "NotNext")
    assert bert_report.text_pair == "Keys are compared with queries."


_WITHOUT_MODULE = r"""
import sys
sys.modules[MODULE] = None  # this installation lacks the analysis' module
sys.path.insert(0, TESTS)
from conftest import tiny_gpt2_model
from inspector import report as R
from inspector.models import wrap
model, tok = tiny_gpt2_model()
rep = R.build_report(wrap(model, tok), TEXT, sections=("overview", NAME, "layernorm"), settings=FAST, strict=True)
sec = rep.section(NAME)
print(json.dumps({"status": sec.status, "reason": sec.reason, "layernorm": rep.section("layernorm").status,
                  "html": "not available" in R.to_html(rep), "md": "not available" in R.to_markdown(rep),
                  "json": R.report_from_json(R.to_json(rep)).section(NAME).status}))
"""


@pytest.mark.parametrize("name, module", [("attention", "inspector.analyses.attention"),
                                          ("loss", "inspector.analyses.loss_view")])
def test_missing_module_degrades_to_unavailable(name, module):
    """An installation without one analysis' module keeps the report, with that section unavailable and why
    (a fresh interpreter in which importing the module fails, as on an installation without the file)."""
    import subprocess
    import sys
    from pathlib import Path

    prelude = (f"import json\nMODULE = {module!r}\nNAME = {name!r}\nTESTS = {str(Path(__file__).parents[1])!r}\n"
               f"TEXT = {TEXT!r}\nFAST = {FAST!r}\n")
    done = subprocess.run([sys.executable, "-c", prelude + _WITHOUT_MODULE], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["status"] == "unavailable" and module in got["reason"], got
    assert got["layernorm"] == "ok" and got["html"] and got["md"] and got["json"] == "unavailable"


def test_a_broken_section_is_recorded_or_raised(tiny_gpt2, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("kaputt")

    monkeypatch.setitem(R._RUNNERS, "layernorm", boom)
    rep = R.build_report(tiny_gpt2, TEXT, sections=("overview", "layernorm"), settings=FAST)
    sec = rep.section("layernorm")
    assert sec.status == "failed" and "kaputt" in sec.reason and str(sec).startswith("failed: ")
    assert rep.section("overview").available
    with pytest.raises(RuntimeError):
        R.build_report(tiny_gpt2, TEXT, sections=("layernorm",), settings=FAST, strict=True)


def test_bad_requests_fail_before_work(tiny_gpt2):
    with pytest.raises(InputError, match="Unknown report section"):
        R.build_report(tiny_gpt2, TEXT, sections=("overview", "nonsense"))
    with pytest.raises(InputError, match="Unknown report setting"):
        R.build_report(tiny_gpt2, TEXT, settings={"attribution_stpes": 3})
    with pytest.raises(InputError):
        R.build_report(tiny_gpt2, "   \n ")
    assert R._check_sections("loss, attention,loss", R.SECTIONS) == ("loss", "attention")


def test_progress_is_reported(tiny_gpt2):
    seen = []
    R.build_report(tiny_gpt2, TEXT, sections=("overview", "layernorm"), settings=FAST,
                   progress=lambda label, f: seen.append((label, f)))
    assert seen == [("overview", 0.0), ("layernorm", 0.5), ("done", 1.0)]


# --------------------------------------------------------------------------- JSON


@pytest.mark.parametrize("which", ["gpt2_report", "bert_report"])
def test_json_round_trip_equal_dataclasses(which, request):
    rep = request.getfixturevalue(which)
    text = R.to_json(rep)
    doc = json.loads(text)
    assert doc["schema_version"] == R.SCHEMA_VERSION and doc["generator"] == "inspector"
    # the derived figures the HTML shows are in the JSON too
    att = rep.result("attention", "logits")
    rows = doc["summary"]["attention_per_layer"]
    assert [r["layer"] for r in rows] == list(range(att.n_layers))
    assert rows[0]["std"] == pytest.approx(float(att.std[0].mean()))
    assert len(doc["summary"]["layernorm_table"]) == len(rep.result("layernorm", "params").layers)
    if rep.section("loss").available:
        assert doc["summary"]["perplexity"] == rep.result("loss", "loss").perplexity
    back = R.report_from_json(text)
    assert R.reports_equal(rep, back)
    assert R.to_json(back) == text
    for name, sec in rep.sections.items():
        for part, value in sec.results.items():
            restored = back.sections[name].results[part]
            assert type(restored) is type(value), (name, part)
    att = back.result("attention", "logits")
    assert isinstance(att.std, np.ndarray) and att.std.dtype == np.float64
    np.testing.assert_array_equal(att.count, rep.result("attention", "logits").count)


def test_json_rejects_foreign_or_newer_documents(gpt2_report):
    with pytest.raises(InputError):
        R.report_from_json("not json")
    with pytest.raises(InputError):
        R.report_from_json(json.dumps({"hello": 1}))
    doc = json.loads(R.to_json(gpt2_report))
    doc["schema_version"] = R.SCHEMA_VERSION + 1
    with pytest.raises(InputError, match="schema version"):
        R.report_from_json(json.dumps(doc))
    doc["schema_version"] = R.SCHEMA_VERSION
    doc["sections"]["overview"]["results"]["overview"]["type"] = "os.system"
    with pytest.raises(InputError, match="outside inspector"):
        R.report_from_json(json.dumps(doc))


# --------------------------------------------------------------------------- HTML


class _Collect(HTMLParser):
    URL_ATTRS = {"src", "href", "action", "formaction", "data", "poster", "srcset", "xlink:href", "background",
                 "cite", "manifest", "ping"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.urls: list[str] = []
        self.handlers: list[str] = []
        self.text: list[str] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._in_style = tag == "style"
        for k, v in attrs:
            if k in self.URL_ATTRS and v is not None:
                self.urls.append(v)
            if k.startswith("on"):
                self.handlers.append(k)
            if k == "style" and v:
                self.styles.append(v)

    handle_startendtag = handle_starttag

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        (self.styles if self._in_style else self.text).append(data)


def _parse(html: str) -> _Collect:
    p = _Collect()
    p.feed(html)
    p.close()
    return p


def _assert_self_contained(html: str) -> _Collect:
    assert "http://" not in html and "https://" not in html
    p = _parse(html)
    assert "script" not in p.tags and not p.handlers
    for tag in ("link", "iframe", "img", "object", "embed", "base", "form", "audio", "video", "source"):
        assert tag not in p.tags, tag
    for url in p.urls:
        assert url.startswith("#"), url  # only in-page anchors
    for css in p.styles:
        assert "url(" not in css and "@import" not in css
    return p


@pytest.mark.parametrize("which", ["gpt2_report", "bert_report"])
def test_html_is_self_contained(which, request):
    html = R.to_html(request.getfixturevalue(which))
    assert html.startswith("<!DOCTYPE html>") and html.count("<svg") >= 5
    p = _assert_self_contained(html)
    assert "meta" in p.tags and "Content-Security-Policy" in html


def test_html_escapes_user_text_and_token_strings(evil_report):
    tokens = evil_report.section("overview").result.tokens
    assert "<b>" in tokens  # a real token string carrying markup
    html = R.to_html(evil_report)
    p = _assert_self_contained(html)
    assert "b" not in p.tags  # neither the text nor a token became a tag
    text = "".join(p.text)
    assert "<script>alert(1)</script>" in text and "<b>bold</b>" in text
    assert "https://example.com" in text  # shown to the reader, yet not a URL in the file
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # and in the other writers
    md = R.to_markdown(evil_report)
    assert "<script>" not in md.split("```")[0] + md.split("```")[-1]


def test_html_of_an_unavailable_section(encoder_lm):
    rep = R.build_report(encoder_lm, EVIL, sections=("overview", "loss"), settings=FAST, strict=True)
    html = R.to_html(rep)
    _assert_self_contained(html)
    assert "not available: " in html


# --------------------------------------------------------------------------- Markdown


def _md_value(md: str, label: str) -> str:
    m = re.search(rf"^\| {re.escape(label)} \| ([^|]+) \|$", md, re.M)
    assert m, f"no '{label}' row in the Markdown"
    return m.group(1).strip()


def test_markdown_perplexity_equals_loss_module(gpt2_report, tiny_gpt2, bert_report, tiny_bert):
    from inspector import perplexity

    from inspector.analyses import loss

    md = R.to_markdown(gpt2_report)
    res = loss.causal_token_loss(tiny_gpt2, TEXT)
    expected = res.perplexity  # the row is named by inspector.perplexity: method and token count
    assert float(_md_value(md, perplexity.label(res)).replace(",", "")) == pytest.approx(expected, rel=1e-5)
    md = R.to_markdown(bert_report)
    res = loss.masked_lm_loss(tiny_bert, TEXT, seed=0)
    assert float(_md_value(md, perplexity.label(res)).replace(",", "")) == pytest.approx(res.perplexity, rel=1e-5)


def test_markdown_tables(gpt2_report):
    md = R.to_markdown(gpt2_report)
    assert _md_value(md, "spec") == gpt2_report.model["spec"]
    assert _md_value(md, "dtype") == "float32"
    att = gpt2_report.result("attention", "logits")
    rows = re.findall(r"^\| (\d+) \| ", md.split("## Attention logits per layer")[1].split("##")[0], re.M)
    assert [int(r) for r in rows] == list(range(att.n_layers))
    ln = gpt2_report.result("layernorm", "params")
    ln_block = md.split("## LayerNorm summary")[1].split("\n## ")[0]
    assert all(layer.name in ln_block for layer in ln.layers) and "| all layers |" in ln_block
    assert "## Claims" in md
    claims = foundations.claim_rows(gpt2_report.result("foundations", "claims"))
    claims_block = md.split("## Claims")[1].split("\n## ")[0]
    assert claims_block.count("\n|") >= len(claims) + 1


def test_markdown_fences_survive_backticks(tiny_gpt2):
    text = "code: ```python\nprint('x')\n``` and a | pipe"
    rep = R.build_report(tiny_gpt2, text, sections=("overview",), settings=FAST)
    md = R.to_markdown(rep)
    assert "````text\n" in md and text in md


# --------------------------------------------------------------------------- writing


def test_write_report_formats_and_refusals(gpt2_report, tmp_path):
    paths = {fmt: tmp_path / f"r.{fmt}" for fmt in ("html", "json", "md")}
    for fmt, p in paths.items():
        assert R.write_report(gpt2_report, p) == p
        assert p.read_text(encoding="utf-8") == R.render(gpt2_report, fmt)
        assert (p.stat().st_mode & 0o777) == 0o644
    assert R.reports_equal(R.report_from_json(paths["json"].read_text()), gpt2_report)

    before = paths["html"].read_bytes()
    with pytest.raises(ReportPathError, match="already exists") as err:
        R.write_report(gpt2_report, paths["html"])
    assert "--overwrite" in err.value.user_message()
    assert paths["html"].read_bytes() == before
    R.write_report(gpt2_report, paths["html"], fmt="md", overwrite=True)
    assert paths["html"].read_text() == R.to_markdown(gpt2_report)

    with pytest.raises(ReportPathError, match="is a directory"):
        R.write_report(gpt2_report, tmp_path, fmt="html", overwrite=True)
    with pytest.raises(ReportPathError, match="does not exist"):
        R.write_report(gpt2_report, tmp_path / "missing" / "r.html")
    with pytest.raises(ReportPathError, match="not a folder"):
        R.write_report(gpt2_report, paths["md"] / "r.html")
    with pytest.raises(ReportPathError, match="format"):
        R.write_report(gpt2_report, tmp_path / "r.txt")
    R.write_report(gpt2_report, tmp_path / "r.txt", fmt="markdown")
    assert sorted(os.listdir(tmp_path)) == ["r.html", "r.json", "r.md", "r.txt"]  # no temp file left


def test_write_report_unwritable_folder_and_failed_write(gpt2_report, tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    with pytest.raises(ReportPathError, match="not writable"):
        R.write_report(gpt2_report, tmp_path / "r.html")
    monkeypatch.undo()

    def fail(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "link", fail)
    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(ReportPathError, match="No space left"):
        R.write_report(gpt2_report, tmp_path / "r.html")
    assert os.listdir(tmp_path) == []  # the temporary file was removed


def test_write_report_never_clobbers_a_file_created_meanwhile(gpt2_report, tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    real_check = R.check_output_path

    def racing_check(path, *, overwrite=False):
        p = real_check(path, overwrite=overwrite)
        target.write_text("someone else's file")  # appears between the check and the rename
        return p

    monkeypatch.setattr(report_files, "check_output_path", racing_check)  # what write_report calls
    with pytest.raises(ReportPathError, match="already exists"):
        R.write_report(gpt2_report, target)
    assert target.read_text() == "someone else's file" and os.listdir(tmp_path) == ["r.json"]


# --------------------------------------------------------------------------- comparison


def test_comparison_report(tiny_gpt2):
    model_b, tok_b = tiny_gpt2_model(seed=1)
    lm_b = wrap(model_b, tok_b)
    rep = R.build_comparison_report(tiny_gpt2, lm_b, TEXT, settings=FAST, strict=True)
    assert rep.kind == "comparison" and rep.model_b["spec"] == lm_b.spec
    sec = rep.section("compare")
    assert sec.available, sec.reason
    assert R.reports_equal(R.report_from_json(R.to_json(rep)), rep)
    _assert_self_contained(R.to_html(rep))
    assert "## Model B" in R.to_markdown(rep)


# --------------------------------------------------------------------------- SVG charts


def test_svg_charts_escape_and_handle_edge_cases():
    charts = [
        svg_charts.bar_chart(["<b>", "a&b", "https://x.org"], [1.0, float("nan"), -2.0], title="<script>"),
        svg_charts.histogram([0, 5, 0, 1000], [0, 1, 2, 3, 4], log_y=True, title="log"),
        svg_charts.histogram([0, 0], [0, 1, 2], log_y=True),
        svg_charts.histogram_from_values([], title="empty"),
        svg_charts.heatmap(np.array([[np.nan, 1.0], [2.0, 3.0]]), row_labels=["<i>", "r"], col_labels=["c0", "c1"]),
        svg_charts.heatmap(np.random.default_rng(0).normal(size=(70, 70)), scale="diverging"),
        svg_charts.line_chart({"a": ([0, 1, 2], [1.0, np.nan, 3.0]), "<s>": ([0, 1], [1e-3, 10])}, log_y=True),
        svg_charts.line_chart({"flat": ([0, 1], [2.0, 2.0])}),
    ]
    html = "<div>" + "".join(charts) + "</div>"
    p = _parse(html)
    assert p.tags.count("svg") == len(charts)
    assert not {"b", "i", "s", "script"} & set(p.tags)
    assert "://" not in html
    assert "<script>" in "".join(p.text)
    assert svg_charts.fmt_number(1234567) == "1.23e+06" and svg_charts.fmt_number(0.5) == "0.5"
    assert svg_charts.color_at(0.0) != svg_charts.color_at(1.0) and svg_charts.color_at(float("nan")) == "#cccccc"


def test_invisible_tokens_are_shown():
    assert R._visible("\n") == "⏎" and R._visible("  ") == "␣␣" and R._visible(" the") == " the"
    assert R._visible("a\tb") == "a⇥b"


# --------------------------------------------------------------------------- analyses on the contract


def test_logit_lens_section_in_every_format_and_the_cli(tiny_gpt2, tmp_path, capsys):
    """A registered analysis becomes a report section: HTML (SVG charts), Markdown tables, exact JSON."""
    from inspector import cli
    from inspector.analysis import run_analysis
    from inspector.inputs import encode

    assert "logit_lens" in R.SECTIONS
    rep = R.build_report(tiny_gpt2, TEXT, sections=("overview", "logit_lens"), strict=True,
                         settings={"logit_lens_top_k": 3})
    res = rep.result("logit_lens")
    ref = run_analysis("logit_lens", tiny_gpt2, encode(tiny_gpt2, TEXT), {"top_k": 3})
    np.testing.assert_array_equal(res.target_rank, ref.target_rank)
    assert res.top_ids.shape[-1] == 3 and rep.settings["logit_lens_top_k"] == 3

    html_doc = R.render(rep, "html")
    section = html_doc[html_doc.index('id="sec-logit_lens"'):]
    section = section[:section.index("</section>")]
    assert section.count("<svg") == 3 and "Per layer" in section
    assert f"{ref.mean_target_prob[-1]:.4g}" in section

    md = R.render(rep, "md")
    assert "## Logit lens" in md and "### Per layer" in md
    for name, acc in zip(ref.layer_names, ref.top1_accuracy):
        assert f"| {name} | {R._fmt(float(acc))} |" in md

    back = R.report_from_json(R.render(rep, "json"))
    assert R.reports_equal(rep, back)
    assert type(back.result("logit_lens")).__name__ == "LogitLensResult"

    with pytest.raises(InputError):
        R.build_report(tiny_gpt2, TEXT, sections=("logit_lens",), settings={"logit_lens_top_k": 0}, strict=True)

    folder = tmp_path / "m"
    tiny_gpt2.model.save_pretrained(folder)
    tiny_gpt2.tokenizer.save_pretrained(folder)
    out = tmp_path / "r.md"
    assert cli.main(["report", "-m", str(folder), "--text", TEXT, "--sections", "logit_lens", "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "## Logit lens" in text and "### Per position" in text
    said = capsys.readouterr()
    assert f"Logit lens: Scored positions {len(ref.positions)}; Top-1 accuracy at the output " in said.out + said.err


def test_encoder_only_model_gets_the_logit_lens_as_unavailable(encoder_lm):
    rep = R.build_report(encoder_lm, TEXT, sections=("logit_lens",), strict=True)
    sec = rep.sections["logit_lens"]
    assert sec.status == "unavailable" and "encoder-only" in sec.reason
