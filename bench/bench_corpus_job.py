"""Corpus job throughput and memory, in one run.

Prints tokens/s (scored corpus tokens per second of wall time, same windows for every row) of
- a plain per-window `model(input_ids=x, labels=x)` loop (no statistics: the floor),
- the corpus job, local engine (instrumented forward + all accumulators),
- the corpus job on Ray with 1 and 2 workers (local cluster started once, start-up not timed),
on bundled gpt2-mini and on a GPT-2-small-shaped random init (bundled:smollm2 when the registry has it);
and the corpus job's peak memory growth (RSS, each in a fresh process) on 1×, 10× and 100× a base
JSONL corpus: flat when the accumulators are the only thing that grows with the corpus.

    .venv/bin/python bench/bench_corpus_job.py            # full
    .venv/bin/python bench/bench_corpus_job.py --quick    # smaller corpora, no GPT-2-small Ray rows
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _util  # noqa: E402
import torch  # noqa: E402

from inspector import bundled, corpus, models  # noqa: E402
from inspector.analyses.scoring import window_batches, windows  # noqa: E402


def _slice(chars: int, folder: Path) -> Path:
    path = folder / f"slice-{chars}.txt"
    path.write_text((bundled.CORPUS_DIR / "valid.txt").read_text(encoding="utf-8")[:chars], encoding="utf-8")
    return path


def plain_loop(lm, path: Path, settings: corpus.CorpusSettings) -> float:
    """Scored tokens per second of model(labels=) over the same windows (no instrumentation)."""
    text = path.read_text(encoding="utf-8")
    ids = torch.tensor(lm.tokenizer(text)["input_ids"])
    window, stride = corpus._window_of(lm, settings)
    wins = windows(len(ids), window, stride)
    scored = sum(e - f for _, e, f in wins)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for group in window_batches(wins, settings.batch_size):
            x = torch.stack([ids[b:e] for b, e, _ in group])
            lm.model(input_ids=x, labels=x, use_cache=False)
    return scored / (time.perf_counter() - t0)


def job_local(lm, path, settings) -> float:
    t0 = time.perf_counter()
    state = corpus.run_local(lm, path, settings)
    return state.n_tokens / (time.perf_counter() - t0)


def job_ray(spec, lm, path, settings, workers) -> float:
    import ray

    from inspector import corpus_ray

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        actors = corpus_ray.start_actors(spec, settings, workers=workers, device="cpu")  # model loaded once each
        corpus_ray.run_ray(spec, _tiny(path), settings, workers=workers, lm=lm, actors=actors)  # warm-up
        t0 = time.perf_counter()  # steady state: actors hold their models, start-up not timed
        state = corpus_ray.run_ray(spec, path, settings, workers=workers, lm=lm, actors=actors)
        return state.n_tokens / (time.perf_counter() - t0)
    finally:
        ray.shutdown()


def _tiny(path: Path) -> Path:
    tiny = path.with_name("warmup.txt")
    tiny.write_text(path.read_text(encoding="utf-8")[:400], encoding="utf-8")
    return tiny


def gpt2_small_folder(folder: Path) -> str:
    """bundled:smollm2 when it exists, else a GPT-2-small-shaped random init saved with the gpt2-mini tokenizer."""
    if any(m.name == "smollm2" and m.available for m in bundled.list_bundled()):
        return "bundled:smollm2"
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(bundled.resolve("gpt2-mini"))
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=1024, n_embd=768, n_layer=12, n_head=12))
    out = folder / "gpt2-small-random"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def worker(args) -> None:
    """Peak memory growth of one corpus job over `copies` × the base documents (fresh process)."""
    torch.set_num_threads(1)
    lm = models.load("bundled:gpt2-mini", device="cpu")
    base = [d for d in (bundled.CORPUS_DIR / "valid.txt").read_text(encoding="utf-8")[:args.base_chars].split("\n\n")
            if d.strip()]
    path = Path(args.tmp) / f"x{args.copies}.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for _ in range(args.copies):
            for d in base:
                f.write(json.dumps({"text": d}) + "\n")
    settings = corpus.CorpusSettings(window=128, stride=64)
    warm = Path(args.tmp) / "warm.jsonl"
    warm.write_text("".join(json.dumps({"text": d}) + "\n" for d in base), encoding="utf-8")
    corpus.run_local(lm, warm, settings)  # warm-up (allocator, kernels): the peak measures the job's growth
    with _util.PeakMemory(torch.device("cpu")) as peak:
        state = corpus.run_local(lm, path, settings)
    _util.emit({"copies": args.copies, "tokens": state.n_tokens, "peak_mb": peak.peak_mb, "method": peak.method})


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--worker", action="store_true")
    p.add_argument("--copies", type=int, default=1)
    p.add_argument("--base-chars", type=int, default=3000)
    p.add_argument("--tmp", default="")
    args = p.parse_args()
    if args.worker:
        return worker(args)
    torch.set_num_threads(1)  # Ray workers run one thread each: compare like with like
    print(_util.header("corpus job: tokens/s and peak memory", torch.device("cpu"),
                       f"torch threads 1 per process; load {_util.load_average()}"))
    tmp = Path(tempfile.mkdtemp(prefix="bench-corpus-"))
    rows = []
    cases = [("bundled:gpt2-mini", 20000 if not args.quick else 6000, corpus.CorpusSettings(window=256, stride=128)),
             (gpt2_small_folder(tmp), 6000 if not args.quick else 2000, corpus.CorpusSettings(window=256, stride=128,
                                                                                              batch_size=4))]
    for spec, chars, settings in cases:
        lm = models.load(spec, device="cpu")
        path = _slice(chars, tmp)
        name = "gpt2-mini" if spec.startswith("bundled:gpt2") else Path(spec).name
        floor = plain_loop(lm, path, settings)
        local = job_local(lm, path, settings)
        row = [name, floor, local, local / floor]
        if args.quick and name != "gpt2-mini":
            row += ["-", "-"]
        else:
            row += [job_ray(spec, lm, path, settings, 1), job_ray(spec, lm, path, settings, 2)]
        rows.append(row)
    print(_util.table(["model", "plain model(labels=) tok/s", "corpus job local tok/s", "job / plain",
                       "job ray 1 worker tok/s", "job ray 2 workers tok/s"], rows))
    mem = []
    for copies in (1, 10, 100):
        r = _util.run_worker(Path(__file__), ["--copies", str(copies), "--tmp", str(tmp), "--base-chars",
                                              str(1500 if args.quick else 3000)])
        mem.append([f"{copies}×", r["tokens"], r["peak_mb"], r["method"]])
    print(_util.table(["corpus size", "tokens scored", "peak RSS growth (MB)", "peak method"], mem))


if __name__ == "__main__":
    main()
