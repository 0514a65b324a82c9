"""`python -m inspector report --corpus DIR`: the trajectory of the bundled gpt2-mini checkpoints in a report."""
from __future__ import annotations

import json

import numpy as np
import pytest

from inspector import bundled, cli, corpus


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    names = {m.name: m for m in bundled.list_bundled()}
    if not names["gpt2-mini"].available:
        pytest.skip("bundled gpt2-mini not built")
    out = tmp_path_factory.mktemp("series")
    data = out.parent / "slice.txt"
    data.write_text((bundled.CORPUS_DIR / "valid.txt").read_text(encoding="utf-8")[:600], encoding="utf-8")
    specs = [f"bundled:gpt2-mini@{c}" for c in names["gpt2-mini"].checkpoints]
    assert cli.main(["corpus", *sum((["--model", s] for s in specs), []), "--data", str(data), "--out", str(out),
                     "--window", "64", "--quiet"]) == 0
    return out, specs


def test_report_holds_the_checkpoint_trajectory(series, tmp_path):
    out, specs = series
    paths = [tmp_path / f"r.{s}" for s in ("json", "md", "html")]
    assert cli.main(["report", "--corpus", str(out), *sum((["--out", str(p)] for p in paths), [])]) == 0
    data = json.loads(paths[0].read_text())
    results = corpus.load_results(out)
    assert data["series"]["checkpoints"] == specs
    steps = data["series"]["steps"]
    assert steps[0] == 0 and steps == sorted(steps) and len(steps) >= 6
    for k, r in enumerate(results):  # σ(QKᵀ) per layer × head of each checkpoint, as the arrays file holds it
        m = r.state.attention
        np.testing.assert_allclose(data["series"]["statistics"]["std"][k], np.sqrt(m.m2 / m.count))
    md = paths[1].read_text()
    for r in results:
        assert f"| {r.spec} | {r.step} | {r.summary['perplexity']:.4g} |" in md
    html = paths[2].read_text()
    assert html.count("<svg") >= 3 and "Perplexity vs training step" in html
