"""bundled:smollm2, the real SmolLM2-135M-Instruct dequantised from its Q4_1 GGUF file: the library's loss
against a plain transformers forward, a greedy continuation, the CLI report and a cross-tokenizer compare,
and every app page. One conversion per session (the `smollm2_folder` fixture, tests/conftest.py)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "app"))
from test_pages import PAGES, assert_clean, navigation_mode, new_app, snapshot  # noqa: E402,F401

SPEC = "bundled:smollm2"
TEXT = "The lighthouse keeper kept a notebook of every ship that passed. Most entries were short."


@pytest.fixture(scope="module")
def smol(smollm2_folder):
    from inspector import models

    return models.load(SPEC)


@pytest.fixture(scope="module")
def plain(smollm2_folder):
    """The same weights through transformers alone (stock SDPA attention, no inspector code)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(smollm2_folder, dtype=torch.float32, attn_implementation="sdpa",
                                                 local_files_only=True).eval()
    return model, AutoTokenizer.from_pretrained(smollm2_folder, local_files_only=True)


def test_per_token_loss_and_perplexity_equal_plain_transformers(smol, plain):
    from inspector.analyses.loss import causal_token_loss

    rep = causal_token_loss(smol, TEXT)
    model, tok = plain
    ids = tok(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits[0]  # fp32 throughout, as the library runs
    ce = torch.nn.functional.cross_entropy(logits[:-1], ids[0, 1:], reduction="none").double().numpy()
    np.testing.assert_array_equal(rep.token_ids, ids[0].numpy())
    np.testing.assert_allclose(rep.ce_nats, ce, rtol=1e-5)
    assert rep.perplexity == pytest.approx(math.exp(ce.mean()), rel=1e-5)
    assert rep.perplexity < 1000  # far from a uniform guess over 49 152 tokens (measured here: ≈ 200 on 16 tokens)


def test_greedy_continuation_names_paris(smol):
    from inspector.analyses.loss import causal_token_loss

    tok = smol.tokenizer
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        out = smol.model.generate(ids, max_new_tokens=4, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:])
    rep = causal_token_loss(smol, "The capital of France is Paris")
    assert rep.tokens[-1].strip() == "Paris" and rep.rank[-1] == 1  # the library's own top-1 agrees


def test_provenance_says_dequantised_q4_1(smol):
    d = smol.describe()
    assert (d["family"], d["n_layers"], d["n_heads"], d["n_kv_heads"], d["vocab_size"]) == ("llama", 30, 9, 3, 49152)
    assert d["provenance"]["quantisation"] == "Q4_1"
    assert "token embeddings Q8_0" in d["provenance"]["dequantised_from"]


def _find(obj, key):
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        obj = list(obj.values())
    if isinstance(obj, list):
        for v in obj:
            found = _find(v, key)
            if found is not None:
                return found
    return None


def test_cli_report_runs_and_has_every_section(smollm2_folder, smol, tmp_path):
    from inspector.analyses.loss import causal_token_loss

    out = tmp_path / "smol.json"
    proc = subprocess.run([sys.executable, "-m", "inspector", "report", "-m", SPEC, "--text", TEXT, "-o", str(out),
                           "--sections", "overview,layernorm,attention,loss,embeddings", "--quiet"],
                          cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    status = {k: v["status"] for k, v in data["sections"].items()}
    assert status and all(s == "ok" for s in status.values()), status
    assert data["model"]["provenance"]["quantisation"] == "Q4_1"
    ppl = _find(data["sections"]["loss"], "perplexity")
    assert ppl == pytest.approx(causal_token_loss(smol, TEXT).perplexity, rel=1e-6)
    assert "Q4_1" in out.read_text()


def test_cli_compare_across_tokenizers(smollm2_folder, tmp_path):
    from inspector import cli

    out = tmp_path / "cmp.json"
    assert cli.main(["compare", SPEC, "bundled:gpt2-mini", "--text", TEXT, "-o", str(out), "--quiet"]) == 0
    blob = out.read_text()
    assert "smollm2" in blob and "gpt2-mini" in blob and len(blob) > 2000


@pytest.fixture(scope="module")
def smol_tour(smollm2_folder):
    at = new_app(model_choice=SPEC, text=TEXT)
    at.run(timeout=300)
    out = {"overview": snapshot(at)}
    for page in PAGES:
        at.switch_page(f"pages/{page}.py").run(timeout=300)
        out[page] = snapshot(at)
    return out


def test_every_page_runs_on_smollm2(smol_tour):
    for page, snap in smol_tour.items():
        assert_clean(snap, page)
        assert snap["titles"], page
    assert smol_tour["overview"]["metrics"]["Layers × heads"] == "30 × 9 (3 KV heads)"


def test_pages_say_the_weights_were_dequantised(smol_tour):
    for page, what in (("layernorm", "γ values"), ("embeddings", "embedding views")):
        notes = [i for i in smol_tour[page]["infos"] if "dequantised" in i and "Q4_1" in i]
        assert notes and what in notes[0], (page, smol_tour[page]["infos"])
    assert smol_tour["layernorm"]["metrics"]["|β| < 0.05"] == "no β (RMSNorm)"


def test_token_loss_page_shows_the_library_perplexity(smol_tour, smol):
    from inspector.analyses.loss import causal_token_loss

    ppl = causal_token_loss(smol, TEXT).perplexity
    shown = [v for k, v in smol_tour["token_loss"]["metrics"].items() if "erplexity" in k]
    assert shown and any(f"{ppl:.2f}" in v or f"{ppl:.1f}" in v or f"{ppl:.3g}" in v for v in shown), (shown, ppl)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_attention_statistics_match_an_independent_computation(smol, plain, padding_side):
    """QKᵀ statistics of the real model (30 layers, 9 query heads over 3 KV heads, RoPE) against q·k rebuilt
    from hooks on q_proj / k_proj with the test's own RoPE and mask (tests/unit/family_models.py)."""
    sys.path.insert(0, str(REPO / "tests" / "unit"))
    from family_models import reference_stats

    from inspector import capture, inputs

    batch = inputs.encode_batch(smol, [TEXT, "Paris is the capital of France."], padding_side=padding_side)
    got = capture.run(smol, batch).attention
    ref = reference_stats(plain[0], batch)
    np.testing.assert_array_equal(got.count, ref["count"])
    for name in ("mean", "std", "min", "max", "entropy", "entropy_fraction", "max_prob", "sink_mass"):
        # atol: a few heads are almost one-hot (entropy ~2e-4 nats), where float32 rounding dominates
        np.testing.assert_allclose(getattr(got, name), ref[name], rtol=1e-4, atol=1e-6, err_msg=name)
