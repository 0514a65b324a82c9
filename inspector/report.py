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
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from . import analysis as _contract
from .analysis import Unavailable
from .errors import InputError, InspectorError, NotAvailableError

if TYPE_CHECKING:  # pragma: no cover
    from .inputs import Encoded
    from .models import LoadedModel

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
    # token × token cosines of every layer, (L + 1) × T × T values, kept only up to this many tokens
    # (12 layers × 1 024 tokens would be 13 M numbers); the HTML report draws the last layer up to 64
    "embeddings_cosine_max_tokens": 128,
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
    for name, a in _CONTRACT.items():  # a registered analysis checks its own settings' ranges now
        a.settings_from({f.name: merged[_contract.settings_key(a, f)] for f in dataclasses.fields(a.Settings)})
    try:  # what is stored must survive JSON unchanged (tuples become lists here, not later)
        return json.loads(json.dumps(merged))
    except (TypeError, ValueError) as exc:
        raise InputError(f"Report settings must be plain numbers, strings and lists: {exc}.") from None


# --------------------------------------------------------------------------- section runners
#
# Each runner returns {part name: result}. The sections of analyses are run by their Analysis (inspector.analysis:
# `run`, its parts made with `part(fn)`); the report itself only adds the overview and the two-model comparison.


def _analysis(name: str):
    """Import inspector.analyses.<name>; ModuleNotFoundError (named) when this installation lacks it."""
    return importlib.import_module(f"inspector.analyses.{name}")


def _run_overview(lm: LoadedModel, enc: Encoded, settings: dict, ctx: dict) -> dict:
    return {"overview": Overview(
        n_characters=ctx.get("n_characters_given", len(enc.text)),  # as given, before any cut
        n_tokens=enc.n_tokens,
        tokens=list(enc.tokens),
        token_ids=enc.input_ids[0].cpu().numpy().astype(np.int64),
        special=np.asarray(enc.special, dtype=bool),
        truncated=bool(enc.truncated),
        text_pair=enc.text_pair,
    )}


_RUNNERS: dict[str, Callable] = {"overview": _run_overview}
# Analyses written on the contract (inspector.analysis): each is a section of its own, its settings
# are report settings named "<analysis>_<field>", its view is rendered by the generic block writers.
_CONTRACT = _contract.registry()
CORE_SECTIONS = SECTIONS
SECTIONS = CORE_SECTIONS + tuple(n for n in _CONTRACT if n not in CORE_SECTIONS)
for _a in _CONTRACT.values():
    SECTION_TITLES.setdefault(_a.name, _a.title)
    for _f in dataclasses.fields(_a.Settings):
        DEFAULT_SETTINGS.setdefault(_contract.settings_key(_a, _f), _f.default)


def _contract_runner(name: str) -> Callable:
    analysis = _CONTRACT[name]
    keys = {f.name: _contract.settings_key(analysis, f) for f in dataclasses.fields(analysis.Settings)}

    def run(lm: LoadedModel, enc, settings, ctx) -> dict:
        ok, reason = analysis.available(lm)
        if not ok:
            raise NotAvailableError(reason)
        values = {k: settings[key] for k, key in keys.items()}
        return analysis.to_parts(analysis.run(lm, enc, analysis.settings_from(values)))
    return run


def contract_view(name: str, sec: Section) -> list:
    """The declared view of a section written on the contract (its result rebuilt from the section's parts)."""
    analysis = _CONTRACT[name]
    return analysis.view(analysis.from_parts(sec.results))


_RUNNERS.update({name: _contract_runner(name) for name in _CONTRACT})
_MODULE_OF = {"compare": "inspector.analyses.compare"}
_MODULE_OF.update({name: module for name, module, _ in _contract._entries()})


def _missing_runner(module: str) -> Callable:
    def run(lm, enc, settings, ctx) -> dict:
        raise ModuleNotFoundError(f"No module named '{module}'", name=module)
    return run


# A registered analysis whose module this installation lacks: its section is unavailable, with the reason.
for _name, _module in _contract.missing().items():
    _RUNNERS[_name] = _missing_runner(_module)
    SECTIONS += (_name,) if _name not in SECTIONS else ()


def _run_section(name: str, runner: Callable[[], dict], strict: bool) -> Section:
    t0 = time.perf_counter()
    try:
        results = runner()
        status, reason = "ok", ""
    except NotAvailableError as exc:
        results, status, reason = {}, "unavailable", exc.message
    except ModuleNotFoundError as exc:
        module = _MODULE_OF.get(name, f"inspector.analyses.{name}")
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


def analysed_part(enc: Encoded) -> tuple[Encoded, int]:
    """`enc` with its text (and second sentence) cut where the kept tokens end, when it was truncated.

    Every section then analyses the same tokens: a 100 000-character text costs what its first
    context-length of tokens costs (the loss is not scored beyond them). Also returns the number of
    characters of the text as given.
    """
    given = len(enc.text)
    if not enc.truncated:
        return enc, given
    segment = (enc.token_type_ids[0].tolist() if enc.token_type_ids is not None and enc.text_pair
               else [0] * enc.n_tokens)
    ends = {0: 0, 1: 0}
    for (start, end), special, seg in zip(enc.offsets, enc.special, segment):
        if not special and end > start:
            ends[int(seg) if seg in (0, 1) else 0] = max(ends[int(seg) if seg in (0, 1) else 0], int(end))
    pair = enc.text_pair[:ends[1]] if enc.text_pair and ends[1] > 0 else enc.text_pair
    return dataclasses.replace(enc, text=enc.text[:ends[0]] if ends[0] > 0 else enc.text, text_pair=pair), given


def build_report(lm: LoadedModel, text: str, *, sections: Iterable[str] = SECTIONS, settings: dict | None = None,
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
    given_enc = encode(lm, text, text_pair, max_tokens=used["max_tokens"], truncate=True)
    enc, given = analysed_part(given_enc)  # the report keeps the text as given; the sections see the kept part
    ctx: dict[str, Any] = {"n_characters_given": given}
    out: dict[str, Section] = {}
    for i, name in enumerate(names):
        if progress is not None:
            progress(name, i / len(names))
        out[name] = _run_section(name, lambda n=name: _RUNNERS[n](lm, enc, used, ctx), strict)
    if progress is not None:
        progress("done", 1.0)
    return Report(
        schema_version=SCHEMA_VERSION, kind="model", created_utc=_now_utc(), text=given_enc.text,
        text_pair=given_enc.text_pair, model=lm.describe(), settings=used, versions=library_versions(),
        sections=out, seconds=round(time.perf_counter() - t_start, 3))


def build_comparison_report(lm_a: LoadedModel, lm_b: LoadedModel, text: str, *, settings: dict | None = None,
                            progress: Callable[[str, float], None] | None = None, text_pair: str | None = None,
                            strict: bool = False, **compare_kwargs) -> Report:
    """Compare two models (two checkpoints of one architecture, or two architectures) on one text.

    The comparison itself is `inspector.analyses.compare.compare_models`; extra keyword arguments
    go to it. The report also carries an overview of the text under model A.
    """
    from .inputs import encode

    t_start = time.perf_counter()
    used = _settings(settings)
    given_enc = encode(lm_a, text, text_pair, max_tokens=used["max_tokens"], truncate=True)
    enc, given = analysed_part(given_enc)  # the report keeps the text as given; the sections see the kept part
    steps = [("overview", lambda: _run_overview(lm_a, enc, used, {"n_characters_given": given})),
             ("compare", lambda: _run_compare(lm_a, lm_b, enc, compare_kwargs))]
    out: dict[str, Section] = {}
    for i, (name, fn) in enumerate(steps):
        if progress is not None:
            progress(name, i / len(steps))
        out[name] = _run_section(name, fn, strict)
    if progress is not None:
        progress("done", 1.0)
    return Report(
        schema_version=SCHEMA_VERSION, kind="comparison", created_utc=_now_utc(), text=given_enc.text,
        text_pair=given_enc.text_pair, model=lm_a.describe(), model_b=lm_b.describe(), settings=used,
        versions=library_versions(), sections=out, seconds=round(time.perf_counter() - t_start, 3))


def _run_compare(lm_a, lm_b, enc, kwargs) -> dict:
    compare = _analysis("compare")

    return {"comparison": compare.compare_models(lm_a, lm_b, enc.text, **kwargs)}


# --------------------------------------------------------------------------- writers (report_markdown.py, report_html.py)

# The writers import this module; it imports them only when called, so either side may be imported first.
_WRITER_MODULES = {"to_html": "report_html", "blocks_html": "report_html", "_visible": "report_html",
                   "to_markdown": "report_markdown", "summary": "report_markdown", "blocks_markdown": "report_markdown",
                   "blocks_text": "report_markdown", "_fmt": "report_markdown"}


def __getattr__(name: str):
    module = _WRITER_MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'inspector.report' has no attribute '{name}'")
    return getattr(importlib.import_module(f"inspector.{module}"), name)


def to_html(report: Report) -> str:
    """One self-contained HTML file (see inspector/report_html.py)."""
    from .report_html import to_html as write

    return write(report)


def to_markdown(report: Report) -> str:
    """Summary tables in Markdown (see inspector/report_markdown.py)."""
    from .report_markdown import to_markdown as write

    return write(report)


def summary(report: Report) -> dict:
    """The derived figures every writer shows (stored in the JSON too)."""
    from .report_markdown import summary as derive

    return derive(report)


# JSON and files live in their own modules; they need the names above, so they are imported last.
from .report_json import _type_name, report_from_json, reports_equal, to_json  # noqa: E402, F401
from .report_files import check_output_path, format_for_path, render, write_report  # noqa: E402
