"""Analysis reports: collect every analysis of one model and text, then write HTML / JSON / Markdown.

One collector serves the app, the CLI and the tests: `build_report(lm, text)` runs the
analyses once and keeps their result dataclasses in a `Report`; the writers only format
what is there (a report never recomputes). `to_json` / `report_from_json` round-trip the
results exactly (arrays included); `to_html` is one self-contained file (inline CSS and SVG,
no script, no network: it opens offline and can be mailed); `to_markdown` gives the summary
tables for a README or an issue. `write_report` writes atomically and never silently
replaces a file.

A section that does not apply to the model (loss on an encoder-only model) or whose module is
not part of this installation is kept as "not available: reason" instead of failing the report.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from . import svg_charts as svg
from .errors import InputError, InspectorError, NotAvailableError, ReportPathError

__all__ = [
    "SCHEMA_VERSION", "SECTIONS", "SECTION_TITLES", "DEFAULT_SETTINGS", "Report", "Section", "Unavailable", "Overview",
    "build_report", "build_comparison_report", "to_json", "report_from_json", "to_markdown", "to_html",
    "render", "write_report", "format_for_path", "check_output_path", "library_versions", "reports_equal",
    "summary",
]

SCHEMA_VERSION = 1
SECTIONS = ("overview", "layernorm", "attention", "loss", "embeddings", "attribution", "foundations")
SECTION_TITLES = {
    "overview": "Overview",
    "layernorm": "LayerNorm γ and β",
    "attention": "Attention logits (QKᵀ)",
    "loss": "Loss and perplexity",
    "embeddings": "Embeddings",
    "attribution": "Attribution",
    "foundations": "Claims checked on this model",
    "compare": "Comparison",
}
FORMATS = {".html": "html", ".htm": "html", ".json": "json", ".md": "md", ".markdown": "md"}

# Every knob a report uses, with its default. The values actually used are stored in the report.
DEFAULT_SETTINGS: dict[str, Any] = {
    "max_tokens": None,  # cut the text to this many tokens (None: the model's context)
    "layernorm_bins": 60,
    "attention_pattern_layer": -1,  # layer whose attention pattern is drawn (-1: last)
    "attention_pattern_head": 0,
    "attention_pattern_max_tokens": 64,  # the T × T pattern is kept only for texts up to this length
    "attention_what_if_layer": -1,  # layer of the "no 1/√d scaling / temperature" what-if (None: skip)
    "attention_temperatures": [0.25, 0.5, 1.0, 2.0, 4.0],
    "embeddings_corpus": "bundled",  # token frequencies for norm-vs-frequency: "bundled" corpus, "text", or None
    "foundations_corpus": "bundled",  # token frequencies / co-occurrences for the claims: "bundled" or "text"
    "embeddings_neighbours": 5,  # how many tokens of the text get a nearest-neighbour list
    "embeddings_k": 8,
    "embeddings_clusters": 0,  # k-means clusters of frequent tokens (0: skip; costs seconds)
    "attribution_method": "integrated_gradients",
    "attribution_target": "auto",
    "attribution_baseline": "pad",
    "attribution_steps": 32,
    "attribution_position": None,  # None: the last token (causal) / the middle token (masked)
    "loss_stride": None,  # sliding-window stride for texts longer than the context (None: window // 2)
    "loss_top_k": 5,
    "mlm_seed": 0,  # seed of BERT's 15 % masking
    "mlm_pll_max_tokens": 128,  # pseudo-log-likelihood (one forward per token) only up to this many tokens
    "gradient_position": None,  # position of the logit-gradient check (None: last prediction / middle token)
}

# Packages whose versions are recorded (import name -> distribution name). Read from metadata:
# nothing is imported (the library never imports streamlit).
_VERSION_PACKAGES = {
    "torch": "torch", "transformers": "transformers", "tokenizers": "tokenizers", "captum": "captum",
    "numpy": "numpy", "scipy": "scipy", "sklearn": "scikit-learn", "streamlit": "streamlit", "plotly": "plotly",
}


# --------------------------------------------------------------------------- data


@dataclass
class Unavailable:
    """A section (or part of one) that was not computed, and why."""

    reason: str
    status: str = "unavailable"  # "unavailable" (does not apply / not installed) | "failed" (an error)

    def __str__(self) -> str:
        return f"{'not available' if self.status == 'unavailable' else 'failed'}: {self.reason}"


@dataclass
class Overview:
    """The text as the model saw it."""

    n_characters: int
    n_tokens: int
    tokens: list[str]  # (T,) display strings (never escaped here)
    token_ids: np.ndarray  # (T,) int64
    special: np.ndarray  # (T,) bool
    truncated: bool  # the text was cut to the model's context
    text_pair: str | None = None


@dataclass
class Section:
    """One section of a report: its results by part name, or why it is missing.

    `results` maps a part name (e.g. "params", "activations") to a result dataclass, a list of
    them, or an `Unavailable` when just that part does not apply (segment embeddings on GPT-2).
    """

    name: str
    status: str  # "ok" | "unavailable" | "failed"
    reason: str = ""
    results: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def available(self) -> bool:
        return self.status == "ok"

    @property
    def result(self) -> Any:
        """The main result: the only part, or an `Unavailable` for a missing section."""
        if not self.available:
            return Unavailable(self.reason, self.status)
        if len(self.results) == 1:
            return next(iter(self.results.values()))
        return self.results or None

    def get(self, part: str, default=None):
        value = self.results.get(part, default)
        return default if isinstance(value, Unavailable) else value

    def __str__(self) -> str:
        return "ok" if self.available else str(Unavailable(self.reason, self.status))


@dataclass
class Report:
    """Everything a report shows: facts about the model(s), the text, settings, versions, results."""

    schema_version: int
    kind: str  # "model" | "comparison"
    created_utc: str  # ISO 8601, UTC
    text: str
    text_pair: str | None
    model: dict  # LoadedModel.describe(): spec, architecture, dtype, device, provenance (revision, commit)
    settings: dict
    versions: dict
    sections: dict[str, Section]
    model_b: dict | None = None  # second model of a comparison
    seconds: float = 0.0  # wall time of build_report

    def section(self, name: str) -> Section:
        if name not in self.sections:
            raise InputError(f"This report has no section '{name}'.",
                             f"Sections: {', '.join(self.sections) or 'none'}.")
        return self.sections[name]

    def result(self, section: str, part: str | None = None):
        """A section's main result (or one part of it); `Unavailable` when it was not computed."""
        sec = self.section(section)
        if part is None:
            return sec.result
        if not sec.available:
            return Unavailable(sec.reason, sec.status)
        if part not in sec.results:
            raise InputError(f"Section '{section}' has no part '{part}'.",
                             f"Parts: {', '.join(sec.results) or 'none'}.")
        return sec.results[part]

    @property
    def title(self) -> str:
        if self.kind == "comparison" and self.model_b:
            return f"{self.model.get('spec', '?')} vs {self.model_b.get('spec', '?')}"
        return str(self.model.get("spec", "?"))


# --------------------------------------------------------------------------- versions


def _inspector_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("inspector")
    except metadata.PackageNotFoundError:
        pass
    import inspector

    version = getattr(inspector, "__version__", None)
    if version:
        return str(version)
    commit = _git_commit(Path(__file__).resolve().parents[1])
    return f"dev+{commit}" if commit else "dev"


def _git_commit(repo: Path) -> str | None:
    """The checked-out commit, read from .git without running git (None when not a checkout)."""
    git = repo / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            ref = head[5:]
            ref_file = git / ref
            if ref_file.is_file():
                return ref_file.read_text().strip()[:12]
            packed = git / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split()[0][:12]
            return None
        return head[:12]
    except OSError:
        return None


def library_versions() -> dict[str, str]:
    """Versions of Python, inspector and the numeric/ML libraries (None when not installed)."""
    from importlib import metadata

    out = {"python": platform.python_version(), "inspector": _inspector_version()}
    for name, dist in _VERSION_PACKAGES.items():
        try:
            out[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


# --------------------------------------------------------------------------- settings


def _settings(settings: dict | None) -> dict:
    merged = dict(DEFAULT_SETTINGS)
    for key, value in (settings or {}).items():
        if key not in DEFAULT_SETTINGS:
            raise InputError(f"Unknown report setting '{key}'.",
                             f"Known settings: {', '.join(sorted(DEFAULT_SETTINGS))}.")
        merged[key] = value
    try:  # what is stored must survive JSON unchanged (tuples become lists here, not later)
        return json.loads(json.dumps(merged))
    except (TypeError, ValueError) as exc:
        raise InputError(f"Report settings must be plain numbers, strings and lists: {exc}.") from None


def _layer(index, n_layers: int) -> int | None:
    if index is None:
        return None
    index = int(index)
    if index < 0:
        index += n_layers
    if not 0 <= index < n_layers:
        raise InputError(f"Layer {index} does not exist.", f"Choose a layer from 0 to {n_layers - 1} (or -1).")
    return index


# --------------------------------------------------------------------------- section runners
#
# Each runner returns {part name: result}. A part whose own analysis does not apply raises
# NotAvailableError inside `_part`, which records it and lets the other parts run.


def _analysis(name: str):
    """Import inspector.analyses.<name>; ModuleNotFoundError (named) when this installation lacks it."""
    return importlib.import_module(f"inspector.analyses.{name}")


def _part(results: dict, name: str, fn: Callable[[], Any]) -> None:
    try:
        results[name] = fn()
    except NotAvailableError as exc:
        results[name] = Unavailable(exc.message)


def _run_overview(lm, enc, settings, ctx) -> dict:
    return {"overview": Overview(
        n_characters=len(enc.text),
        n_tokens=enc.n_tokens,
        tokens=list(enc.tokens),
        token_ids=enc.input_ids[0].cpu().numpy().astype(np.int64),
        special=np.asarray(enc.special, dtype=bool),
        truncated=bool(enc.truncated),
        text_pair=enc.text_pair,
    )}


def _run_layernorm(lm, enc, settings, ctx) -> dict:
    layernorm = _analysis("layernorm")

    out: dict[str, Any] = {}
    _part(out, "params", lambda: layernorm.layernorm_stats(lm, bins=int(settings["layernorm_bins"])))
    _part(out, "activations", lambda: layernorm.layernorm_activations(lm, enc))
    return out


def _run_attention(lm, enc, settings, ctx) -> dict:
    attention = _analysis("attention")

    out: dict[str, Any] = {}
    _part(out, "logits", lambda: attention.attention_logit_report(lm, enc))
    layer = _layer(settings["attention_pattern_layer"], lm.n_layers)
    if layer is not None and enc.n_tokens <= int(settings["attention_pattern_max_tokens"]):
        head = int(settings["attention_pattern_head"])
        _part(out, "pattern", lambda: attention.attention_pattern(lm, enc, layer, head))
    what_if = _layer(settings["attention_what_if_layer"], lm.n_layers)
    if what_if is not None:
        temps = tuple(settings["attention_temperatures"])
        _part(out, "what_if", lambda: attention.scaling_what_if(lm, enc, what_if, temps))
    return out


def _run_loss(lm, enc, settings, ctx) -> dict:
    loss = _analysis("loss")

    top_k = int(settings["loss_top_k"])
    out: dict[str, Any] = {}
    # The main part is not wrapped: an encoder-only model makes the whole section unavailable.
    if lm.is_causal:
        out["loss"] = loss.causal_token_loss(lm, enc.text, stride=settings["loss_stride"], top_k=top_k)
    elif lm.has_mlm_head:
        out["loss"] = loss.masked_lm_loss(lm, enc.text, seed=int(settings["mlm_seed"]), top_k=top_k)
        if enc.n_tokens <= int(settings["mlm_pll_max_tokens"]):
            _part(out, "pll", lambda: loss.pseudo_log_likelihood(lm, enc.text))
        if enc.text_pair and lm.has_nsp_head:
            _part(out, "nsp", lambda: loss.next_sentence(lm, enc.text, enc.text_pair))
    else:
        raise NotAvailableError(f"Loss needs a language-model head; this model is {lm.kind.label}, "
                                "so it has no loss or perplexity.")
    position = settings["gradient_position"]
    if position is None:
        if lm.is_causal:
            position = max(enc.n_tokens - 2, 0)
        else:
            content = [i for i in range(enc.n_tokens) if not enc.special[i]]
            position = content[len(content) // 2] if content else 0
    _part(out, "gradient", lambda: loss.logit_gradient_check(lm, enc, int(position)))
    return out


def _run_embeddings(lm, enc, settings, ctx) -> dict:
    emb = _analysis("embeddings")

    out: dict[str, Any] = {}
    _part(out, "token_norms", lambda: emb.token_norms(lm))
    _part(out, "anisotropy", lambda: emb.token_anisotropy(lm))
    corpus = settings["embeddings_corpus"]
    if corpus not in ("bundled", "text", None):
        raise InputError(f"embeddings_corpus is {corpus!r}.", "Choose 'bundled', 'text' or None.")
    if corpus is not None:
        def freq():
            if corpus == "bundled" and not emb.DEFAULT_CORPUS.is_file():
                raise NotAvailableError(f"The bundled corpus ({emb.DEFAULT_CORPUS.name}) is not installed.")
            try:
                if corpus == "bundled":
                    return emb.norm_frequency_correlation(lm, path=emb.DEFAULT_CORPUS)
                return emb.norm_frequency_correlation(lm, enc.text)
            except InputError as exc:  # too few distinct tokens in a short text
                raise NotAvailableError(exc.message) from None
        _part(out, "norm_frequency", freq)
    _part(out, "positions", lambda: emb.position_embeddings(lm))
    _part(out, "segments", lambda: emb.segment_embeddings(lm))
    _part(out, "contextual", lambda: emb.contextual_embeddings(lm, enc))
    n_nb = int(settings["embeddings_neighbours"])
    if n_nb > 0:
        ids = _content_token_ids(enc, n_nb)
        if ids:
            _part(out, "neighbours", lambda: emb.nearest_neighbours(lm, ids, k=int(settings["embeddings_k"])))
    n_clusters = int(settings["embeddings_clusters"] or 0)
    if n_clusters > 0:
        source = {"path": emb.DEFAULT_CORPUS} if corpus == "bundled" else {"text": enc.text}
        _part(out, "clusters", lambda: emb.cluster_tokens(lm, n_clusters, n_tokens=1000, **source))
    return out


def _content_token_ids(enc, n: int) -> list[int]:
    """Up to `n` distinct ordinary tokens of the text, longest display string first (content words)."""
    seen, cand = set(), []
    for i, (tid, tok) in enumerate(zip(enc.input_ids[0].tolist(), enc.tokens)):
        if enc.special[i] or tid in seen or not tok.strip() or not any(ch.isalnum() for ch in tok):
            continue
        seen.add(tid)
        cand.append((-len(tok.strip()), i, tid))
    return [tid for _, _, tid in sorted(cand)[:n]]


def _run_attribution(lm, enc, settings, ctx) -> dict:
    attribution = _analysis("attribution")

    return {"attribution": attribution.attribute(
        lm, enc.text, text_pair=enc.text_pair, method=settings["attribution_method"],
        target=settings["attribution_target"], baseline=settings["attribution_baseline"],
        steps=int(settings["attribution_steps"]), position=settings["attribution_position"],
        max_tokens=settings["max_tokens"])}


def _run_foundations(lm, enc, settings, ctx) -> dict:
    foundations = _analysis("foundations")

    corpus = settings["foundations_corpus"]
    if corpus not in ("bundled", "text", None):
        raise InputError(f"foundations_corpus is {corpus!r}.", "Choose 'bundled' or 'text'.")
    corpus_text = None
    if corpus == "bundled":
        path = _analysis("embeddings").DEFAULT_CORPUS
        if path.is_file():
            corpus_text = path.read_text(encoding="utf-8", errors="replace")
    return {"claims": foundations.claims_on_model(lm, enc.text, corpus_text)}


_RUNNERS: dict[str, Callable] = {
    "overview": _run_overview,
    "layernorm": _run_layernorm,
    "attention": _run_attention,
    "loss": _run_loss,
    "embeddings": _run_embeddings,
    "attribution": _run_attribution,
    "foundations": _run_foundations,
}
_MODULE_OF = {"layernorm": "layernorm", "attention": "attention", "loss": "loss", "embeddings": "embeddings",
              "attribution": "attribution", "foundations": "foundations", "compare": "compare"}


def _run_section(name: str, runner: Callable[[], dict], strict: bool) -> Section:
    t0 = time.perf_counter()
    try:
        results = runner()
        status, reason = "ok", ""
    except NotAvailableError as exc:
        results, status, reason = {}, "unavailable", exc.message
    except ModuleNotFoundError as exc:
        module = f"inspector.analyses.{_MODULE_OF.get(name, name)}"
        if exc.name != module:
            if strict:
                raise
            results, status, reason = {}, "failed", f"missing dependency: {exc}"
        else:
            results, status, reason = {}, "unavailable", f"this installation has no {module} module"
    except InspectorError as exc:
        if strict and not isinstance(exc, InputError):
            raise
        results, status, reason = {}, "failed", exc.message
    except Exception as exc:  # noqa: BLE001 - one broken analysis must not lose the others
        if strict:
            raise
        results, status, reason = {}, "failed", f"internal error ({type(exc).__name__}: {exc})"
    return Section(name=name, status=status, reason=reason, results=results,
                   seconds=round(time.perf_counter() - t0, 3))


def _check_sections(sections: Iterable[str], known: Iterable[str]) -> tuple[str, ...]:
    if isinstance(sections, str):
        sections = [s.strip() for s in sections.split(",") if s.strip()]
    sections = tuple(dict.fromkeys(sections))  # keep order, drop repeats
    known = tuple(known)
    bad = [s for s in sections if s not in known]
    if bad:
        raise InputError(f"Unknown report section(s): {', '.join(bad)}.", f"Choose from: {', '.join(known)}.")
    if not sections:
        raise InputError("No report section chosen.", f"Choose from: {', '.join(known)}.")
    return sections


def _now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def build_report(lm, text: str, *, sections: Iterable[str] = SECTIONS, settings: dict | None = None,
                 progress: Callable[[str, float], None] | None = None, text_pair: str | None = None,
                 strict: bool = False) -> Report:
    """Run the chosen analyses of `lm` on `text` once and collect their results.

    `progress(label, fraction)` is called before each section and with ("done", 1.0) at the end.
    Bad input (empty text, unknown section or setting) raises `InputError` before any work.
    A section that does not apply is kept as unavailable; with `strict`, an unexpected error
    in a section is raised instead of being recorded (tests use this).
    """
    from .inputs import encode

    t_start = time.perf_counter()
    names = _check_sections(sections, SECTIONS)
    used = _settings(settings)
    enc = encode(lm, text, text_pair, max_tokens=used["max_tokens"], truncate=True)
    ctx: dict[str, Any] = {}
    out: dict[str, Section] = {}
    for i, name in enumerate(names):
        if progress is not None:
            progress(name, i / len(names))
        out[name] = _run_section(name, lambda n=name: _RUNNERS[n](lm, enc, used, ctx), strict)
    if progress is not None:
        progress("done", 1.0)
    return Report(
        schema_version=SCHEMA_VERSION, kind="model", created_utc=_now_utc(), text=enc.text,
        text_pair=enc.text_pair, model=lm.describe(), settings=used, versions=library_versions(),
        sections=out, seconds=round(time.perf_counter() - t_start, 3))


def build_comparison_report(lm_a, lm_b, text: str, *, settings: dict | None = None,
                            progress: Callable[[str, float], None] | None = None, text_pair: str | None = None,
                            strict: bool = False, **compare_kwargs) -> Report:
    """Compare two models (two checkpoints of one architecture, or two architectures) on one text.

    The comparison itself is `inspector.analyses.compare.compare_models`; extra keyword arguments
    go to it. The report also carries an overview of the text under model A.
    """
    from .inputs import encode

    t_start = time.perf_counter()
    used = _settings(settings)
    enc = encode(lm_a, text, text_pair, max_tokens=used["max_tokens"], truncate=True)
    steps = [("overview", lambda: _run_overview(lm_a, enc, used, {})),
             ("compare", lambda: _run_compare(lm_a, lm_b, enc, compare_kwargs))]
    out: dict[str, Section] = {}
    for i, (name, fn) in enumerate(steps):
        if progress is not None:
            progress(name, i / len(steps))
        out[name] = _run_section(name, fn, strict)
    if progress is not None:
        progress("done", 1.0)
    return Report(
        schema_version=SCHEMA_VERSION, kind="comparison", created_utc=_now_utc(), text=enc.text,
        text_pair=enc.text_pair, model=lm_a.describe(), model_b=lm_b.describe(), settings=used,
        versions=library_versions(), sections=out, seconds=round(time.perf_counter() - t_start, 3))


def _run_compare(lm_a, lm_b, enc, kwargs) -> dict:
    compare = _analysis("compare")

    return {"comparison": compare.compare_models(lm_a, lm_b, enc.text, **kwargs)}


# --------------------------------------------------------------------------- JSON


def _type_name(obj) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _resolve_type(name: str):
    """The dataclass named `name`, only from inspector's own modules (a report file never picks code)."""
    module, _, qual = name.rpartition(".")
    if not (module == "inspector" or module.startswith("inspector.")) or not qual.isidentifier():
        raise InputError(f"The report names a result type outside inspector: '{name}'.")
    try:
        cls = getattr(importlib.import_module(module), qual)
    except (ImportError, AttributeError):
        return None
    return cls if isinstance(cls, type) and dataclasses.is_dataclass(cls) else None


def _encode_part(value) -> dict:
    from .analyses._common import to_dict

    if isinstance(value, Unavailable):
        return {"type": "unavailable", "reason": value.reason, "status": value.status}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"type": _type_name(value), "data": to_dict(value)}
    if isinstance(value, (list, tuple)) and value and all(
            dataclasses.is_dataclass(v) and type(v) is type(value[0]) for v in value):
        return {"type": "list", "item_type": _type_name(value[0]), "items": [to_dict(v) for v in value]}
    return {"type": "json", "data": to_dict(value)}


def _decode_part(d: dict):
    from .analyses._common import from_dict

    kind = d.get("type")
    if kind == "unavailable":
        return Unavailable(d.get("reason", ""), d.get("status", "unavailable"))
    if kind == "json":
        return d.get("data")
    if kind == "list":
        cls = _resolve_type(d["item_type"])
        return [from_dict(cls, x) if cls else x for x in d.get("items", [])]
    cls = _resolve_type(str(kind))
    return from_dict(cls, d["data"]) if cls else d.get("data")


def to_json(report: Report, *, indent: int | None = None) -> str:
    """The whole report as JSON (schema `schema_version`): every number the HTML shows, and more."""
    from .analyses._common import to_dict

    doc = {
        "schema_version": report.schema_version,
        "generator": "inspector",
        "kind": report.kind,
        "created_utc": report.created_utc,
        "seconds": report.seconds,
        "model": to_dict(report.model),
        "model_b": to_dict(report.model_b),
        "text": report.text,
        "text_pair": report.text_pair,
        "settings": to_dict(report.settings),
        "versions": to_dict(report.versions),
        "sections": {
            name: {"status": sec.status, "reason": sec.reason, "seconds": sec.seconds,
                   "results": {part: _encode_part(v) for part, v in sec.results.items()}}
            for name, sec in report.sections.items()
        },
    }
    doc["summary"] = to_dict(summary(report))  # derived figures the HTML shows; ignored when loading
    # allow_nan: ±inf (rare; NaN is already None) is written as Infinity, which json.loads reads.
    return json.dumps(doc, indent=indent, ensure_ascii=False, allow_nan=True)


def report_from_json(s: str | bytes) -> Report:
    """Load a JSON report back into result dataclasses (equal to the original: see `reports_equal`)."""
    try:
        doc = json.loads(s)
    except (TypeError, ValueError) as exc:
        raise InputError(f"This is not a JSON report: {exc}.") from None
    if not isinstance(doc, dict) or "schema_version" not in doc or "sections" not in doc:
        raise InputError("This JSON file is not an inspector report (no schema_version/sections).")
    version = doc["schema_version"]
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise InputError(f"This report has schema version {version}; this inspector reads up to {SCHEMA_VERSION}.",
                         "Open it with a newer inspector.")
    sections = {}
    for name, sec in doc["sections"].items():
        sections[name] = Section(
            name=name, status=sec.get("status", "ok"), reason=sec.get("reason", ""),
            results={part: _decode_part(v) for part, v in sec.get("results", {}).items()},
            seconds=float(sec.get("seconds", 0.0)))
    return Report(
        schema_version=version, kind=doc.get("kind", "model"), created_utc=doc.get("created_utc", ""),
        text=doc.get("text", ""), text_pair=doc.get("text_pair"), model=doc.get("model") or {},
        settings=doc.get("settings") or {}, versions=doc.get("versions") or {}, sections=sections,
        model_b=doc.get("model_b"), seconds=float(doc.get("seconds", 0.0)))


def reports_equal(a: Report, b: Report, *, rtol: float = 0.0, atol: float = 0.0) -> bool:
    """Deep equality of two reports, arrays compared with numpy (NaN equal to NaN)."""
    from .analyses._common import results_equal

    return results_equal(a, b, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------- summaries shared by writers


def _perplexity(report: Report) -> float | None:
    sec = report.sections.get("loss")
    if sec is None or not sec.available:
        return None
    res = sec.results.get("loss")
    value = getattr(res, "perplexity", None)
    return float(value) if value is not None else None


def _attention_rows(att) -> list[dict]:
    """Per layer: σ(q·k) and friends, averaged over heads (min–max over heads where useful)."""
    rows = []
    with np.errstate(all="ignore"):
        for layer in range(int(att.n_layers)):
            rows.append({
                "layer": layer,
                "std": float(np.nanmean(att.std[layer])),
                "std_min": float(np.nanmin(att.std[layer])),
                "std_max": float(np.nanmax(att.std[layer])),
                "std_scaled": float(np.nanmean(att.std_scaled[layer])),
                "ratio": float(np.nanmean(att.ratio[layer])),
                "entropy": float(np.nanmean(att.entropy[layer])),
                "entropy_fraction": float(np.nanmean(att.entropy_fraction[layer])),
                "max_prob": float(np.nanmean(att.max_prob[layer])),
                "max_scaled": float(np.nanmax(att.max_scaled[layer])),
            })
    return rows


def _claims_rows(claims) -> list[dict]:
    """Rows of the claims table, whatever its container (dataclass with .claims / .rows, or a list)."""
    if claims is None:
        return []
    items = None
    for attr in ("claims", "rows", "items"):
        if hasattr(claims, attr) and isinstance(getattr(claims, attr), (list, tuple)):
            items = getattr(claims, attr)
            break
    if items is None:
        items = claims if isinstance(claims, (list, tuple)) else [claims]
    rows = []
    for item in items:
        if dataclasses.is_dataclass(item):
            rows.append({f.name: getattr(item, f.name) for f in dataclasses.fields(item)})
        elif isinstance(item, dict):
            rows.append(dict(item))
    return rows


_CLAIM_COLUMNS = ("seed", "key", "id", "claim", "source", "expected", "measured", "threshold", "verdict", "status",
                  "holds", "detail", "evidence", "note")


def _claim_columns(rows: list[dict]) -> list[str]:
    """Scalar columns of the claims table: known ones first, in a readable order."""
    scalar = lambda v: v is None or isinstance(v, (str, int, float, bool, np.generic))  # noqa: E731
    present = [k for k in rows[0] if all(scalar(r.get(k)) for r in rows)] if rows else []
    ordered = [c for c in _CLAIM_COLUMNS if c in present]
    return ordered + [c for c in present if c not in ordered]


def _fmt(v, digits: int = 4) -> str:
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return "–" if v is None else str(v)
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    return svg.fmt_number(v, digits)


def summary(report: Report) -> dict:
    """The figures the HTML and Markdown derive from the results (means over heads, tables, ...).

    Written into the JSON beside the full results, so a script reading the JSON finds every
    number the HTML shows without recomputing it.
    """
    out: dict[str, Any] = {"perplexity": _perplexity(report)}
    for name, sec in report.sections.items():
        if not sec.available:
            continue
        r = sec.results
        if name == "attention" and dataclasses.is_dataclass(r.get("logits")):
            out["attention_per_layer"] = _attention_rows(r["logits"])
        if name == "attention" and dataclasses.is_dataclass(r.get("what_if")):
            wi = r["what_if"]
            out["attention_what_if"] = {
                "layer": wi.layer,
                "rows": [{"softmax_input": label, "logit_std": float(np.nanmean(a)), "entropy": float(np.nanmean(b)),
                          "entropy_fraction": float(np.nanmean(c)), "max_prob": float(np.nanmean(d))}
                         for label, a, b, c, d in _what_if_rows(wi)]}
        if name == "layernorm" and dataclasses.is_dataclass(r.get("params")):
            out["layernorm_table"] = r["params"].table()
        if name == "loss" and hasattr(r.get("loss"), "mean_ce_nats"):
            res = r["loss"]
            out["loss"] = {"perplexity": res.perplexity, "mean_ce_nats": res.mean_ce_nats,
                           "mean_ce_bits": res.mean_ce_bits, "n_scored": res.n_scored,
                           "top1_accuracy": float(np.mean(res.rank == 1)) if res.n_scored else None}
        elif name == "loss" and hasattr(r.get("loss"), "n_chosen"):
            res = r["loss"]
            out["loss"] = {"perplexity": res.perplexity, "loss": res.loss, "accuracy": res.accuracy,
                           "n_chosen": res.n_chosen}
        if name == "attribution" and dataclasses.is_dataclass(r.get("attribution")):
            out["attribution_relative_delta"] = r["attribution"].relative_delta
        if name == "foundations":
            out["claims"] = _claims_rows(r.get("claims"))
        if name == "compare" and hasattr(r.get("comparison"), "divergence_unavailable_reason"):
            out["comparison"] = [{"quantity": q, "a": va, "b": vb} for q, va, vb in _compare_rows(r["comparison"])]
    return out


def _what_if_rows(wi):
    """(label, logit σ, entropy, entropy fraction, max prob) per softmax input, each an (H,) array."""
    rows = [(f"model (× {_fmt(wi.model_scaling)})", wi.logit_std_model, wi.entropy_model, wi.entropy_fraction_model,
             wi.max_prob_model),
            ("no scaling (× 1)", wi.logit_std_unscaled, wi.entropy_unscaled, wi.entropy_fraction_unscaled,
             wi.max_prob_unscaled)]
    for k, t in enumerate(wi.temperatures):
        rows.append((f"temperature {_fmt(float(t))}", wi.logit_std[k], wi.entropy[k], wi.entropy_fraction[k],
                     wi.max_prob[k]))
    return rows


# --------------------------------------------------------------------------- Markdown


def _md_cell(v) -> str:
    s = v if isinstance(v, str) else _fmt(v)
    s = s.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    return s.replace("<", "&lt;").replace(">", "&gt;").replace("`", "\\`")


def _md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _md_fence(text: str) -> str:
    longest = max((len(run) for run in text.split("\n") for run in _backtick_runs(run)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _backtick_runs(line: str) -> list[str]:
    runs, cur = [], ""
    for ch in line:
        if ch == "`":
            cur += ch
        elif cur:
            runs.append(cur)
            cur = ""
    return runs + ([cur] if cur else [])


def _model_fact_rows(model: dict) -> list[list]:
    prov = model.get("provenance") or {}
    rows = [
        ["spec", model.get("spec")], ["architecture", model.get("architecture")],
        ["kind", model.get("kind_label") or model.get("kind")],
        ["layers × heads", f"{model.get('n_layers')} × {model.get('n_heads')}"],
        ["d_model / d_head", f"{model.get('d_model')} / {model.get('d_head')}"],
        ["vocabulary", model.get("vocab_size")], ["context (positions)", model.get("max_positions")],
        ["parameters", model.get("n_parameters")], ["dtype", model.get("dtype")], ["device", model.get("device")],
        ["source", prov.get("source")], ["revision", prov.get("revision") or "–"],
        ["commit / weights hash", prov.get("commit_hash") or "–"],
    ]
    return rows


def to_markdown(report: Report) -> str:
    """Summary tables for a README or an issue: model, perplexity, attention σ, LayerNorm, claims."""
    out = [f"# inspector report: {_md_cell(report.title)}", "",
           f"Generated {report.created_utc} (UTC) by inspector {_md_cell(report.versions.get('inspector'))}; "
           f"torch {report.versions.get('torch')}, transformers {report.versions.get('transformers')}.", ""]
    out += ["## Model", "", _md_table(["fact", "value"], _model_fact_rows(report.model)), ""]
    if report.model_b:
        out += ["## Model B", "", _md_table(["fact", "value"], _model_fact_rows(report.model_b)), ""]

    ov = report.sections.get("overview")
    out += ["## Text", ""]
    if ov is not None and ov.available:
        o = ov.results["overview"]
        out += [f"{o.n_characters:,} characters, {o.n_tokens:,} tokens"
                + (" (cut to the model's context)." if o.truncated else "."), ""]
    excerpt = report.text if len(report.text) <= 600 else report.text[:600] + " …"
    out += [_md_fence(excerpt), ""]

    loss_sec = report.sections.get("loss")
    if loss_sec is not None:
        out += ["## Loss and perplexity", ""]
        ppl = _perplexity(report)
        if ppl is not None:
            res = loss_sec.results["loss"]
            if hasattr(res, "mean_ce_nats"):
                rows = [["perplexity", f"{ppl:.6g}"], ["mean loss (nats/token)", f"{res.mean_ce_nats:.6g}"],
                        ["bits per token", f"{res.mean_ce_bits:.6g}"], ["scored tokens", res.n_scored]]
            else:
                rows = [["perplexity", f"{ppl:.6g}"], ["MLM loss (nats)", f"{res.loss:.6g}"],
                        ["accuracy on masked positions", f"{res.accuracy:.4g}"],
                        ["masked positions", f"{res.n_chosen} of {res.n_candidates} (seed {res.seed})"]]
                pll = loss_sec.get("pll")
                if pll is not None:
                    rows.append(["pseudo-perplexity", f"{pll.pseudo_perplexity:.6g}"])
            out += [_md_table(["quantity", "value"], rows), ""]
        else:
            out += [f"_{_md_cell(str(loss_sec))}_", ""]

    att_sec = report.sections.get("attention")
    if att_sec is not None:
        out += ["## Attention logits per layer", ""]
        att = att_sec.get("logits") if att_sec.available else None
        if att is not None:
            out += [f"σ of q·k over attended pairs, mean over {att.n_heads} heads; d_head = {att.d_head}, "
                    f"√d_head = {att.sqrt_d_head:.4g}. Scaled = what the softmax sees (× {att.scaling[0]:.4g}).", ""]
            rows = [[r["layer"], _fmt(r["std"]), f"{_fmt(r['std_min'])}–{_fmt(r['std_max'])}", _fmt(r["std_scaled"]),
                     _fmt(r["ratio"]), _fmt(r["entropy"]), _fmt(r["entropy_fraction"]), _fmt(r["max_prob"])]
                    for r in _attention_rows(att)]
            out += [_md_table(["layer", "σ(q·k)", "σ range over heads", "σ scaled", "σ/√d_head",
                               "entropy (nats)",
                               "entropy / log n", "mean max prob"], rows), ""]
        else:
            out += [f"_{_md_cell(str(att_sec if not att_sec.available else att_sec.results.get('logits')))}_", ""]

    ln_sec = report.sections.get("layernorm")
    if ln_sec is not None:
        out += ["## LayerNorm summary", ""]
        ln = ln_sec.get("params") if ln_sec.available else None
        if ln is not None:
            lo, hi = ln.gamma_band
            rows = []
            for r in ln.table():
                rows.append([r["name"], r["role"], r["size"], _fmt(r["gamma_mean"]), _fmt(r["gamma_std"]),
                             _fmt(r["gamma_median"]), _fmt(r["gamma_frac_in_band"], 3), _fmt(r["beta_mean"]),
                             _fmt(r["beta_std"]), _fmt(r["beta_frac_near_zero"], 3)])
            pg, pb = ln.pooled_gamma, ln.pooled_beta
            rows.append(["**all layers**", "", pg.n, _fmt(pg.mean), _fmt(pg.std), _fmt(float(pg.quantiles[3])),
                         _fmt(pg.frac_in_band, 3), _fmt(pb.mean if pb else None), _fmt(pb.std if pb else None),
                         _fmt(pb.frac_near_zero if pb else None, 3)])
            out += [_md_table(["layer", "role", "d", "γ mean", "γ std", "γ median", f"γ in [{lo:g}, {hi:g}]",
                               "β mean", "β std", f"|β| < {ln.beta_tol:g}"], rows), ""]
        else:
            out += [f"_{_md_cell(str(ln_sec))}_", ""]

    f_sec = report.sections.get("foundations")
    if f_sec is not None:
        out += ["## Claims", ""]
        rows = _claims_rows(f_sec.get("claims")) if f_sec.available else []
        if rows:
            cols = _claim_columns(rows)
            out += [_md_table(cols, [[r.get(c) for c in cols] for r in rows]), ""]
        else:
            out += [f"_{_md_cell(str(f_sec))}_", ""]

    cmp_sec = report.sections.get("compare")
    if cmp_sec is not None:
        out += ["## Comparison", ""]
        c = cmp_sec.get("comparison") if cmp_sec.available else None
        if c is not None and hasattr(c, "divergence_unavailable_reason"):
            out += [f"A = `{_md_cell(c.spec_a)}`, B = `{_md_cell(c.spec_b)}`.", ""]
            out += [_md_table(["quantity", "A", "B"], _compare_rows(c)), ""]
            for label, reason in (("distributions", c.divergence_unavailable_reason),
                                  ("loss per word", c.words_unavailable_reason),
                                  ("parameter drift", c.drift_unavailable_reason),
                                  ("embedding drift", c.embedding_drift_unavailable_reason),
                                  ("attention", c.attention_unavailable_reason)):
                if reason:
                    out.append(f"- {label}: {_md_cell(reason)}")
            out.append("")
        elif cmp_sec.available:
            out += [_md_table(["quantity", "value"], _scalar_rows(cmp_sec.result, limit=40)), ""]
        else:
            out += [f"_{_md_cell(str(cmp_sec))}_", ""]

    missing = [(n, s) for n, s in report.sections.items() if not s.available]
    if missing:
        out += ["## Sections not included", ""] + [f"- {SECTION_TITLES.get(n, n)}: {_md_cell(str(s))}"
                                                   for n, s in missing] + [""]
    out += ["## Versions", "", _md_table(["package", "version"], [[k, v or "–"] for k, v in report.versions.items()]),
            ""]
    return "\n".join(out)


def _scalar_rows(obj, prefix: str = "", limit: int = 60) -> list[list]:
    """(name, value) of every scalar field of a dataclass (nested dataclasses flattened with dots)."""
    rows: list[list] = []
    if isinstance(obj, dict):
        items = obj.items()
    elif dataclasses.is_dataclass(obj):
        items = ((f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj))
    else:
        return rows
    for name, v in items:
        key = f"{prefix}{name}"
        if isinstance(v, (str, bool, int, float, np.generic)) or v is None:
            rows.append([key, v])
        elif isinstance(v, np.ndarray) and v.size == 1:
            rows.append([key, v.reshape(-1)[0].item()])
        elif dataclasses.is_dataclass(v) and not isinstance(v, type):
            rows += _scalar_rows(v, key + ".", limit)
        if len(rows) >= limit:
            break
    return rows[:limit]


# --------------------------------------------------------------------------- HTML

_CSS = """
:root{--fg:#1d2330;--muted:#5b6472;--line:#dde1e7;--bg:#ffffff;--soft:#f5f7fa;--accent:#0072B2;--warn:#9a5b00}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{padding:20px 32px;border-bottom:1px solid var(--line);background:var(--soft)}
header h1{margin:0 0 4px;font-size:22px}
header p{margin:2px 0;color:var(--muted)}
nav{padding:8px 32px;border-bottom:1px solid var(--line);position:sticky;top:0;background:var(--bg);z-index:1}
nav a{margin-right:14px;color:var(--accent);text-decoration:none;font-size:14px}
main{padding:8px 32px 32px;max-width:1200px}
section{margin:28px 0;padding-top:4px;border-top:1px solid var(--line)}
h2{font-size:19px;margin:14px 0 8px}
h3{font-size:16px;margin:18px 0 6px}
table{border-collapse:collapse;margin:8px 0 14px;font-size:13px}
th,td{border:1px solid var(--line);padding:3px 8px;text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.charts{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
svg.chart{border:1px solid var(--line);border-radius:4px;max-width:100%;height:auto}
pre.text{white-space:pre-wrap;word-break:break-word;background:var(--soft);padding:10px 12px;border-radius:4px;
  max-height:320px;overflow:auto;font:13px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.tokens{line-height:2.1;font:13px/2.1 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.tok{border:1px solid var(--line);border-radius:3px;padding:1px 3px;margin:0 2px 0 0;white-space:pre}
.tok.special{color:var(--muted);font-style:italic}
.note{color:var(--muted);font-size:13px}
.unavailable{color:var(--warn);background:#fff8ec;border:1px solid #f1ddb8;padding:6px 10px;border-radius:4px}
.failed{color:#8a1c1c;background:#fdf0f0;border:1px solid #efc4c4;padding:6px 10px;border-radius:4px}
.kv td:first-child{color:var(--muted);white-space:nowrap}
footer{padding:16px 32px;color:var(--muted);font-size:12px;border-top:1px solid var(--line)}
"""

# Content-Security-Policy as a meta tag: even a viewer that ignores everything else will not
# load anything from anywhere or run any script from this file.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


def _h(s) -> str:
    """Escape text for HTML content or a quoted attribute (shared with the SVG charts)."""
    return svg.escape(s)


def _table(header: list[str], rows: list[list], *, cls: str = "") -> str:
    head = "".join(f"<th>{_h(c)}</th>" for c in header)
    body = []
    for row in rows:
        cells = []
        for c in row:
            numeric = isinstance(c, (int, float, np.integer, np.floating)) and not isinstance(c, bool)
            cells.append(f'<td class="num">{_h(_fmt(c))}</td>' if numeric else f"<td>{_h(_fmt(c))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    cls_attr = f' class="{cls}"' if cls else ""
    return f"<table{cls_attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _kv(rows: list[list]) -> str:
    return ('<table class="kv"><tbody>' + "".join(
        f"<tr><td>{_h(k)}</td><td>{_h(_fmt(v))}</td></tr>" for k, v in rows) + "</tbody></table>")


def _unavail_html(what: Unavailable | Section) -> str:
    status = what.status
    cls = "failed" if status == "failed" else "unavailable"
    return f'<p class="{cls}">{_h(str(what))}</p>'


_INVISIBLE = {"\n": "⏎", "\r": "␍", "\t": "⇥"}


def _visible(token: str) -> str:
    """A token as a reader can see it: newlines and tabs as symbols, a blank token's spaces as ␣."""
    s = "".join(_INVISIBLE.get(ch, ch) for ch in str(token))
    return s.replace(" ", "␣") if s.strip() == "" else s


def _vis(tokens) -> list[str]:
    return [_visible(t) for t in tokens]


def _guesses(tokens, probs) -> str:
    """A model's top predictions as 'token (p), ...'."""
    return ", ".join(f"{_visible(t)} ({float(p):.2f})" for t, p in zip(tokens, probs))


def _tokens_html(tokens: list[str], special=None, colors: list[str] | None = None,
                 titles: list[str] | None = None) -> str:
    chips = []
    for i, tok in enumerate(tokens):
        is_special = bool(special[i]) if special is not None and i < len(special) else False
        style = f' style="background:{colors[i]}"' if colors else ""
        title = titles[i] if titles else f"#{i}"
        chips.append(f'<span class="tok{" special" if is_special else ""}" title="{_h(title)}"{style}>'
                     f"{_h(_visible(tok))}</span>")
    return '<div class="tokens">' + "".join(chips) + "</div>"


def _charts(*items: str) -> str:
    return '<div class="charts">' + "".join(i for i in items if i) + "</div>"


def _html_overview(report: Report, sec: Section) -> str:
    o = sec.results.get("overview")
    parts = ["<h3>Model</h3>", _kv(_model_fact_rows(report.model))]
    if report.model_b:
        parts += ["<h3>Model B</h3>", _kv(_model_fact_rows(report.model_b))]
    parts.append("<h3>Text</h3>")
    if o is not None:
        parts.append(f'<p class="note">{o.n_characters:,} characters, {o.n_tokens:,} tokens'
                     + (" — cut to the model's context; the analyses cover these tokens only." if o.truncated
                        else ".") + "</p>")
    parts.append(f'<pre class="text">{_h(report.text)}</pre>')
    if report.text_pair:
        parts += ['<p class="note">Second sentence:</p>', f'<pre class="text">{_h(report.text_pair)}</pre>']
    if o is not None:
        titles = [f"#{i} id {int(t)}" for i, t in enumerate(o.token_ids)]
        parts += ["<h3>Tokens</h3>", _tokens_html(o.tokens, o.special, titles=titles)]
    return "".join(parts)


def _html_layernorm(report: Report, sec: Section) -> str:
    parts = []
    ln = sec.results.get("params")
    if isinstance(ln, Unavailable):
        parts.append(_unavail_html(ln))
    elif ln is not None:
        lo, hi = ln.gamma_band
        pg, pb = ln.pooled_gamma, ln.pooled_beta
        parts.append(f'<p>{len(ln.layers)} normalisation layers. Over all of them: γ mean {_h(_fmt(pg.mean))}, '
                     f'median {_h(_fmt(float(pg.quantiles[3])))}; {pg.frac_in_band:.1%} of γ lie in '
                     f'[{lo:g}, {hi:g}]' + (f"; {pb.frac_near_zero:.1%} of β have |β| &lt; {ln.beta_tol:g}"
                                            if pb else "; no layer has a bias β") + ".</p>")
        names = _short_names([layer.name for layer in ln.layers])
        charts = [svg.histogram(pg.hist_counts, pg.hist_edges, log_y=True, title="γ over all layers",
                                x_label="γ", markers={"band lo": lo, "band hi": hi})]
        if pb is not None:
            charts.append(svg.histogram(pb.hist_counts, pb.hist_edges, log_y=True, title="β over all layers",
                                        x_label="β", markers={"0": 0.0}))
        charts.append(svg.bar_chart(names, [layer.gamma_stats.quantiles[3] for layer in ln.layers],
                                    title="median γ per layer", y_label="γ"))
        charts.append(svg.heatmap(np.stack([layer.gamma_stats.hist_counts for layer in ln.layers]).astype(float),
                                  row_labels=names, col_labels=[svg.fmt_number(e) for e in pg.hist_edges[:-1]],
                                  title="γ histogram per layer (count)", x_label="γ bin (left edge)"))
        parts.append(_charts(*charts))
        rows = [[r["name"], r["role"], r["kind"], r["size"], r["gamma_mean"], r["gamma_std"], r["gamma_min"],
                 r["gamma_max"], r["gamma_median"], r["gamma_frac_in_band"], r["beta_mean"], r["beta_std"],
                 r["beta_frac_near_zero"]] for r in ln.table()]
        parts.append(_table(["layer", "role", "kind", "d", "γ mean", "γ std", "γ min", "γ max", "γ median",
                             f"γ in [{lo:g}, {hi:g}]", "β mean", "β std", f"|β| < {ln.beta_tol:g}"], rows))
    acts = sec.results.get("activations")
    if isinstance(acts, Unavailable):
        parts.append(_unavail_html(acts))
    elif acts:
        parts.append("<h3>What the norm layers do to this text</h3>")
        x = list(range(len(acts)))
        parts.append(_charts(svg.line_chart(
            {"input std": (x, [a.input_std for a in acts]), "output std": (x, [a.output_std for a in acts])},
            title="activation std before and after each norm layer", x_label="norm layer (registration order)",
            log_y=True)))
        parts.append(_table(["layer", "role", "tokens", "input mean", "input std", "output mean", "output std"],
                            [[a.name, a.role, a.n_tokens, a.input_mean, a.input_std, a.output_mean, a.output_std]
                             for a in acts]))
    return "".join(parts)


def _scale_series(x: list[int], rows: list[dict]) -> dict:
    """σ/√d_head and σ scaled per layer: one line when the model's scaling is exactly 1/√d_head."""
    ratio = [r["ratio"] for r in rows]
    scaled = [r["std_scaled"] for r in rows]
    if np.allclose(ratio, scaled, rtol=1e-9, atol=0.0, equal_nan=True):
        return {"σ scaled = σ(q·k)/√d_head": (x, scaled)}
    return {"σ(q·k)/√d_head": (x, ratio), "σ scaled": (x, scaled)}


def _short_names(names: list[str]) -> list[str]:
    """Module paths without the dotted prefix they all share (transformer.h.0.ln_1 -> h.0.ln_1)."""
    parts = [n.split(".") for n in names]
    common = 0
    while parts and all(len(p) > common + 1 and p[common] == parts[0][common] for p in parts):
        common += 1
    return [".".join(p[common:]) for p in parts]


def _html_attention(report: Report, sec: Section) -> str:
    parts = []
    att = sec.results.get("logits")
    if isinstance(att, Unavailable):
        parts.append(_unavail_html(att))
    elif att is not None:
        L, H = att.n_layers, att.n_heads
        rows_lab = [f"layer {i}" for i in range(L)]
        cols_lab = [f"h{j}" for j in range(H)]
        parts.append(f"<p>σ of the attention logits q·k over the (query, key) pairs the model attends to; "
                     f"d_head = {att.d_head}, √d_head = {att.sqrt_d_head:.4g}. The softmax sees them × "
                     f"{_h(_fmt(float(att.scaling[0])))} (“scaled”). Instrumented vs plain forward: max |Δ "
                     f"{_h(att.fidelity_quantity)}| = {_h(_fmt(att.fidelity_max_abs_diff))}.</p>")
        rows = _attention_rows(att)
        x = [r["layer"] for r in rows]
        parts.append(_charts(
            svg.heatmap(att.std_scaled, row_labels=rows_lab, col_labels=cols_lab,
                        title="σ of scaled logits (what the softmax sees)"),
            svg.line_chart(_scale_series(x, rows),
                           title="logit scale per layer (mean over heads)", x_label="layer", reference=1.0,
                           reference_label="1 (unit-variance q, k)"),
            svg.heatmap(att.entropy_fraction, row_labels=rows_lab, col_labels=cols_lab, vmin=0.0, vmax=1.0,
                        title="softmax entropy / log(n keys) (1 = uniform)"),
            svg.heatmap(att.max_prob, row_labels=rows_lab, col_labels=cols_lab, vmin=0.0, vmax=1.0,
                        title="mean max attention probability (1 = saturated)"),
        ))
        parts.append(_table(["layer", "σ(q·k)", "σ min (head)", "σ max (head)", "σ scaled", "σ/√d_head",
                             "entropy (nats)", "entropy / log n", "mean max prob", "max scaled logit"],
                            [[r["layer"], r["std"], r["std_min"], r["std_max"], r["std_scaled"], r["ratio"],
                              r["entropy"], r["entropy_fraction"], r["max_prob"], r["max_scaled"]] for r in rows]))
    wi = sec.results.get("what_if")
    if isinstance(wi, Unavailable):
        parts.append(_unavail_html(wi))
    elif wi is not None:
        parts.append(f"<h3>What the 1/√d scaling buys (layer {wi.layer})</h3>")
        rows = [[label, *(float(np.nanmean(v)) for v in values)] for label, *values in _what_if_rows(wi)]
        parts.append(_table(["softmax input", "σ of logits", "entropy (nats)", "entropy / log n", "mean max prob"],
                            rows))
        parts.append('<p class="note">Means over heads; temperature T divides the model\'s logits by T.</p>')
    pat = sec.results.get("pattern")
    if isinstance(pat, Unavailable):
        parts.append(_unavail_html(pat))
    elif pat is not None:
        parts.append(f"<h3>Attention pattern, layer {pat.layer}, head {pat.head}</h3>")
        parts.append(_charts(svg.heatmap(np.where(pat.valid, pat.probs, np.nan), row_labels=_vis(pat.tokens),
                                         col_labels=_vis(pat.tokens), vmin=0.0, vmax=1.0, x_label="key",
                                         y_label="query", title=f"attention probabilities L{pat.layer} H{pat.head}")))
    return "".join(parts)


def _loss_colors(tokens: list[str], positions, ce) -> tuple[list[str], list[str]]:
    """Background colour and hover text per token: darker = higher loss; unscored tokens white."""
    fin = np.asarray(ce, dtype=float)
    fin = fin[np.isfinite(fin)]
    hi = float(fin.max()) if fin.size else 1.0
    colors, titles = ["#ffffff"] * len(tokens), [f"#{i}: not scored" for i in range(len(tokens))]
    for p, v in zip(positions, ce):
        p = int(p)
        if 0 <= p < len(tokens) and np.isfinite(v):
            colors[p] = _light(svg.color_at(1 - float(v) / hi if hi > 0 else 1.0, "viridis"), 0.45)
            titles[p] = f"#{p}: {_fmt(float(v))} nats"
    return colors, titles


def _html_loss(report: Report, sec: Section) -> str:
    res = sec.results.get("loss")
    parts = []
    if res is not None and hasattr(res, "mean_ce_nats"):  # causal LM
        parts.append(_kv([["perplexity", res.perplexity], ["mean loss (nats/token)", res.mean_ce_nats],
                          ["bits per token", res.mean_ce_bits], ["scored tokens", res.n_scored],
                          ["window / stride / windows", f"{res.window} / {res.stride} / {res.n_windows}"],
                          ["top-1 accuracy", float(np.mean(res.rank == 1)) if res.n_scored else None]]))
        labels = [_visible(res.tokens[int(p)]) for p in res.positions]
        parts.append(_charts(
            svg.bar_chart(labels, res.ce_nats, title="loss of each predicted token", y_label="nats",
                          width=_bar_width(len(labels)), reference=res.mean_ce_nats,
                          reference_label="mean"),
            svg.histogram_from_values(res.ce_nats, bins=30, title="distribution of per-token loss", x_label="nats",
                                      markers={"mean": res.mean_ce_nats})))
        colors, titles = _loss_colors(res.tokens, res.positions, res.ce_nats)
        parts.append('<p class="note">Tokens coloured by their loss (darker = more surprising):</p>')
        parts.append(_tokens_html(res.tokens, colors=colors, titles=titles))
        worst = np.argsort(-res.ce_nats, kind="stable")[:10]
        parts.append("<h3>Most surprising tokens</h3>")
        parts.append(_table(["position", "token", "loss (nats)", "P(token)", "rank", "model's top guesses"],
                            [[int(res.positions[i]), _visible(res.tokens[int(res.positions[i])]), float(res.ce_nats[i]),
                              float(res.prob[i]), int(res.rank[i]),
                              _guesses(res.top_tokens[i], res.top_probs[i])]
                             for i in worst]))
    elif res is not None and hasattr(res, "n_chosen"):  # masked LM
        parts.append(_kv([["MLM perplexity (seeded masking)", res.perplexity], ["MLM loss (nats)", res.loss],
                          ["accuracy on chosen positions", res.accuracy],
                          ["chosen / content tokens", f"{res.n_chosen} / {res.n_candidates}"],
                          ["[MASK] / random / unchanged", f"{res.n_mask} / {res.n_random} / {res.n_unchanged}"],
                          ["seed, mask probability", f"{res.seed}, {res.mask_prob:g}"], ["chunks", res.n_chunks]]))
        kinds = {0: "[MASK]", 1: "random", 2: "unchanged"}
        parts.append(_table(["position", "original", "model saw", "replacement", "loss (nats)", "P(original)", "rank",
                             "top guesses"],
                            [[int(p), _visible(res.tokens[int(p)]), _visible(res.replacement_tokens[i]),
                              kinds.get(int(k), str(k)),
                              float(res.ce_nats[i]), float(res.prob[i]), int(res.rank[i]),
                              _guesses(res.top_tokens[i], res.top_probs[i])]
                             for i, (p, k) in enumerate(zip(res.positions, res.replacement_kind))]))
    elif res is not None:
        parts.append(_generic_html(res))
    pll = sec.results.get("pll")
    if isinstance(pll, Unavailable):
        parts.append(_unavail_html(pll))
    elif pll is not None:
        parts.append("<h3>Pseudo-log-likelihood (each token masked in turn)</h3>")
        parts.append(_kv([["pseudo-perplexity", pll.pseudo_perplexity], ["PLL (nats)", pll.pll],
                          ["tokens", pll.n_tokens]]))
        colors, titles = _loss_colors(pll.tokens, range(len(pll.tokens)), -np.asarray(pll.log_prob))
        parts.append(_tokens_html(pll.tokens, colors=colors, titles=titles))
    nsp = sec.results.get("nsp")
    if isinstance(nsp, Unavailable):
        parts.append(_unavail_html(nsp))
    elif nsp is not None:
        parts.append("<h3>Next-sentence prediction</h3>")
        parts.append(_kv([["P(IsNext)", nsp.p_is_next], ["prediction", nsp.prediction],
                          ["NSP loss if B follows A (nats)", nsp.loss_if_next]]))
    g = sec.results.get("gradient")
    if isinstance(g, Unavailable):
        parts.append(_unavail_html(g))
    elif g is not None:
        parts.append(f"<h3>Gradient of the loss at position {g.position} ({_h(g.objective)})</h3>")
        parts.append(_kv([["target token", _visible(g.target_token)], ["loss (nats)", g.loss],
                          ["P(target)", g.prob_target],
                          ["max |autograd − (P − onehot)|", g.logit_grad_max_abs_diff],
                          ["∂L/∂z_target (= P − 1)", g.logit_grad_target],
                          ["Σ ∂L/∂z (= 0)", g.logit_grad_sum],
                          ["max |∂L/∂W_out − (P − onehot) ⊗ h|", g.output_formula_max_abs_diff],
                          ["cos(−∂L/∂w_target, h)", g.target_row_cos_h], ["weights tied", g.tied]]))
        parts.append(_table(["token", "∂L/∂z"],
                            [[_visible(t), float(v)] for t, v in zip(g.top_tokens, g.top_logit_grads)]))
    return "".join(parts)


def _bar_width(n: int) -> int:
    """Width of a bar chart with one bar per token/word: readable for a few, bounded for many."""
    return int(max(440, min(1100, 120 + 14 * n)))


def _light(hex_color: str, amount: float = 0.55) -> str:
    """Mix a colour with white so dark text on it stays readable."""
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    mix = lambda c: round(c + (255 - c) * amount)  # noqa: E731
    return "#%02x%02x%02x" % (mix(r), mix(g), mix(b))


def _html_embeddings(report: Report, sec: Section) -> str:
    r = sec.results
    parts = []

    def block(name: str, title: str, render: Callable[[Any], str]) -> None:
        v = r.get(name)
        if v is None:
            return
        parts.append(f"<h3>{_h(title)}</h3>")
        parts.append(_unavail_html(v) if isinstance(v, Unavailable) else render(v))

    def norms(tn) -> str:
        return (_charts(svg.histogram(tn.hist_counts, tn.hist_edges, log_y=True, x_label="‖e‖",
                                      title="token-embedding norms", markers={"mean": tn.mean}))
                + _kv([["mean", tn.mean], ["std", tn.std], ["min", tn.min], ["max", tn.max]])
                + _table(["largest norm", "smallest norm"],
                         [[_visible(a), _visible(b)] for a, b in zip(tn.largest_tokens[:10], tn.smallest_tokens[:10])]))

    def aniso(a) -> str:
        return _kv([["mean cosine of random token pairs", a.mean_cosine], ["std", a.std_cosine],
                    ["pairs", a.n_pairs], ["‖mean vector‖ / mean ‖vector‖", a.mean_vector_ratio]])

    def freq(nf) -> str:
        centres = (np.asarray(nf.bin_edges[:-1]) + np.asarray(nf.bin_edges[1:])) / 2
        return (_kv([["Spearman ρ (tokens seen)", nf.rho_seen], ["p", nf.p_seen], ["tokens seen", nf.n_seen],
                     ["Spearman ρ (all, unseen = 0)", nf.rho_all], ["corpus tokens", nf.n_corpus_tokens],
                     ["corpus", Path(str(nf.corpus)).name if nf.corpus not in ("text", "counts") else nf.corpus]])
                + _charts(svg.line_chart({"mean norm": (centres, nf.bin_mean_norm)}, x_label="log10 count",
                                         y_label="‖e‖", title="norm against corpus frequency")))

    def positions(p) -> str:
        idx = np.arange(len(p.norms))
        cm, cp = p.cos_matrix, p.cos_positions
        if cm.shape[0] > 40:  # keep the file small: an even subsample of the kept positions
            keep = np.unique(np.linspace(0, cm.shape[0] - 1, 40).round().astype(int))
            cm, cp = cm[np.ix_(keep, keep)], cp[keep]
        return (_kv([["positions × dim", f"{p.n_positions} × {p.dim}"], ["learned", p.learned],
                     ["similarity to sinusoidal (Pearson of cosine matrices)", p.sinusoidal_similarity],
                     ["mean best |r| per dim vs sinusoids", p.best_dim_correlation]])
                + _charts(svg.line_chart({"norm": (idx, p.norms)}, title="position-embedding norm",
                                         x_label="position", markers=False),
                          svg.line_chart({"cos(p, p+1)": (idx[:-1], p.adjacent_cosine)}, markers=False,
                                         title="cosine of neighbouring positions", x_label="position"),
                          svg.heatmap(cm, row_labels=[str(int(i)) for i in cp], col_labels=[str(int(i)) for i in cp],
                                      scale="diverging", vmin=-1.0, vmax=1.0, title="position × position cosine")))

    def segments(s) -> str:
        return _kv([["segment types", s.n_types], ["cosine(segment 0, segment 1)", s.cosine_0_1],
                    ["segment norms", ", ".join(_fmt(v) for v in s.norms)], ["mean token norm", s.mean_token_norm]])

    def contextual(c) -> str:
        L1 = len(c.mean_pairwise_cosine)
        items = [svg.line_chart({"mean cosine between tokens": (range(L1), c.mean_pairwise_cosine),
                                 "cosine with final layer": (range(L1), c.mean_self_sim_final)},
                                title="contextual embeddings by layer", x_label="layer (0 = embeddings)")]
        if len(c.tokens) <= 64:
            items.append(svg.heatmap(c.token_cosine[-1], row_labels=_vis(c.tokens), col_labels=_vis(c.tokens),
                                     scale="diverging", vmin=-1.0, vmax=1.0, title="token × token cosine, last layer"))
        return _charts(*items)

    def neighbours(nb) -> str:
        rows = [[_visible(q), ", ".join(f"{_visible(t)} ({c:.2f})" for t, c in zip(toks, cos))]
                for q, toks, cos in zip(nb.query_tokens, nb.tokens, nb.cosine)]
        return _table(["token", f"{nb.k} nearest by cosine"], rows)

    def clusters(tc) -> str:
        rows = [[i, int(size), ", ".join(ex)] for i, (size, ex) in enumerate(zip(tc.clusters.sizes, tc.exemplars))]
        return (_kv([["algorithm", tc.clusters.algorithm], ["silhouette", tc.clusters.silhouette]])
                + _table(["cluster", "size", "tokens nearest the centre"], rows))

    block("token_norms", "Token-embedding norms", norms)
    block("anisotropy", "Anisotropy", aniso)
    block("norm_frequency", "Norm against frequency", freq)
    block("positions", "Position embeddings", positions)
    block("segments", "Segment embeddings", segments)
    block("contextual", "Contextual embeddings of this text", contextual)
    block("neighbours", "Nearest neighbours of tokens in this text", neighbours)
    block("clusters", "Clusters of frequent tokens", clusters)
    return "".join(parts)


def _html_attribution(report: Report, sec: Section) -> str:
    a = sec.results.get("attribution")
    if a is None:
        return ""
    rows = [["method", a.method], ["target", a.target], ["units", a.units], ["f(input)", a.f_input]]
    if a.f_baseline is not None:
        rows += [["f(baseline)", a.f_baseline], ["baseline", a.baseline_description or a.baseline],
                 ["convergence delta", a.delta], ["|delta| / |f(input) − f(baseline)|", a.relative_delta],
                 ["steps", a.steps]]
    parts = [_kv(rows)]
    if a.message:
        parts.append(f'<p class="unavailable">{_h(a.message)}</p>')
    for note in a.notes:
        parts.append(f'<p class="note">{_h(note)}</p>')
    scores = np.asarray(a.scores, dtype=float)
    parts.append(_charts(svg.bar_chart(_vis(a.tokens), scores, title="attribution per input token",
                                       y_label="score", width=_bar_width(len(scores)))))
    fin = np.abs(scores[np.isfinite(scores)])
    m = float(fin.max()) if fin.size else 1.0
    scale = "diverging" if a.scores_signed else "viridis"
    colors = [_light(svg.color_at((s / m + 1) / 2 if a.scores_signed else s / m, scale), 0.35)
              if m > 0 and np.isfinite(s) else "#ffffff" for s in scores]
    parts.append('<p class="note">Tokens coloured by score (red raises the target, blue lowers it):</p>'
                 if a.scores_signed else '<p class="note">Tokens coloured by gradient norm:</p>')
    parts.append(_tokens_html(a.tokens, a.special, colors=colors, titles=[f"#{i}: {_fmt(s)}" for i, s in
                                                                          enumerate(scores)]))
    parts.append(_table(["rank", "position", "token", "score"],
                        [[k + 1, t.index, _visible(t.token), t.score] for k, t in enumerate(a.top)]))
    return "".join(parts)


_VERDICT_STYLE = {"holds": "background:#e3f4e8", "does not hold": "background:#fbe4e4",
                  "not applicable": "background:#f0f0f0;color:#666"}


def _html_foundations(report: Report, sec: Section) -> str:
    claims = sec.results.get("claims")
    rows = _claims_rows(claims)
    if not rows:
        return _generic_html(claims)
    cols = _claim_columns(rows)
    counts: dict[str, int] = {}
    for r in rows:
        counts[str(r.get("verdict"))] = counts.get(str(r.get("verdict")), 0) + 1
    head = "".join(f"<th>{_h(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            style = f' style="{_VERDICT_STYLE[r[c]]}"' if c == "verdict" and r.get(c) in _VERDICT_STYLE else ""
            cells.append(f"<td{style}>{_h(_fmt(r.get(c)))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    summary_line = ", ".join(f"{n} {_h(v)}" for v, n in counts.items())
    return (f"<p>{len(rows)} claims of the seed articles measured on this model and text: {summary_line}.</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def _generic_html(obj) -> str:
    """Any result: its scalar fields as a table, 1-D arrays as line charts, small 2-D arrays as heat maps."""
    if obj is None:
        return ""
    if isinstance(obj, Unavailable):
        return _unavail_html(obj)
    if isinstance(obj, (list, tuple)):
        return "".join(_generic_html(x) for x in obj[:20])
    if isinstance(obj, dict):
        return "".join(f"<h3>{_h(k)}</h3>{_generic_html(v)}" for k, v in obj.items())
    if not dataclasses.is_dataclass(obj):
        return f"<p>{_h(_fmt(obj))}</p>"
    parts = []
    rows = _scalar_rows(obj, limit=80)
    if rows:
        parts.append(_kv(rows))
    charts = []
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, np.ndarray) and v.dtype.kind in "fiu" and v.size > 1:
            if v.ndim == 1 and v.size <= 4096:
                charts.append(svg.line_chart({f.name: (np.arange(v.size), v)}, title=f.name, markers=v.size <= 64))
            elif v.ndim == 2 and v.shape[0] <= 64 and v.shape[1] <= 64:
                charts.append(svg.heatmap(v.astype(float), title=f.name))
        elif dataclasses.is_dataclass(v) and not isinstance(v, type):
            parts.append(f"<h3>{_h(f.name)}</h3>" + _generic_html(v))
        elif isinstance(v, list) and v and dataclasses.is_dataclass(v[0]):
            parts.append(f"<h3>{_h(f.name)}</h3>" + "".join(_generic_html(x) for x in v[:20]))
    if charts:
        parts.append(_charts(*charts[:12]))
    return "".join(parts)


def _compare_rows(c) -> list[list]:
    """Headline figures of a ComparisonReport as (quantity, A, B) rows (shared by HTML, Markdown, JSON)."""
    rows: list[list] = []
    d = c.divergence
    if d is not None:
        rows += [["perplexity (" + d.objective + ")", d.perplexity_a, d.perplexity_b],
                 ["mean loss (nats/token)", d.mean_loss_a_nats, d.mean_loss_b_nats],
                 ["mean KL(A‖B) / KL(B‖A) (nats)", d.mean_kl_ab_nats, d.mean_kl_ba_nats],
                 ["mean Jensen–Shannon (nats)", d.mean_js_nats, None]]
    w = c.words
    if w is not None:
        rows += [["bits per byte", w.bits_per_byte_total_a, w.bits_per_byte_total_b],
                 ["total NLL (nats)", w.total_nll_a_nats, w.total_nll_b_nats]]
    a = c.attention
    if a is not None:
        rows += [[f"σ(q·k) layer {i} (mean over heads)", float(x), float(y)]
                 for i, (x, y) in enumerate(zip(a.layer_std_a, a.layer_std_b))]
    dr = c.drift
    if dr is not None:
        rows += [["parameter drift ‖B−A‖/‖A‖ (all)", dr.total_rel_change, None],
                 ["cosine of all parameters", dr.total_cosine, None],
                 ["tensors changed / compared", f"{dr.n_changed} / {len(dr.names)}", None]]
    e = c.embedding_drift
    if e is not None:
        rows += [["mean cosine of embedding rows A vs B", e.mean_cosine, None],
                 ["Spearman ρ(drift, frequency in text)", e.rho_seen, None]]
    return rows


def _html_compare(report: Report, sec: Section) -> str:
    c = sec.results.get("comparison")
    if c is None or not hasattr(c, "divergence_unavailable_reason"):
        return _generic_html(sec.result)
    parts = [_kv([["A", c.spec_a], ["B", c.spec_b], ["kinds", f"{c.kind_a} / {c.kind_b}"],
                  ["layers × heads", f"{c.n_layers_a} × {c.n_heads_a} / {c.n_layers_b} × {c.n_heads_b}"],
                  ["same tokenizer", "yes" if c.same_tokenizer else f"no: {c.tokenizer_difference}"]])]
    if c.comparable:
        parts.append("<h3>What was compared</h3><ul>" + "".join(f"<li>{_h(x)}</li>" for x in c.comparable) + "</ul>")
    if c.notes:
        parts.append("".join(f'<p class="note">{_h(n)}</p>' for n in c.notes))
    rows = _compare_rows(c)
    if rows:
        parts.append(_table(["quantity", "A", "B"], rows))

    def missing(reason):
        return _unavail_html(Unavailable(reason or "not computed"))

    d = c.divergence
    parts.append("<h3>Predictive distributions</h3>")
    if d is None:
        parts.append(missing(c.divergence_unavailable_reason))
    else:
        labels = [_visible(d.tokens[int(p)]) for p in d.positions]
        x = [int(p) for p in d.positions]
        parts.append(f'<p class="note">{_h(d.objective_label)} Identity H(A,B) = H(A) + KL(A‖B) holds to '
                     f'{_h(_fmt(d.identity_max_abs_residual))} nats.</p>')
        parts.append(_charts(
            svg.line_chart({"loss A": (x, d.loss_a_nats), "loss B": (x, d.loss_b_nats)}, x_label="position",
                           y_label="nats", title="per-token loss of A and B", markers=len(x) <= 80),
            svg.bar_chart(labels, d.js_nats, title="Jensen–Shannon divergence per token", y_label="nats",
                          width=_bar_width(len(labels)))))
        parts.append(_table(["position", "token", "JS", "KL(A‖B)", "KL(B‖A)", "loss A", "loss B", "A's top guesses",
                             "B's top guesses"],
                            [[g.position, _visible(g.token), g.js_nats, g.kl_ab_nats, g.kl_ba_nats, g.loss_a_nats,
                              g.loss_b_nats,
                              _guesses(g.top_tokens_a, g.top_probs_a), _guesses(g.top_tokens_b, g.top_probs_b)]
                             for g in d.disagreements]))
    w = c.words
    parts.append("<h3>Loss per word</h3>")
    if w is None:
        parts.append(missing(c.words_unavailable_reason))
    else:
        shown = min(len(w.words), 150)
        parts.append(_charts(svg.bar_chart(w.words[:shown], w.nll_diff_nats[:shown], width=_bar_width(shown),
                                           title="NLL of B − NLL of A per word (positive: B is more surprised)",
                                           y_label="nats")))
        order = [i for i in np.argsort(-np.abs(np.nan_to_num(w.nll_diff_nats)), kind="stable") if w.comparable[i]][:10]
        parts.append(_table(["word", "NLL A", "NLL B", "B − A", "bits/byte A", "bits/byte B"],
                            [[w.words[i], w.nll_a_nats[i], w.nll_b_nats[i], w.nll_diff_nats[i], w.bits_per_byte_a[i],
                              w.bits_per_byte_b[i]] for i in order]))
    dr = c.drift
    parts.append("<h3>Parameter drift</h3>")
    if dr is None:
        parts.append(missing(c.drift_unavailable_reason))
    else:
        layers = list(range(len(dr.layer_rel_change)))
        parts.append(_charts(
            svg.line_chart({"‖ΔΘ‖/‖Θ_A‖": (layers, dr.layer_rel_change)}, x_label="layer",
                           title="relative change per layer"),
            svg.heatmap(dr.layer_component_rel_change, row_labels=[f"layer {i}" for i in layers],
                        col_labels=list(dr.components), title="relative change per layer and component")))
        top = np.argsort(-np.nan_to_num(dr.rel_change, nan=np.inf), kind="stable")[:10]
        parts.append(_table(["parameter", "component", "shape", "‖B−A‖/‖A‖", "cosine", "max |Δ|"],
                            [[dr.names[i], dr.component[i], "×".join(str(n) for n in dr.shapes[i]),
                              dr.rel_change[i], dr.cosine[i], dr.max_abs_delta[i]] for i in top]))
    e = c.embedding_drift
    parts.append("<h3>Embedding drift</h3>")
    if e is None:
        parts.append(missing(c.embedding_drift_unavailable_reason))
    else:
        parts.append(_kv([["mean cosine of rows", e.mean_cosine], ["Spearman ρ (seen tokens)", e.rho_seen],
                          ["p", e.p_seen], ["tokens seen in the text", e.n_seen]]))
        parts.append(_table(["most drifted token", "cosine A vs B"],
                            [[_visible(t), float(v)]
                             for t, v in zip(e.most_drifted_tokens[:10], e.most_drifted_cosine[:10])]))
    a = c.attention
    parts.append("<h3>Attention scale</h3>")
    if a is None:
        parts.append(missing(c.attention_unavailable_reason))
    else:
        rl = [f"layer {i}" for i in range(a.n_layers)]
        cl = [f"h{j}" for j in range(a.n_heads)]
        parts.append(_charts(
            svg.line_chart({"A": (range(a.n_layers), a.layer_std_a), "B": (range(a.n_layers), a.layer_std_b)},
                           x_label="layer", title="σ(q·k) per layer (mean over heads)"),
            svg.heatmap(a.std_scaled_a, row_labels=rl, col_labels=cl, title="σ scaled, A"),
            svg.heatmap(a.std_scaled_b, row_labels=rl, col_labels=cl, title="σ scaled, B"),
            svg.heatmap(a.std_ratio, row_labels=rl, col_labels=cl, title="σ(B) / σ(A)")))
    return "".join(parts)


_HTML_SECTIONS: dict[str, Callable[[Report, Section], str]] = {
    "overview": _html_overview,
    "layernorm": _html_layernorm,
    "attention": _html_attention,
    "loss": _html_loss,
    "embeddings": _html_embeddings,
    "attribution": _html_attribution,
    "foundations": _html_foundations,
    "compare": _html_compare,
}


def _section_html(report: Report, name: str, sec: Section) -> str:
    title = SECTION_TITLES.get(name, name)
    head = f'<section id="sec-{_h(name)}"><h2>{_h(title)}</h2>'
    if not sec.available:
        return head + _unavail_html(sec) + "</section>"
    render = _HTML_SECTIONS.get(name)
    try:
        body = render(report, sec) if render else _generic_html(sec.result)
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
        # A result shape this writer does not know (an analysis module changed): show it generically.
        body = (f'<p class="note">Shown in the generic layout ({_h(type(exc).__name__)}: {_h(exc)}).</p>'
                + _generic_html(sec.result))
    timing = f'<p class="note">Computed in {sec.seconds:.2f} s.</p>'
    return head + body + timing + "</section>"


def to_html(report: Report) -> str:
    """One self-contained HTML file: inline CSS, SVG charts, tables; no script and no external URL."""
    model = report.model
    prov = model.get("provenance") or {}
    nav = "".join(f'<a href="#sec-{_h(n)}">{_h(SECTION_TITLES.get(n, n))}</a>' for n in report.sections)
    nav += '<a href="#sec-settings">Settings and versions</a>'
    subtitle = (f"{_h(model.get('architecture'))} · {_h(model.get('kind_label') or model.get('kind'))} · "
                f"{_h(model.get('dtype'))} on {_h(model.get('device'))}")
    if report.model_b:
        subtitle += f" — vs {_h(report.model_b.get('spec'))} ({_h(report.model_b.get('architecture'))})"
    body = "".join(_section_html(report, n, s) for n, s in report.sections.items())
    settings_rows = [[k, json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v]
                     for k, v in report.settings.items()]
    prov_rows = [["spec", prov.get("spec")], ["source", prov.get("source")],
                 ["resolved path", prov.get("resolved_path") or "–"], ["revision", prov.get("revision") or "–"],
                 ["commit / weights hash", prov.get("commit_hash") or "–"]]
    timing_rows = [[SECTION_TITLES.get(n, n), str(s) if not s.available else "ok", s.seconds]
                   for n, s in report.sections.items()]
    tail = (f'<section id="sec-settings"><h2>Provenance, settings and versions</h2>'
            f"<h3>Provenance</h3>{_kv(prov_rows)}"
            + (f"<h3>Provenance of model B</h3>{_kv(list((report.model_b.get('provenance') or {}).items()))}"
               if report.model_b else "")
            + f"<h3>Settings</h3>{_kv(settings_rows)}"
            f"<h3>Versions</h3>{_kv([[k, v or '–'] for k, v in report.versions.items()])}"
            f"<h3>Timings</h3>{_table(['section', 'status', 'seconds'], timing_rows)}</section>")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="generator" content="inspector">'
        f"<title>inspector report: {_h(report.title)}</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<header><h1>inspector report: {_h(report.title)}</h1><p>{subtitle}</p>"
        f"<p>Generated {_h(report.created_utc)} (UTC) in {report.seconds:.1f} s · inspector "
        f"{_h(report.versions.get('inspector'))} · schema {report.schema_version}</p></header>"
        f"<nav>{nav}</nav><main>{body}{tail}</main>"
        "<footer>Self-contained report: no scripts, nothing loaded from the network. "
        "The same numbers are in the JSON report.</footer>"
        "</body></html>\n"
    )


# --------------------------------------------------------------------------- writing

_WRITERS: dict[str, Callable[[Report], str]] = {"html": to_html, "json": lambda r: to_json(r, indent=1),
                                                 "md": to_markdown}


def format_for_path(path: str | os.PathLike, fmt: str | None = None) -> str:
    """The output format: `fmt` if given ("html" | "json" | "md"), else from the file suffix."""
    if fmt is not None:
        fmt = {"markdown": "md", "htm": "html"}.get(fmt.lower().lstrip("."), fmt.lower().lstrip("."))
        if fmt not in _WRITERS:
            raise ReportPathError(f"Unknown report format '{fmt}'.", "Choose html, json or md.")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ReportPathError(f"Cannot tell the report format from '{Path(path).name}'.",
                              "Name the file .html, .json or .md, or give the format explicitly (--format).")
    return FORMATS[suffix]


def render(report: Report, fmt: str) -> str:
    return _WRITERS[format_for_path("", fmt)](report)


def check_output_path(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Refuse a directory, an existing file (unless `overwrite`) or a folder that is missing or not writable.

    Called by `write_report`, and by the CLI before any work so a long run never ends in "exists".
    """
    p = Path(os.path.expanduser(str(path)))
    if str(path).strip() == "":
        raise ReportPathError("No output file given.", "Give a file name such as report.html.")
    if p.is_dir():
        raise ReportPathError(f"'{p}' is a directory.", "Give a file name inside it, such as report.html.")
    if (p.exists() or p.is_symlink()) and not overwrite:
        raise ReportPathError(f"'{p}' already exists.")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise ReportPathError(f"The folder '{parent}' does not exist.", "Create it first, or choose another path.")
    if not parent.is_dir():
        raise ReportPathError(f"'{parent}' is not a folder.", "Choose another output path.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ReportPathError(f"The folder '{parent}' is not writable.", "Choose a folder you can write to.")
    return p


def write_report(report: Report, path: str | os.PathLike, *, fmt: str | None = None,
                 overwrite: bool = False) -> Path:
    """Write `report` to `path` atomically: a temporary file in the same folder, then a rename.

    Readers never see a half-written report, and an existing file is replaced only with
    `overwrite` (otherwise `ReportPathError`). Returns the path written.
    """
    p = check_output_path(path, overwrite=overwrite)
    fmt = format_for_path(path, fmt)
    content = _WRITERS[fmt](report).encode("utf-8")
    parent = p.parent if str(p.parent) else Path(".")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _file_mode(p))
        if overwrite:
            os.replace(tmp, p)
        else:
            _link_new(tmp, p)  # fails if another writer created `p` meanwhile: never clobber it
        tmp = None
    except ReportPathError:
        raise
    except OSError as exc:
        raise ReportPathError(f"Cannot write '{p}': {exc.strerror or exc}.",
                              "Check that the folder is writable and the disk is not full.") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return p


def _link_new(tmp: str, dest: Path) -> None:
    """Move `tmp` to `dest` only if `dest` does not exist (hard link + unlink; rename where links fail)."""
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise ReportPathError(f"'{dest}' already exists.") from None
    except OSError:  # file systems without hard links
        if dest.exists():
            raise ReportPathError(f"'{dest}' already exists.") from None
        os.replace(tmp, dest)
        return
    os.unlink(tmp)


def _file_mode(dest: Path) -> int:
    """Keep the mode of a file being replaced; new files get 0644 (mkstemp's 0600 is too private)."""
    try:
        return dest.stat().st_mode & 0o777
    except OSError:
        return 0o644
