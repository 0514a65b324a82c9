"""A tiny random Llama (GQA 4/2, RoPE, RMSNorm, untied head) saved with save_pretrained: every page of the
app and `python -m inspector report` on it, asserting what they show (numbers from the library)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from family_models import tiny_family_model  # noqa: E402
from test_pages import PAGES, _array, assert_clean, navigation_mode, new_app, snapshot  # noqa: E402,F401

TEXT = "The quick brown fox jumps over the lazy dog. Attention compares queries with keys."


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "tiny-llama"
    model, tok = tiny_family_model("llama", seed=0)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def llama_lm(llama_dir):
    from inspector import models

    return models.load(str(llama_dir))


@pytest.fixture(scope="module")
def signals(llama_lm):
    from inspector import analysis as contract
    from inspector.inputs import encode

    return contract.run_analysis("decoder_signals", llama_lm, encode(llama_lm, TEXT), {})


@pytest.fixture(scope="module")
def llama_tour(llama_dir):
    mp = pytest.MonkeyPatch()
    mp.setenv("INSPECTOR_MODEL_ROOTS", str(llama_dir.parent))
    try:
        at = new_app(model_choice="__other__", model_custom=str(llama_dir), text=TEXT)
        at.run(timeout=180)
        out = {"overview": snapshot(at)}
        for page in PAGES:
            if page == "compare":
                continue  # compares two models; covered by the compare tests
            at.switch_page(f"pages/{page}.py").run(timeout=180)
            out[page] = snapshot(at)
        return out
    finally:
        mp.undo()


def test_every_page_runs_cleanly_on_a_llama(llama_tour):
    for page, snap in llama_tour.items():
        assert_clean(snap, page)
        assert snap["titles"], page


def test_overview_shows_grouped_query_heads(llama_tour):
    assert llama_tour["overview"]["metrics"]["Layers × heads"] == "2 × 4 (2 KV heads)"


def test_layernorm_page_says_no_beta_and_lists_gamma_outliers(llama_tour, llama_lm):
    snap = llama_tour["layernorm"]
    assert snap["metrics"]["|β| < 0.05"] == "no β (RMSNorm)"
    assert any("RMSNorm scales by a gain γ only" in i for i in snap["infos"])
    assert "ln_beta_hist" not in snap["figures"] and "ln_ranges_b" not in snap["figures"]
    from inspector.analyses import layernorm

    names = [layer.name for layer in layernorm.layernorm_stats(llama_lm).layers]
    tables = [df for df in snap["dataframes"] if "largest (dim, γ, z)" in df.columns]
    assert tables and list(tables[0]["layer"]) == names
    massive = [df for df in snap["dataframes"] if "median |x|" in df.columns]
    assert massive and set(massive[0]["layer"]) <= set(names)


def test_attention_page_shows_sinks_and_kv_groups(llama_tour, signals):
    snap = llama_tour["attention"]
    groups = [df for df in snap["dataframes"] if "query heads" in df.columns]
    assert groups and list(groups[0]["query heads"]) == ["h0, h1", "h2, h3"]
    heat = snap["figures"]["attn_sinks_chart0"]
    np.testing.assert_allclose(_array(heat["data"][0]["z"]), signals.sink_mass, rtol=1e-9)


def test_embeddings_page_has_no_position_table_but_the_distance_profile(llama_tour, signals):
    snap = llama_tour["embeddings"]
    assert any("rotary positions" in i and "no position-embedding table" in i for i in snap["infos"])
    fig = snap["figures"]["emb_rope_chart0"]
    for layer, trace in enumerate(fig["data"]):
        y = _array(trace["y"])
        np.testing.assert_allclose(y, signals.distance_std[layer], rtol=1e-9)


def test_cli_report_on_a_llama(llama_dir, tmp_path, signals):
    from inspector import cli

    out = tmp_path / "llama.json"
    assert cli.main(["report", "-m", str(llama_dir), "--text", TEXT, "-o", str(out), "--quiet"]) == 0
    data = json.loads(out.read_text())
    status = {k: v["status"] for k, v in data["sections"].items()}
    assert all(s == "ok" for s in status.values()), status
    sec = data["sections"]["decoder_signals"]["results"]
    blob = json.dumps(sec)
    assert "sink_mass" in blob
    emb = data["sections"]["embeddings"]["results"]
    assert emb["positions"]["status"] == "unavailable" and "rotary" in emb["positions"]["reason"]
    assert emb["output_embeddings"]["data"]["tied"] is False
    assert data["model"]["n_kv_heads"] == 2 and data["model"]["positions"] == "rotary"
    html_out = tmp_path / "llama.html"
    assert cli.main(["report", "-m", str(llama_dir), "--text", TEXT, "-o", str(html_out), "--quiet"]) == 0
    page = html_out.read_text()
    assert "no β (RMSNorm" in page and "Output embeddings" in page and "Attention sinks" in page
