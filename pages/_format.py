"""How results look on a page: number formats, table rows and readable column headings, token labels for
pickers, parsed text inputs, and the standard notes (truncated text, encoder-only model, perplexity).

Pure display helpers: nothing here loads a model or runs an analysis, so this module needs neither the
model cache nor the runner of pages/_common.py, which re-exports every name (`_common.format_count`, ...).
"""
from __future__ import annotations

import html

import streamlit as st

from inspector import models
from inspector.escaping import md_literal


# --------------------------------------------------------------------------- numbers and text


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


# --------------------------------------------------------------------------- table rows and headings


def key_value_rows(d: dict) -> list[dict]:
    """A dict as two-column rows for st.dataframe (values as text, None as an em dash)."""
    return [{"field": str(k), "value": "—" if v is None else str(v)} for k, v in d.items()]


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


def top_predictions(tokens_row, probs_row, n: int = 3) -> str:
    """'tok (p), tok (p)' for a table cell (plain text: st.dataframe does not render HTML)."""
    return ", ".join(f"{t!r} ({p:.2f})" for t, p in list(zip(tokens_row, probs_row))[:n])


def per_token(n: int, positions, values) -> list[float | None]:
    """Align values given at `positions` to n tokens (None where a token has no value)."""
    out: list[float | None] = [None] * n
    for p, v in zip(positions, values):
        out[int(p)] = float(v)
    return out


def head_stats_line(rep, layer: int, head: int) -> str:
    """The selected head's statistics in one line (from the layer × head report)."""
    return (f"**Layer {layer}, head {head}**: σ(q·k) = {rep.std[layer, head]:.3g} "
            f"(σ/√d_head = {rep.ratio[layer, head]:.2f}), entropy / log n = {rep.entropy_fraction[layer, head]:.3f}, "
            f"mean max probability = {rep.max_prob[layer, head]:.3f}, largest scaled logit = "
            f"{rep.max_scaled[layer, head]:.3g}")


def claims_rows(rows) -> list[dict]:
    """ClaimRow results as table rows (verdict first, for sorting)."""
    return [{"verdict": r.verdict, "claim": r.claim, "measured on this model": r.measured,
             "rule for the verdict": r.threshold, "note": r.note} for r in rows]


TEMPERATURE_OPTIONS = [0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 7.07, 10.0, 20.0, 50.0]


# --------------------------------------------------------------------------- tokens to pick


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


def text_token_options(enc, limit: int = 40) -> dict[int, str]:
    """id -> readable label of the distinct ordinary tokens of an encoded text (first `limit`)."""
    out: dict[int, str] = {}
    for tid, tok, special in zip(enc.input_ids[0].tolist(), enc.tokens, enc.special):
        if not special and tid not in out:
            out[int(tid)] = repr(tok)
        if len(out) >= limit:
            break
    return out


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


# --------------------------------------------------------------------------- parsed inputs


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


def parse_numbers(raw: str) -> tuple[float, ...]:
    """'0.2, 0.5 0.3' -> (0.2, 0.5, 0.3); a readable InputError otherwise."""
    from inspector.errors import InputError

    parts = [p for p in raw.replace(",", " ").split() if p]
    try:
        return tuple(float(p) for p in parts)
    except ValueError:
        raise InputError(f"'{raw}' is not a list of numbers.",
                         "Write numbers separated by commas, e.g. 0.2, 0.5, 0.3.") from None


# --------------------------------------------------------------------------- standard notes


def truncation_note(encoded) -> None:
    if getattr(encoded, "truncated", False):
        st.warning(f"The text was cut to the model's context ({encoded.n_tokens} tokens); "
                   "only that part is analysed.")


def encoder_only_note(lm: models.LoadedModel, what: str) -> bool:
    """Show the standard note and return True when `lm` has no language-model head."""
    if lm.is_causal or lm.has_mlm_head:
        return False
    st.info(f"{what} is not available for an encoder-only model: {lm.architecture} ({md_literal(lm.spec)}) has no "
            "language-model head. Pick bundled:gpt2-mini (causal LM) or a BERT checkpoint saved with its "
            "masked-LM head in the sidebar.")
    return True


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
