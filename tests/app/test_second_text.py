"""Two texts side by side: what Token loss, Attention and Layer by layer draw for text B, against
independent computations (plain torch forwards of each text; the library's per-text results)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from streamlit.testing.v1 import AppTest

from tests.app.test_pages import _array, bundled_available, drawn, navigation_mode  # noqa: F401  (autouse fixture)

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "app.py")
TEXT_A = "The keys to the cabinet are on the table."
TEXT_B = "The key to the cabinet is on the table."


def _open(page: str, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    for key, value in {"text_b_on": True, "text": TEXT_A, "text_b": TEXT_B, **state}.items():
        at.session_state[key] = value
    at.run(timeout=300)
    at.switch_page(f"pages/{page}.py").run(timeout=300)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def _frame(at: AppTest, column: str):
    return next(d.value for d in at.dataframe if column in d.value.columns)


def _torch_ce(lm, text: str) -> tuple[list[int], np.ndarray]:
    """Token ids and −log P(token_t | tokens_<t) for t >= 1, from one plain forward."""
    ids = lm.tokenizer(text)["input_ids"]
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits[:-1], dim=-1)
    return ids, -logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].numpy()


@pytest.mark.skipif(not bundled_available("gpt2-mini"), reason="needs the bundled GPT-2")
def test_token_loss_of_text_b_and_the_difference_on_shared_tokens():
    from inspector import models

    lm = models.load("bundled:gpt2-mini")
    ids_a, ce_a = _torch_ce(lm, TEXT_A)
    ids_b, ce_b = _torch_ce(lm, TEXT_B)
    at = _open("token_loss")
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["Perplexity: B"]) == pytest.approx(math.exp(ce_b.mean()), rel=1e-3)
    assert float(metrics["Total cross-entropy (nats): B"]) == pytest.approx(ce_b.sum(), abs=1e-4)
    assert any("replace ' keys' → ' key'" in c.value.replace("\\", "") for c in at.caption)
    table = _frame(at, "position in A")
    assert len(table) >= 5
    for _, row in table.iterrows():
        i, j = int(row["position in A"]), int(row["position in B"])
        assert ids_a[i] == ids_b[j]  # the same token in both texts
        # scored token t has CE at index t − 1 of the plain-forward arrays
        assert row["A (nats)"] == pytest.approx(ce_a[i - 1], abs=1e-5)
        assert row["B (nats)"] == pytest.approx(ce_b[j - 1], abs=1e-5)
        assert row["B − A"] == pytest.approx(ce_b[j - 1] - ce_a[i - 1], abs=1e-5)
    # the last token (".") is shared: its difference is in the table unless it is among the smallest
    assert int(table["position in B"].max()) <= len(ids_b) - 1
    strips = [h.proto.body for h in at.html if "data-token" in h.proto.body]
    assert len(strips) == 3  # A, B, and B − A
    # the bits switch converts the B side too
    at.segmented_control(key="loss_unit").set_value("bits").run(timeout=300)
    table_bits = _frame(at, "position in A")
    assert table_bits["B − A"].abs().max() == pytest.approx(table["B − A"].abs().max() / math.log(2), rel=1e-6)


@pytest.mark.skipif(not bundled_available("gpt2-mini"), reason="needs the bundled GPT-2")
def test_attention_grid_of_text_b_follows_its_statistic_picker():
    from inspector import models
    from inspector.analyses import attention
    from inspector.inputs import encode

    lm = models.load("bundled:gpt2-mini")
    rep_a = attention.attention_logit_report(lm, encode(lm, TEXT_A))
    rep_b = attention.attention_logit_report(lm, encode(lm, TEXT_B))
    at = _open("attention")
    for field in ("std_scaled", "entropy_fraction"):
        if field != "std_scaled":
            at.selectbox(key="pair_grid").set_value(field).run(timeout=300)
        figs = drawn(at)
        z_b = _array(figs["pair_grid_b"]["data"][0]["z"])
        z_d = _array(figs["pair_grid_delta"]["data"][0]["z"])
        np.testing.assert_allclose(z_b, getattr(rep_b, field), rtol=1e-9)
        np.testing.assert_allclose(z_d, getattr(rep_b, field) - getattr(rep_a, field), rtol=1e-9, atol=1e-12)
        assert figs["pair_grid_delta"]["data"][0]["zmid"] == 0
        top = _frame(at, "B − A").iloc[0]
        d = getattr(rep_b, field) - getattr(rep_a, field)
        assert abs(top["B − A"]) == pytest.approx(np.nanmax(np.abs(d)), rel=1e-9)


@pytest.mark.skipif(not bundled_available("gpt2-mini"), reason="needs the bundled GPT-2")
def test_layer_by_layer_shows_a_b_and_their_difference():
    at = _open("analyses")
    assert [t.label for t in at.tabs] == ["Text A", "Text B", "B − A"]
    heads = {}
    for tab in at.tabs[:2]:
        heads[tab.label] = {m.label: float(m.value.replace(",", "")) for m in tab.metric
                            if m.value.replace(".", "", 1).replace(",", "").isdigit()}
    diff = _frame(at, "B − A")
    checked = 0
    for _, row in diff.iterrows():
        if row["figure"] in heads["Text A"] and row["B − A"] != "—":
            checked += 1
            assert float(row["A"]) == pytest.approx(heads["Text A"][row["figure"]], rel=1e-3)
            assert float(row["B"]) == pytest.approx(heads["Text B"][row["figure"]], rel=1e-3)
            assert float(row["B − A"]) == pytest.approx(float(row["B"]) - float(row["A"]), rel=1e-9, abs=1e-12)
    assert checked >= 3, diff
    assert any(t.label == "B − A" and t.get("plotly_chart") for t in at.tabs), "the difference tab draws its charts"


@pytest.mark.skipif(not bundled_available("bert-mini"), reason="needs the bundled BERT")
def test_bert_pair_uses_the_pseudo_log_likelihood_of_each_text():
    from inspector import models

    lm = models.load("bundled:bert-mini")
    tok = lm.tokenizer

    def pll(text: str) -> float:  # each content token masked in turn, plain forwards
        ids = tok(text)["input_ids"]
        total = 0.0
        for t in range(1, len(ids) - 1):
            masked = list(ids)
            masked[t] = tok.mask_token_id
            with torch.no_grad():
                out = lm.model(input_ids=torch.tensor([masked]))
            logits = (out.logits if hasattr(out, "logits") else out.prediction_logits)[0, t].double()
            total += float(torch.log_softmax(logits, -1)[ids[t]])
        return math.exp(-total / (len(ids) - 2))

    at = _open("token_loss", model_choice="bundled:bert-mini")
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["Pseudo-perplexity: B"]) == pytest.approx(pll(TEXT_B), rel=1e-3)
    assert f"vs A ({float(f'{pll(TEXT_A):.4g}'):.4g})" in next(m.proto.delta for m in at.metric
                                                             if m.label == "Pseudo-perplexity: B")


@pytest.mark.skipif(not bundled_available("gpt2-mini"), reason="needs the bundled GPT-2")
def test_blank_text_b_asks_for_it_and_user_text_is_quoted_literally():
    at = _open("token_loss", text_b="  ")
    assert any("Type text B in the sidebar" in i.value for i in at.info)
    assert not [h for h in at.html if h.proto.body.count("data-token") and "Δ" in h.proto.body]
    at = _open("token_loss", text_b="The **keys** to the cabinet are on the table.")
    edits = next(c.value for c in at.caption if c.value.startswith("From A to B"))
    assert "\\*\\*" in edits  # escaped: shown as typed, never bold
