"""Compositions a page needs as one cached result, each part a library call: the Overview's facts, the
token-table and position views of Embeddings, the Foundations claims, the capture-fidelity caption, and the
Report page's build (rendered in every format inside the device queue).

Pages pass these to `_common.run` (or call them, and they call `_common.run` for each part). Kept above
pages/_common.py and calling the runner as `_common.run` / `_common._on_device`, so a test that replaces
`_common._on_device` counts the analyses run here too; `_common` re-exports every name defined here.
"""
from __future__ import annotations

import streamlit as st

from inspector import models
from inspector.errors import NotAvailableError
from pages import _common


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


def overview_facts(lm: models.LoadedModel) -> dict:
    """Plain facts for the Overview page."""
    return {"describe": lm.describe(), "parameters": _parameter_groups(lm.model), "capture": _capture_points(lm)}


# --------------------------------------------------------------------------- embeddings


def corpus_counts(lm: models.LoadedModel):
    from inspector.analyses import embeddings

    return _common.run(embeddings.token_counts, lm)


def token_table(lm: models.LoadedModel) -> dict:
    """Norms, anisotropy, norm-vs-frequency of the token table (text independent)."""
    from inspector.analyses import embeddings

    return {"norms": _common.run(embeddings.token_norms, lm),
            "anisotropy": _common.run(embeddings.token_anisotropy, lm),
            "norm_frequency": _common.run(embeddings.norm_frequency_correlation, lm, counts=corpus_counts(lm))}


def token_map(lm: models.LoadedModel, n_tokens: int, n_clusters: int, method: str):
    from inspector.analyses import embeddings

    counts = corpus_counts(lm)
    proj = _common.run(embeddings.project_tokens, lm, method=method, n_tokens=n_tokens, counts=counts)
    clusters = _common.run(embeddings.cluster_tokens, lm, n_clusters, n_tokens=n_tokens, counts=counts)
    return proj, clusters


def position_tables(lm: models.LoadedModel) -> dict:
    """Position and segment tables; a message string where the model has none (shown as st.info)."""
    from inspector.analyses import embeddings

    out = {}
    for name, fn in (("positions", embeddings.position_embeddings), ("segments", embeddings.segment_embeddings)):
        try:
            out[name] = _common.run(fn, lm)
        except NotAvailableError as exc:
            out[name] = exc.user_message()
    return out


# --------------------------------------------------------------------------- foundations


def corpus_text() -> str | None:
    """The bundled training corpus (token frequencies, co-occurrences), or None when it is absent."""
    from inspector.analyses import embeddings

    path = embeddings.DEFAULT_CORPUS
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None


def claims(lm: models.LoadedModel, text: str, use_corpus: bool):
    from inspector.analyses import foundations

    return _common.run(foundations.claims_on_model, lm, text, corpus_text() if use_corpus else None)


# --------------------------------------------------------------------------- capture fidelity


def show_fidelity(ctx: _common.PageContext) -> None:
    """The capture's fidelity on this text: max |Δ| between the instrumented and a plain forward."""
    with _common.guard("the capture fidelity check"):
        from inspector.analyses import attention

        rep = _common.run_on_text(attention.attention_logit_report, ctx.lm, ctx.text, ctx.text_pair)
        st.caption(f"Capture fidelity on this text: max |Δ {rep.fidelity_quantity}| between the instrumented and "
                   f"a plain forward = **{rep.fidelity_max_abs_diff:.3g}** ({rep.dtype}); 0 means the "
                   "measurement did not change the model's output.")


# --------------------------------------------------------------------------- report


def report_request(ctx: _common.PageContext, sections, settings: dict) -> tuple:
    """What a built report depends on (plain strings): a stored report is shown only for the same request."""
    return (_common.model_key(ctx.lm), ctx.text, ctx.text_pair or "", tuple(sections),
            tuple(sorted(settings.items())))


def build_report(lm: models.LoadedModel, text: str, text_pair: str | None, sections, settings: dict, progress=None,
                 compare_with=None, masking: str | None = None) -> dict:
    """Build a report once (inside the device queue) and render it in every format, as plain strings.

    With `compare_with` = (model A, model B) the report gains the Compare section of
    `python -m inspector compare` (A → B, e.g. initialisation → final)."""
    import re

    from inspector import report

    rep = _common._on_device(lm, report.build_report, lm, text, sections=list(sections), settings=settings,
                             progress=progress, text_pair=text_pair)
    if compare_with is not None:
        lm_a, lm_b = compare_with
        kwargs = {"masking": masking} if masking else {}
        cmp = _common._on_device(lm_a, report.build_comparison_report, lm_a, lm_b, text, settings=settings,
                                 text_pair=text_pair, **kwargs)
        rep.sections["compare"] = cmp.sections["compare"]
        rep.model_b = cmp.model_b
        rep.seconds = round(rep.seconds + cmp.seconds, 3)
    rows = [{"section": report.SECTION_TITLES.get(name, name), "status": sec.status, "note": sec.reason,
             "seconds": sec.seconds} for name, sec in rep.sections.items()]
    stem = "inspector-report-" + (re.sub(r"[^A-Za-z0-9._-]+", "-", rep.title).strip("-.")[:80] or "model")
    return {"html": report.render(rep, "html"), "json": report.render(rep, "json"), "md": report.render(rep, "md"),
            "sections": rows, "seconds": rep.seconds, "title": rep.title, "file_stem": stem}
