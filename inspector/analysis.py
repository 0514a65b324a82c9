"""The contract every analysis follows, the blocks its view is made of, and the registry.

An analysis is a small class (one per module under `inspector/analyses/`) that declares:

- `name` (stable id: report section, JSON key, CLI section name), `title`, `description`;
- `Settings`: a frozen dataclass; each field has a default and, in its metadata, `help` and
  optionally `min` / `max` / `choices` (the app draws a widget per field, the report stores them);
- `available(lm) -> (bool, reason)`: whether it applies to a model, and why not;
- `run(lm, encoded, settings) -> result`: a frozen dataclass of numpy arrays and plain values
  (no model, tensor or device reference: results are cached, copied and written to JSON);
- `view(result) -> list[Block]`: what to show, as declared blocks (Heading, Metric, Table, Chart,
  ColouredTokens, Note).

An analysis whose report section has several parts (LayerNorm: the parameters and what the norm
layers do to the text) sets `report_parts = True` and `result_type`: its result is a frozen
dataclass whose fields are the parts (a part that does not apply is an `Unavailable`, one not
computed is None), stored in the report as the section's parts (`part(fn)` builds one).

The app (`pages/_common.render_blocks`), the HTML / Markdown reports (`inspector/report.py`) and
the CLI (through the report) render those blocks generically; a chart is declared once and drawn
by Plotly in the app (`plots.chart_figure`) and by the dependency-free SVG writer in reports
(`svg_charts.chart_svg`), both with the same palette and titles.

Adding an analysis = its module + its test + one line in `REGISTERED` below.
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Sequence, Union

if TYPE_CHECKING:  # pragma: no cover
    from .inputs import Encoded
    from .models import LoadedModel

# One line per analysis written on the contract: "name=module:Class" (name = its report section).
REGISTERED: tuple[str, ...] = (
    "logit_lens=inspector.analyses.logit_lens:LogitLens",
    "decoder_signals=inspector.analyses.decoder_signals:DecoderSignalsAnalysis",
    "attention=inspector.analyses.attention:AttentionAnalysis",
    "attribution=inspector.analyses.attribution:AttributionAnalysis",
    "embeddings=inspector.analyses.embeddings:EmbeddingsAnalysis",
    "layernorm=inspector.analyses.layernorm:LayerNormAnalysis",
    "foundations=inspector.analyses.foundations:FoundationsAnalysis",
    "loss=inspector.analyses.loss_view:LossAnalysis",
)


# --------------------------------------------------------------------------- blocks


@dataclass
class Unavailable:
    """A section (or part of one) that was not computed, and why."""

    reason: str
    status: str = "unavailable"  # "unavailable" (does not apply / not installed) | "failed" (an error)

    def __str__(self) -> str:
        return f"{'not available' if self.status == 'unavailable' else 'failed'}: {self.reason}"


def part(fn):
    """fn(), or an `Unavailable` when that part does not apply (NotAvailableError): the other parts still run."""
    from .errors import NotAvailableError

    try:
        return fn()
    except NotAvailableError as exc:
        return Unavailable(exc.message)


@dataclass(frozen=True)
class Heading:
    """A sub-heading inside a view (one per part of a section)."""

    text: str


@dataclass(frozen=True)
class Metric:
    """One headline number (or short text) with a label and an optional explanation.

    Consecutive metrics form one group (a row of metrics in the app, a two-column table in reports).
    """

    label: str
    value: float | int | str | None
    help: str = ""
    digits: int = 4

    def formatted(self) -> str:
        v = self.value
        if v is None:
            return "—"
        if isinstance(v, bool) or isinstance(v, str):
            return str(v)
        if isinstance(v, int):
            return f"{v:,}"
        return f"{float(v):.{self.digits}g}"


@dataclass(frozen=True)
class Table:
    """Rows of plain values under named columns."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple, ...]
    note: str = ""
    verdict_column: str = ""  # a column whose cells ("holds", "does not hold", ...) are coloured by value


@dataclass(frozen=True)
class Chart:
    """A chart declared once; `plots.chart_figure` (app) and `svg_charts.chart_svg` (reports) draw it.

    kind "line": `series` = ((name, x values, y values), ...); kind "bar": one series, x = labels;
    kind "histogram": one series (name, bin edges, counts), len(edges) = len(counts) + 1;
    kind "heatmap": `z` (rows × columns) with `row_labels` / `col_labels`. `log_y` draws a log
    axis ticked at powers of ten (1, 10, 100, ...). `signed` heatmaps (differences) use a diverging
    scale centred on zero. `reference` is a dashed horizontal line (line, bar), `markers` labelled
    vertical lines at x values (histogram), `points` whether a line chart marks its points.
    """

    kind: str
    title: str
    x_title: str = ""
    y_title: str = ""
    series: tuple[tuple[str, tuple, tuple], ...] = ()
    z: tuple[tuple[float, ...], ...] = ()
    row_labels: tuple[str, ...] = ()
    col_labels: tuple[str, ...] = ()
    colorbar_title: str = ""
    log_y: bool = False
    zmin: float | None = None
    zmax: float | None = None
    signed: bool = False  # heatmap of differences: a diverging scale centred on 0
    reference: float | None = None
    reference_label: str = ""
    markers: tuple[tuple[str, float], ...] = ()
    points: bool = True
    width: int | None = None  # reports: a wider chart for one bar per token

    def __post_init__(self):
        if self.kind not in ("line", "bar", "histogram", "heatmap"):
            raise ValueError(f"unknown chart kind {self.kind!r}")


@dataclass(frozen=True)
class ColouredTokens:
    """The text's tokens, each coloured by a value (None: not scored)."""

    tokens: tuple[str, ...]
    values: tuple[float | None, ...]
    value_name: str
    signed: bool = False
    special: tuple[bool, ...] = ()
    caption: str = ""  # what the colours mean, shown above the tokens


@dataclass(frozen=True)
class Note:
    """A sentence of explanation (level "info" or "warning" is shown more prominently)."""

    text: str
    level: str = "caption"


Block = Union[Heading, Metric, Table, Chart, ColouredTokens, Note]


def unavailable_note(what: Unavailable) -> Note:
    """The block a view shows for a part that was not computed."""
    return Note(str(what), level="warning")


# --------------------------------------------------------------------------- the contract


def setting(default: Any, help: str, *, min: float | None = None, max: float | None = None,
            choices: Sequence | None = None, key: str | None = None):
    """A settings-dataclass field with its help text and range (read by the app's widgets).

    `key` is its name among the report settings (`--set key=value`) when that is not "<analysis>_<field>"
    (report settings older than the contract keep their names)."""
    meta = {"help": help, "min": min, "max": max, "choices": tuple(choices) if choices is not None else None,
            "key": key}
    return field(default=default, metadata=meta)


def settings_key(analysis: "Analysis", f: dataclasses.Field) -> str:
    """The report-settings name of one settings field."""
    return f.metadata.get("key") or f"{analysis.name}_{f.name}"


class Analysis:
    """Base class of an analysis written on the contract (see the module docstring)."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    own_page: ClassVar[str] = ""  # the app page that draws it (else the "Layer by layer" page lists it)
    report_parts: ClassVar[bool] = False  # the result's fields are the report section's parts
    result_type: ClassVar[type | None] = None  # the result dataclass, when report_parts

    @dataclass(frozen=True)
    class Settings:
        pass

    def available(self, lm: LoadedModel) -> tuple[bool, str]:
        return True, ""

    def run(self, lm: LoadedModel, encoded: Encoded, settings) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def view(self, result) -> list[Block]:  # pragma: no cover - abstract
        raise NotImplementedError

    # helpers shared by every renderer

    def to_parts(self, result) -> dict:
        """{part: value} stored in a report section: the result's fields (None = not computed, left out)."""
        if not self.report_parts:
            return {"result": result}
        return {f.name: getattr(result, f.name) for f in dataclasses.fields(result)
                if getattr(result, f.name) is not None}

    def from_parts(self, parts: dict):
        """The result a view reads, from a report section's parts (as stored, or loaded from JSON)."""
        if not self.report_parts:
            return parts.get("result") if len(parts) != 1 else next(iter(parts.values()))
        return self.result_type(**{f.name: parts.get(f.name) for f in dataclasses.fields(self.result_type)})

    def settings_from(self, values: dict | None = None):
        """A Settings instance from {field: value} (unknown fields are an InputError, ranges checked)."""
        from .errors import InputError

        values = dict(values or {})
        fields = {f.name: f for f in dataclasses.fields(self.Settings)}
        bad = sorted(set(values) - set(fields))
        if bad:
            raise InputError(f"Unknown setting(s) of {self.title}: {', '.join(bad)}.",
                             f"Known: {', '.join(fields) or 'none'}.")
        for key, value in values.items():
            meta = fields[key].metadata
            lo, hi, choices = meta.get("min"), meta.get("max"), meta.get("choices")
            if choices is not None and value not in choices:
                raise InputError(f"{self.title}: {key} must be one of {', '.join(map(str, choices))}.")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if (lo is not None and value < lo) or (hi is not None and value > hi):
                    raise InputError(f"{self.title}: {key} = {value} is outside [{lo}, {hi}].")
        return self.Settings(**values)


def settings_fields(analysis: Analysis) -> list[dataclasses.Field]:
    return list(dataclasses.fields(analysis.Settings))


def _entries() -> list[tuple[str, str, str]]:
    out = []
    for entry in REGISTERED:
        name, _, target = entry.partition("=")
        module, _, cls = target.partition(":")
        out.append((name.strip(), module.strip(), cls.strip()))
    return out


def registry() -> dict[str, Analysis]:
    """name -> instance of every registered analysis this installation has, in registration order.

    An analysis whose own module is not installed is left out (`missing()` names it, and a report shows its
    section as unavailable); a module that is there but fails to import (a missing dependency) raises."""
    out: dict[str, Analysis] = {}
    for name, module, cls in _entries():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        analysis = getattr(mod, cls)()
        if analysis.name != name:
            raise ValueError(f"REGISTERED says {name!r} for {module}:{cls}, whose name is {analysis.name!r}")
        out[name] = analysis
    return out


def missing() -> dict[str, str]:
    """name -> module of the registered analyses whose module this installation lacks."""
    import importlib.util

    out = {}
    for name, module, _ in _entries():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package missing, or sys.modules[module] = None
            found = False
        if not found:
            out[name] = module
    return out


def get(name: str) -> Analysis:
    from .errors import InputError

    found = registry().get(name)
    if found is None:
        raise InputError(f"Unknown analysis '{name}'.", f"Known: {', '.join(registry())}.")
    return found


def run_analysis(name: str, lm: LoadedModel, encoded: Encoded, settings: dict | None = None):
    """Check availability, build the settings and run one registered analysis."""
    from .errors import NotAvailableError

    analysis = get(name)
    ok, reason = analysis.available(lm)
    if not ok:
        raise NotAvailableError(reason)
    return analysis.run(lm, encoded, analysis.settings_from(settings))
