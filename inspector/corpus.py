"""Corpus-scale statistics of one model or a checkpoint series, local by default (`corpus_ray` for Ray).

`python -m inspector corpus --model SPEC [--model SPEC ...] --data PATH --out DIR` streams a text file
(one document), a JSONL file (one document per line, field `text`) or a `datasets` dataset saved on
disk, cuts every document into the library's sliding windows (`analyses.scoring.windows`: context-sized,
stride configurable, every token but the first scored once), runs one instrumented forward per batch
of equal-length windows and folds it into accumulators:

- attention: per layer × head moments of q·k (`capture.AttentionMoments`: count, mean, M2, min, max,
  entropy, max-prob and sink sums) plus row histograms of entropy / log(n_keys) and of the largest
  probability, over every query row of every window;
- loss: Σ NLL and count (perplexity exactly as `loss.score_corpus` on the same text), a fixed-bin
  histogram of per-token NLL, and per-vocabulary-id NLL sums and counts (per-token-type loss: frequent
  vs rare types by their frequency in this corpus);
- norms: per norm layer the count, Σ, Σ² and max of the RMS of its input vectors (the scale a
  LayerNorm / RMSNorm divides out), over every position of every window.

Memory is flat in corpus size: the accumulators are O(layers × heads × bins + vocabulary + norm
layers). The only O(input) part is one document's token ids at a time (8 bytes per token of the
longest document; a .txt file is one document, so split a huge text into JSONL lines).

Results are written atomically to DIR/<k>/result.json + arrays.npz per model, with DIR/series.json
for a series (a table per statistic × checkpoint). Every `checkpoint_every` windows the accumulators
are saved to DIR/<k>/partial.npz; a restarted job resumes there and gives the same result as an
uninterrupted one (the same batches are merged in the same order).

One concern that reads better whole (about 540 lines): the corpus job's reading, windowing, accumulators,
checkpointed resume and atomic result files depend on one another's formats.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import torch

from . import capture, norm_hooks
from .errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from .models import LoadedModel

LOSS_EDGES = np.linspace(0.0, 20.0, 101)  # nats; the last bin also holds everything above 20
FREQUENCY_BUCKETS = ((1, 1), (2, 9), (10, 99), (100, 999), (1000, None))  # occurrences of a type in the corpus
SERIES_STATISTICS = ("std", "std_scaled", "mean", "max", "max_scaled", "entropy", "entropy_fraction",
                     "max_prob", "sink_mass")


@dataclass(frozen=True)
class CorpusSettings:
    window: int | None = None  # tokens per forward pass (default: the model's context)
    stride: int | None = None  # default window // 2, as the library's sliding-window perplexity
    batch_size: int = 8  # windows per forward pass
    hist_bins: int = 20  # row histogram bins on [0, 1]
    checkpoint_every: int = 200  # windows between saved partial accumulators (0: never)
    text_field: str = "text"


# --------------------------------------------------------------------------- reading the corpus


def iter_documents(path: str | Path, text_field: str = "text") -> Iterator[str]:
    """Documents of a .txt file (the whole file), a .jsonl file (field `text_field` per line) or a
    `datasets` dataset saved with save_to_disk (a folder), one at a time."""
    p = Path(path)
    if p.is_dir():
        try:
            import datasets
        except ImportError:
            raise InputError(f"{p} is a folder: reading a saved dataset needs the `datasets` package, which is "
                             "not installed.", "pip install datasets, or give a .txt or .jsonl file.") from None
        ds = datasets.load_from_disk(str(p))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[next(iter(ds))]
        if text_field not in ds.column_names:
            raise InputError(f"The dataset has no column {text_field!r}; columns: {', '.join(ds.column_names)}.")
        for row in ds:
            yield str(row[text_field])
        return
    if not p.is_file():
        raise InputError(f"No corpus file at {p}.")
    if p.suffix.lower() in (".jsonl", ".ndjson"):
        with p.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputError(f"Line {number} of {p.name} is not JSON ({e.msg}).") from None
                if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                    raise InputError(f"Line {number} of {p.name} has no string field {text_field!r}.")
                yield record[text_field]
        return
    yield p.read_text(encoding="utf-8")


def corpus_hash(path: str | Path) -> str:
    """sha256 of the corpus bytes (a folder: of every file's relative path and bytes, sorted)."""
    p, h = Path(path), hashlib.sha256()
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    for q in files:
        if p.is_dir():
            h.update(str(q.relative_to(p)).encode())
        with q.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- accumulators


class CorpusState:
    """Mergeable accumulators of one model over part of a corpus (numpy float64 / int64 only)."""

    def __init__(self, vocab: int):
        self.attention: capture.AttentionMoments | None = None
        self.nll_sum = 0.0
        self.n_tokens = 0
        self.loss_sq = 0.0
        self.loss_hist = np.zeros(len(LOSS_EDGES) - 1, dtype=np.int64)
        self.id_nll = np.zeros(vocab, dtype=np.float64)
        self.id_count = np.zeros(vocab, dtype=np.int64)
        self.norms: dict[str, np.ndarray] = {}  # name -> [n, Σrms, Σrms², max rms]
        self.windows = 0
        self.position = (0, 0)  # (document index, window index) where the next batch starts

    def merge(self, other: "CorpusState") -> "CorpusState":
        """Fold `other` (the windows after this state's) into this one."""
        if other.attention is not None:
            self.attention = other.attention if self.attention is None else self.attention.merge(other.attention)
        self.nll_sum += other.nll_sum
        self.n_tokens += other.n_tokens
        self.loss_sq += other.loss_sq
        self.loss_hist += other.loss_hist
        self.id_nll += other.id_nll
        self.id_count += other.id_count
        for name, v in other.norms.items():
            self.norms[name] = _merge_norm(self.norms.get(name), v)
        self.windows += other.windows
        self.position = max(self.position, other.position)
        return self

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {"nll_sum": np.asarray(self.nll_sum), "n_tokens": np.asarray(self.n_tokens),
               "loss_sq": np.asarray(self.loss_sq), "loss_hist": self.loss_hist, "id_nll": self.id_nll,
               "id_count": self.id_count, "windows": np.asarray(self.windows), "position": np.asarray(self.position),
               "norm_names": np.asarray(list(self.norms), dtype=str),
               "norm_values": np.stack(list(self.norms.values())) if self.norms else np.zeros((0, 4))}
        if self.attention is not None:
            out.update(self.attention.to_arrays("attn_"))
        return out

    @classmethod
    def from_arrays(cls, a) -> "CorpusState":
        s = cls(len(a["id_nll"]))
        s.nll_sum, s.n_tokens, s.loss_sq = float(a["nll_sum"]), int(a["n_tokens"]), float(a["loss_sq"])
        s.loss_hist, s.id_nll, s.id_count = np.array(a["loss_hist"]), np.array(a["id_nll"]), np.array(a["id_count"])
        s.norms = {str(n): np.array(v) for n, v in zip(a["norm_names"], a["norm_values"])}
        s.windows, s.position = int(a["windows"]), tuple(int(x) for x in a["position"])
        s.attention = capture.AttentionMoments.from_arrays(a, "attn_") if "attn_count" in a else None
        return s


def _merge_norm(a: np.ndarray | None, b: np.ndarray) -> np.ndarray:
    if a is None:
        return b.copy()
    return np.array([a[0] + b[0], a[1] + b[1], a[2] + b[2], max(a[3], b[3])])


@contextmanager
def _norm_input_hooks(lm: LoadedModel, sink: dict[str, np.ndarray]):
    """The RMS of every norm layer's input vectors added to `sink` (mergeable), through capture's norm hooks."""
    def observe(name: str, x: torch.Tensor, y: torch.Tensor) -> None:
        rms = x.detach().double().pow(2).mean(dim=-1).sqrt().reshape(-1)
        v = np.array([rms.numel(), float(rms.sum()), float(rms.pow(2).sum()), float(rms.max())])
        sink[name] = _merge_norm(sink.get(name), v)

    with norm_hooks.observe_norms(lm, observe):
        yield sink


def process_batches(lm: LoadedModel, ids: torch.Tensor, groups, state: CorpusState, hist_bins: int) -> None:
    """Run the window `groups` (lists of (begin, end, first scored) of document `ids`) into `state`."""
    from .analyses.scoring import causal_parts, log_softmax_rows, vocab_out

    body, head = causal_parts(lm)
    options = capture.CaptureOptions(logits=False, row_histogram_bins=hist_bins)
    vocab = vocab_out(lm)
    with torch.inference_mode(), _norm_input_hooks(lm, state.norms):
        for group in groups:
            x = torch.stack([ids[b:e] for b, e, _ in group]).to(lm.device)  # (b, W)
            with capture.capture(lm, options) as collector:
                h = body(x)  # (b, W, D)
            m = capture.moments(collector)
            state.attention = m if state.attention is None else state.attention.merge(m)
            rows, pos = [], []
            for r, (b, e, first) in enumerate(group):  # as scoring.scored_hidden: logits at t predict t + 1
                rows.append(h[r, first - 1 - b:e - 1 - b])
                pos.append(torch.arange(first, e))
            hidden, pos = torch.cat(rows), torch.cat(pos)
            target = ids[pos].to(lm.device)
            for sl, logp in log_softmax_rows(head, hidden, vocab):
                nll = -logp.gather(1, target[sl, None])[:, 0]  # float32 (n,)
                state.nll_sum += float(nll.double().sum())  # the same sums, in the same order, as score_corpus
                nd = nll.double().cpu().numpy()
                t = target[sl].cpu().numpy()
                state.loss_sq += float((nd ** 2).sum())
                state.loss_hist += np.bincount(np.clip(np.searchsorted(LOSS_EDGES, nd, side="right") - 1, 0,
                                                       len(LOSS_EDGES) - 2), minlength=len(LOSS_EDGES) - 1)
                np.add.at(state.id_nll, t, nd)
                state.id_count += np.bincount(t, minlength=len(state.id_count))
            state.n_tokens += int(pos.numel())
            state.windows += len(group)


# --------------------------------------------------------------------------- one model


def _document_windows(lm: LoadedModel, text: str, settings: CorpusSettings):
    from .analyses.loss import _tokenise_causal
    from .analyses.scoring import window_batches, window_settings, windows

    ids = _tokenise_causal(lm, text)[0]
    if len(ids) < 2:
        return None, []
    window, stride = window_settings(lm, settings.window, settings.stride)
    return torch.tensor(ids, dtype=torch.long), list(window_batches(windows(len(ids), window, stride),
                                                                       settings.batch_size))


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _save_npz(path: Path, arrays: dict) -> None:
    def write(tmp: Path):
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    _atomic_write(path, write)


def _save_json(path: Path, data: dict) -> None:
    _atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1, default=_json_default) + "\n"))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


class Progress:
    """Text progress bar on stderr: windows done, tokens/s, ETA (after a first pass counting windows)."""

    def __init__(self, total_windows: int, label: str, stream=None, callback=None):
        self.total, self.label, self.stream, self.callback = total_windows, label, stream, callback
        self.t0, self.tokens, self.start_windows = time.perf_counter(), 0, None

    def __call__(self, state: CorpusState, tokens: int) -> None:
        if self.start_windows is None:
            self.start_windows = state.windows - 0
        self.tokens += tokens
        dt = max(time.perf_counter() - self.t0, 1e-9)
        rate = self.tokens / dt
        done = state.windows
        w_rate = (done - self.start_windows) / dt if done > self.start_windows else 0.0
        eta = (self.total - done) / w_rate if w_rate > 0 else math.nan
        if self.callback is not None:
            self.callback(done, self.total, rate, eta)
        if self.stream is not None:
            width = 30
            fill = int(width * done / max(self.total, 1))
            eta_s = f"{eta:5.0f}s" if math.isfinite(eta) else "   ?s"
            self.stream.write(f"\r{self.label} [{'#' * fill}{'.' * (width - fill)}] {done}/{self.total} windows "
                              f"{rate:8.0f} tok/s ETA {eta_s}")
            self.stream.flush()


def count_windows(lm: LoadedModel, path, settings: CorpusSettings) -> int:
    total = 0
    for text in iter_documents(path, settings.text_field):
        _, groups = _document_windows(lm, text, settings)
        total += sum(len(g) for g in groups)
    return total


def run_local(lm: LoadedModel, path, settings: CorpusSettings, partial: Path | None = None, progress: Progress | None = None,
              stop_after_windows: int | None = None) -> CorpusState:
    """Accumulate the corpus at `path` on `lm`, resuming from `partial` when it exists.

    `stop_after_windows` stops (after saving the partial state) once that many windows are done:
    what an interruption looks like, for tests."""
    state = CorpusState(int(lm.model.get_output_embeddings().weight.shape[0]))
    if partial is not None and partial.exists():
        with np.load(partial) as a:
            state = CorpusState.from_arrays(a)
    start_doc, start_window = state.position
    since_save = 0
    for d, text in enumerate(iter_documents(path, settings.text_field)):
        if d < start_doc:
            continue
        ids, groups = _document_windows(lm, text, settings)
        w = 0
        for group in groups:
            if (d, w) < (start_doc, start_window):
                w += len(group)
                continue
            before = state.n_tokens
            process_batches(lm, ids, [group], state, settings.hist_bins)
            w += len(group)
            state.position = (d, w)
            since_save += len(group)
            if progress is not None:
                progress(state, state.n_tokens - before)
            if partial is not None and settings.checkpoint_every and since_save >= settings.checkpoint_every:
                _save_npz(partial, state.to_arrays())
                since_save = 0
            if stop_after_windows is not None and state.windows >= stop_after_windows:
                if partial is not None:
                    _save_npz(partial, state.to_arrays())
                raise KeyboardInterrupt(f"stopped after {state.windows} windows")
        state.position = (d + 1, 0)
    return state


# --------------------------------------------------------------------------- results


def summarise(state: CorpusState) -> dict:
    """Plain figures of a state: loss, perplexity, per-frequency-bucket loss, norms, attention per layer."""
    n = max(state.n_tokens, 1)
    mean = state.nll_sum / n
    seen = state.id_count > 0
    order = np.argsort(-state.id_count, kind="stable")
    cum = np.cumsum(state.id_count[order])
    frequent = np.zeros_like(seen)
    frequent[order[: int(np.searchsorted(cum, cum[-1] / 2.0)) + 1]] = True if cum.size and cum[-1] else False
    buckets = []
    for lo, hi in FREQUENCY_BUCKETS:
        sel = (state.id_count >= lo) & ((state.id_count <= hi) if hi is not None else True)
        tokens = int(state.id_count[sel].sum())
        buckets.append({"occurrences": f"{lo}-{hi}" if hi is not None else f"{lo}+", "types": int(sel.sum()),
                        "tokens": tokens, "mean_nll": float(state.id_nll[sel].sum() / tokens) if tokens else None})
    classes = {}
    for name, sel in (("frequent", frequent & seen), ("rare", ~frequent & seen)):
        tokens = int(state.id_count[sel].sum())
        classes[name] = {"types": int(sel.sum()), "tokens": tokens,
                         "mean_nll": float(state.id_nll[sel].sum() / tokens) if tokens else None}
    norms = []
    for name, (k, s1, s2, mx) in state.norms.items():
        m = s1 / max(k, 1)
        norms.append({"name": name, "vectors": int(k), "input_rms_mean": m,
                      "input_rms_std": math.sqrt(max(s2 / max(k, 1) - m * m, 0.0)), "input_rms_max": mx})
    out = {"tokens_scored": state.n_tokens, "windows": state.windows, "nll_sum": state.nll_sum,
           "mean_nll": mean, "perplexity": math.exp(mean) if state.n_tokens else None,
           "nll_std": math.sqrt(max(state.loss_sq / n - mean * mean, 0.0)),
           "frequency_buckets": buckets, "frequent_vs_rare": classes,
           "frequent_definition": "frequent = the most frequent types of this corpus covering half its scored "
                                  "tokens; rare = every other type seen", "norm_inputs": norms}
    if state.attention is not None:
        st = state.attention.stats()
        out["attention_per_layer"] = {k: getattr(st, k).mean(axis=1).tolist() for k in SERIES_STATISTICS}
    return out


@dataclass(frozen=True)
class ModelCorpusResult:
    """One model's corpus figures as read back from disk (arrays: see `arrays.npz`)."""

    spec: str
    step: int | None
    summary: dict
    meta: dict
    state: CorpusState

    @property
    def attention(self) -> capture.AttentionLogitStats | None:
        return self.state.attention.stats() if self.state.attention is not None else None


def _parsed(spec: str):
    """models.parse_spec(spec), or None for a spec it refuses (the job has loaded it already, so rarely)."""
    from . import models
    from .errors import InspectorError

    try:
        return models.parse_spec(spec)
    except InspectorError:
        return None


def _step_of(spec: str, folder: Path | None) -> int | None:
    m = re.search(r"(?:step|checkpoint)[-_](\d+)$", spec.rstrip("/"))
    if m:
        return int(m.group(1))
    parsed = _parsed(spec)
    if parsed is not None and parsed.source == "bundled" and (parsed.target.endswith("@final")
                                                              or "@" not in parsed.target) and folder is not None:
        tj = folder.parent / "training.json"
        if tj.exists():
            return int(json.loads(tj.read_text())["settings"]["steps"])
    return None


def expand_specs(specs: list[str]) -> list[str]:
    """A folder holding checkpoint-* sub-folders becomes those sub-folders, oldest step first."""
    out = []
    for spec in specs:
        p = Path(spec)
        subs = sorted((q for q in p.glob("checkpoint-*") if (q / "config.json").is_file()),
                      key=lambda q: int(re.sub(r"\D", "", q.name) or 0)) if p.is_dir() else []
        out.extend(str(q) for q in subs) if subs and not (p / "config.json").is_file() else out.append(spec)
    return out


def write_result(folder: Path, lm: LoadedModel, spec: str, state: CorpusState, meta: dict) -> None:
    folder_of = None
    parsed = _parsed(spec)
    if parsed is not None and parsed.source == "bundled":
        from . import bundled
        folder_of = bundled.resolve(spec)
    meta = {**meta, "spec": spec, "step": _step_of(spec, folder_of), "provenance": lm.provenance.to_dict()
            if getattr(lm, "provenance", None) is not None else None}
    _save_npz(folder / "arrays.npz", state.to_arrays())
    _save_json(folder / "result.json", {"meta": meta, "summary": summarise(state)})


def run_job(specs: list[str], data: str | Path, out: str | Path, settings: CorpusSettings | None = None, *,
            engine: str = "local", address: str | None = None, workers: int = 2, device: str = "auto",
            stream=sys.stderr, callback=None, stop_after_windows: int | None = None) -> Path:
    """Run every model spec over the corpus at `data` into `out` (see the module docstring)."""
    from . import models

    settings = settings or CorpusSettings()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    specs = expand_specs(list(specs))
    if not specs:
        raise InputError("No model given.")
    digest = corpus_hash(data)
    for k, spec in enumerate(specs):
        folder = out / f"{k:02d}"
        meta = {"corpus": str(data), "corpus_sha256": digest, "settings": asdict(settings), "engine": engine}
        job = {"spec": spec, "corpus_sha256": digest, "settings": asdict(settings)}
        done = folder / "result.json"
        if done.exists():
            old = json.loads(done.read_text())["meta"]
            if {k: old.get(k) for k in job} != job:
                raise InputError(f"{folder} holds a result of another job (model, corpus or settings differ).",
                                 "Give a fresh --out folder.")
            continue  # finished before: a restarted job goes on with the next model
        marker = folder / "partial.json"
        if (folder / "partial.npz").exists() and marker.exists() and json.loads(marker.read_text()) != job:
            raise InputError(f"{folder} holds partial accumulators of another job (model, corpus or settings "
                             "differ).", "Give a fresh --out folder, or the same arguments to resume.")
        _save_json(marker, job)
        lm = models.load(spec, device=device)
        if not lm.is_causal:
            raise InputError(f"`{spec}` is not a causal language model; the corpus job scores next-token loss.")
        progress = Progress(count_windows(lm, data, settings), f"[{k + 1}/{len(specs)}] {spec}", stream, callback)
        if engine == "ray":
            from . import corpus_ray
            state = corpus_ray.run_ray(spec, data, settings, address=address, workers=workers, device=device,
                                       progress=progress, lm=lm)
        elif engine == "local":
            state = run_local(lm, data, settings, folder / "partial.npz", progress, stop_after_windows)
        else:
            raise InputError(f"Unknown engine {engine!r}: use local or ray.")
        if stream is not None:
            stream.write("\n")
        meta["window"], meta["stride"] = _window_of(lm, settings)
        write_result(folder, lm, spec, state, meta)
        (folder / "partial.npz").unlink(missing_ok=True)
        marker.unlink(missing_ok=True)
    write_series(out)
    return out


def _window_of(lm: LoadedModel, settings):
    from .analyses.scoring import window_settings
    return window_settings(lm, settings.window, settings.stride)


# --------------------------------------------------------------------------- reading results, series


def load_results(out: str | Path) -> list[ModelCorpusResult]:
    out = Path(out)
    if not out.is_dir():
        raise InputError(f"No corpus result folder at {out}.")
    results = []
    for folder in sorted(p for p in out.iterdir() if (p / "result.json").is_file()):
        record = json.loads((folder / "result.json").read_text())
        with np.load(folder / "arrays.npz") as a:
            state = CorpusState.from_arrays(a)
        results.append(ModelCorpusResult(record["meta"]["spec"], record["meta"].get("step"), record["summary"],
                                         record["meta"], state))
    if not results:
        raise InputError(f"{out} holds no corpus result (no */result.json).")
    return results


def series_table(results: list[ModelCorpusResult]) -> dict:
    """statistic -> {checkpoints: [...], steps: [...], values: (checkpoints, layers, heads) nested lists};
    plus perplexity and mean NLL per checkpoint."""
    table = {"checkpoints": [r.spec for r in results], "steps": [r.step for r in results],
             "perplexity": [r.summary["perplexity"] for r in results],
             "mean_nll": [r.summary["mean_nll"] for r in results], "statistics": {}}
    stats = [r.attention for r in results]
    if all(s is not None for s in stats) and len({s.count.shape for s in stats}) == 1:
        for name in SERIES_STATISTICS:
            table["statistics"][name] = np.stack([getattr(s, name) for s in stats]).tolist()
    return table


def write_series(out: str | Path) -> None:
    out = Path(out)
    _save_json(out / "series.json", series_table(load_results(out)))
