"""The Corpus page draws a trajectory of the bundled gpt2-mini checkpoints from a corpus result."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from inspector import bundled, corpus

REPO = Path(__file__).resolve().parents[2]
PAGE = str(REPO / "pages" / "corpus.py")


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    names = {m.name: m for m in bundled.list_bundled()}
    if "gpt2-mini" not in names or not names["gpt2-mini"].available:
        pytest.skip("bundled gpt2-mini not built")
    out = tmp_path_factory.mktemp("series")
    data = out.parent / "slice.txt"
    data.write_text((bundled.CORPUS_DIR / "valid.txt").read_text(encoding="utf-8")[:800], encoding="utf-8")
    specs = [f"bundled:gpt2-mini@{c}" for c in names["gpt2-mini"].checkpoints]
    corpus.run_job(specs, data, out, corpus.CorpusSettings(window=64, stride=32), stream=None)
    return out, specs


def _figure(at, key):
    for chart in at.get("plotly_chart"):
        if chart.proto.id.endswith(key) or key in chart.proto.id:
            return json.loads(chart.proto.spec)
    raise AssertionError(f"no chart {key}")


def _values(v):
    """Plotly's JSON writes numpy arrays as {"dtype", "bdata"[, "shape"]}; lists stay lists."""
    if isinstance(v, dict) and "bdata" in v:
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        return a.reshape([int(s) for s in str(v["shape"]).split(",")]) if "shape" in v else a
    return np.asarray(v, dtype=float)


def test_trajectory_of_bundled_checkpoints_is_drawn(series, monkeypatch):
    out, specs = series
    monkeypatch.setenv("INSPECTOR_CORPUS_RESULT", str(out))
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception, at.exception
    results = corpus.load_results(out)
    assert [r.spec for r in results] == specs and len(specs) >= 6
    table = json.loads((out / "series.json").read_text())
    fig = _figure(at, "corpus_trajectory")
    steps = [r.step for r in results]
    assert list(_values(fig["data"][0]["x"])) == steps and steps == sorted(steps) and steps[0] == 0
    expected = [table["statistics"]["std"][k][0][0] for k in range(len(specs))]  # layer 0, head 0, σ raw
    np.testing.assert_allclose(_values(fig["data"][0]["y"]), expected, rtol=1e-12)
    ppl = _figure(at, "corpus_ppl_trajectory")
    np.testing.assert_allclose(_values(ppl["data"][0]["y"]), [r.summary["perplexity"] for r in results], rtol=1e-12)
    heat = _figure(at, "corpus_heatmap")
    np.testing.assert_allclose(_values(heat["data"][0]["z"]), results[-1].attention.std, rtol=1e-12)
    shown = {m.label: m.value for m in at.metric}
    assert shown["Perplexity"] == f"{results[-1].summary['perplexity']:.2f}"

    at.selectbox(key="corpus_stat").set_value("sink_mass").run()
    fig = _figure(at, "corpus_trajectory")
    np.testing.assert_allclose(_values(fig["data"][0]["y"]), [r.attention.sink_mass[0, 0] for r in results], rtol=1e-12)


def test_bad_folder_is_a_message(tmp_path, monkeypatch):
    monkeypatch.setenv("INSPECTOR_CORPUS_RESULT", str(tmp_path / "nothing *here*"))
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert at.error and "No corpus result folder" in at.error[0].value


def test_small_job_runs_from_the_page(series, monkeypatch):
    monkeypatch.delenv("INSPECTOR_CORPUS_RESULT", raising=False)
    at = AppTest.from_file(PAGE, default_timeout=300).run()
    at.radio(key="corpus_source").set_value("Run a small job on the bundled corpus").run()
    at.multiselect(key="corpus_ckpts").set_value(["step-0", "final"]).run()
    at.button(key="corpus_run").click().run()
    assert not at.exception, at.exception
    folder = at.session_state["corpus_job_folder"]
    results = corpus.load_results(folder)
    assert [r.spec for r in results] == ["bundled:gpt2-mini@step-0", "bundled:gpt2-mini@final"]
    fig = _figure(at, "corpus_ppl_trajectory")
    np.testing.assert_allclose(_values(fig["data"][0]["y"]), [r.summary["perplexity"] for r in results], rtol=1e-12)
    assert list(_values(fig["data"][0]["x"])) == [0, 400]
