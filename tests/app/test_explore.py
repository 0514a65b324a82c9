"""App tests of the exploration views: default head, tokens as text, one perplexity label, report Compare section.

Each test reads what a page shows (widget values, metric labels, drawn HTML) and compares it with
an independent computation (the library on the same text, the tokenizer's own offsets).
"""
from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

from streamlit.testing.v1 import AppTest

from tests.app.test_pages import bundled_available, navigation_mode  # noqa: F401  (autouse fixture)

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "app.py")
DEFAULT_TEXT = (REPO / "data" / "samples" / "python_docs.txt").read_text(encoding="utf-8").strip()


def _app(**state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    for key, value in state.items():
        at.session_state[key] = value
    at.run(timeout=300)
    return at


def _clean(at: AppTest, page: str) -> None:
    assert not at.exception, f"{page}: {[e.value for e in at.exception]}"
    assert not at.error, f"{page}: {[e.value for e in at.error]}"


def _strip_text(body: str) -> str:
    """The visible text of a token strip: tags removed, entities decoded, ⏎ markers dropped."""
    return html.unescape(re.sub(r"<[^>]+>", "", body.split("blue = negative")[0].split("darker = higher")[0]))


@pytest.mark.skipif(not bundled_available("gpt2-mini"), reason="needs the bundled GPT-2")
def test_attention_opens_on_the_most_peaked_head():
    from inspector import models
    from inspector.analyses import attention
    from inspector.inputs import encode

    lm = models.load("bundled:gpt2-mini")
    rep = attention.attention_logit_report(lm, encode(lm, DEFAULT_TEXT))
    ef = rep.entropy_fraction
    # independent argmin over the (layer, head) grid, not heads.most_peaked_head
    flat = min(((float(ef[la, h]), la, h) for la in range(ef.shape[0]) for h in range(ef.shape[1])))
    at = _app()
    at.switch_page("pages/attention.py").run(timeout=300)
    _clean(at, "attention")
    assert (at.selectbox(key="attn_layer").value, at.selectbox(key="attn_head").value) == (flat[1], flat[2])
    assert (flat[1], flat[2]) != (0, 0)  # the old default, nearly uniform on this model
    assert any(m.value.startswith(f"**Layer {flat[1]}, head {flat[2]}**") for m in at.markdown)
    # the pattern drawn is that head's
    fig = at.get("plotly_chart")
    titles = [str(c.proto.spec) for c in fig]
    assert any(f"Attention of layer {flat[1]}, head {flat[2]}" in t for t in titles)
    # the token inspector opens on a real word, never a special token
    pos = at.selectbox(key="inspect_token").value
    assert any(ch.isalpha() for ch in encode(lm, DEFAULT_TEXT).tokens[pos])


@pytest.mark.skipif(not bundled_available("bert-mini"), reason="needs the bundled BERT")
def test_bert_word_pieces_render_with_the_original_spaces():
    text = "The lighthousekeeper said  hello to the unbelievably quiet harbour."
    at = _app(model_choice="bundled:bert-mini", text=text)
    for page in ("token_loss", "attribution"):
        at.switch_page(f"pages/{page}.py").run(timeout=300)
        _clean(at, page)
        strips = [h.proto.body for h in at.html if "data-token" in h.proto.body]
        assert strips, f"{page}: no token strip"
        shown = _strip_text(strips[0])
        assert "##" not in shown
        # the word pieces join into the original words, with the original (double) space kept; the
        # Attribution page shows the explained position as the model saw it ([MASK]), spaces unchanged
        words = re.sub(r" \[MASK\] ", lambda m: " the ", shown) if page == "attribution" else shown
        assert "The lighthousekeeper said  hello to the unbelievably quiet harbour." in words, shown


@pytest.mark.skipif(not bundled_available("gpt2-mini"), reason="needs the bundled GPT-2")
def test_perplexity_label_is_the_same_on_token_loss_compare_and_the_report():
    from inspector import models, perplexity
    from inspector.analyses import loss

    lm = models.load("bundled:gpt2-mini")
    rep = loss.causal_token_loss(lm, DEFAULT_TEXT)
    label, value = perplexity.label(rep), perplexity.value(rep.perplexity)
    assert label == "Perplexity (next token, first token unscored; 67 tokens)"  # the tokenizer: 68 tokens − 1

    at = _app()
    at.switch_page("pages/token_loss.py").run(timeout=300)
    _clean(at, "token_loss")
    assert {m.label: m.value for m in at.metric}["Perplexity"] == value
    assert f"{label} = {value}" in [c.value for c in at.caption]

    at.switch_page("pages/compare.py").run(timeout=300)
    _clean(at, "compare")
    assert at.session_state["cmp_model"] == "bundled:gpt2-mini@step-0"
    key = at.table[0].value.set_index("figure")  # the key figures, first on the page
    # B = the final checkpoint (A = its initialisation): the same name and number as on Token loss
    assert key.loc[label, "B: bundled:gpt2-mini"] == value
    assert list(key.columns) == ["A: bundled:gpt2-mini@step-0", "B: bundled:gpt2-mini"]

    at.switch_page("pages/report.py").run(timeout=300)
    at.multiselect(key="report_sections").set_value(["overview", "loss"]).run(timeout=300)
    at.button(key="report_build").click().run(timeout=600)
    _clean(at, "report")
    built = at.session_state["report_output"][1]
    assert f"<td>{html.escape(label)}</td><td>{value}</td>" in built["html"]
    assert f"| {label} | {value} |" in built["md"]


@pytest.mark.skipif(not bundled_available("gpt2-mini"), reason="needs the bundled GPT-2")
def test_report_page_gains_a_compare_section_when_two_models_are_chosen():
    at = _app()
    at.switch_page("pages/report.py").run(timeout=300)
    at.multiselect(key="report_sections").set_value(["overview"]).run(timeout=300)
    html_before = None
    at.button(key="report_build").click().run(timeout=600)
    html_before = at.session_state["report_output"][1]["html"]
    assert 'id="sec-compare"' not in html_before
    at.selectbox(key="report_model_b").select("bundled:gpt2-mini@step-0").run(timeout=300)
    at.button(key="report_build").click().run(timeout=600)
    _clean(at, "report")
    built = at.session_state["report_output"][1]
    page = built["html"]
    assert 'id="sec-compare"' in page and "<h2>Comparison</h2>" in page
    assert "Model B" in page and "bundled:gpt2-mini@step-0" in page
    assert "## Comparison" in built["md"] or "Comparison" in built["md"]
    assert built["title"] == "bundled:gpt2-mini"  # the model report, with the comparison added


def test_model_load_error_is_shown_in_the_main_area():
    at = _app(model_choice="__other__", model_custom="/nonexistent/model-folder")
    at.switch_page("pages/attention.py").run(timeout=300)
    main = [e.value for e in at.main.error] if hasattr(at, "main") else [e.value for e in at.error]
    assert any(m.startswith("The model could not be loaded") and "/nonexistent/model-folder" in m for m in main)
    assert not any("the message there says" in m for m in main)
