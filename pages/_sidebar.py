"""What the user chose: the shared sidebar (model, device, dtype, text, second sentence, text B), the
`PageContext` it hands to the page app.py runs, the page header, and the second model of the Compare page.

It sits above pages/_common.py (the model cache and the runner) and reaches every shared helper as
`_common.<name>`, so a test that patches `_common.bundled_choices` or `_common.load_model` reaches the
sidebar too; `_common` re-exports every name defined here.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from inspector import models
from pages import _common

REPO = Path(__file__).resolve().parents[1]
SAMPLES_DIR = REPO / "data" / "samples"
# The first sample is the default text: held-out Python-docs prose, which both default models are good at
# (SmolLM2 perplexity 27.8; gpt2-mini ≈ 160 there against ≈ 1 000 on general English, which gets an
# out-of-domain warning on the mini model instead).
SAMPLE_LABELS = {"python_docs": "Python docs prose (held out, in-domain for the mini models)",
                 "english": "English prose", "python_code": "Python code", "vietnamese": "Vietnamese"}
CUSTOM_TEXT = "Your own text"
OTHER_MODEL = "__other__"
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")

# Session-state keys of the shared sidebar (plain strings only: never a model or a tensor).
K_MODEL, K_CUSTOM, K_CKPT, K_DEVICE, K_DTYPE = "model_choice", "model_custom", "model_checkpoint", "device", "dtype"
K_SAMPLE, K_TEXT, K_PAIR = "sample", "text", "text_pair"
K_TEXT_B_ON, K_TEXT_B = "text_b_on", "text_b"  # a second text shown beside the first (pages/_second_text.py)
K_LOAD_ERROR = "_model_load_error"


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
        return _common.model_key(self.lm)

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
    choices = _common.bundled_choices()
    default = _common.default_model_spec()
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
            with _common.guard(f"loading '{spec}'") as g:
                lm = _common.load_model(spec, device, dtype)
            if g.failed:  # the page repeats it in the main area (page_context)
                st.session_state[K_LOAD_ERROR] = _common.error_message(g.error, f"loading '{spec}'")
            if lm is not None:
                d = lm.describe()
                st.caption(f"{d['architecture']} · {d['kind_label']} · "
                           f"{_common.format_count(d['n_parameters'])} parameters · {d['device']} · {d['dtype']}")

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


# --------------------------------------------------------------------------- model B of the Compare page


def comparison_specs() -> list[str]:
    """Every bundled model and checkpoint as a spec (default checkpoint without @)."""
    out = []
    for c in _common.bundled_choices():
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
    choice = next((c for c in _common.bundled_choices() if c.name == name), None)
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
