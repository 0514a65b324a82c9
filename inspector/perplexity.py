"""One way to name and print every perplexity the app, the CLI reports and the HTML/Markdown reports show.

Several perplexities are all useful and differ on the same text (a causal LM scored without or with
<|endoftext|> before the text; a masked LM with a seeded 15 % masking or with every token masked in
turn), so a number never appears without its method and the count of tokens it averages over:
`label(result)` / `text(result)` give the same words on Token loss, Compare and in the report.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .models import LoadedModel

__all__ = ["parts", "label", "value", "text", "describe", "reference", "out_of_domain_note"]


def parts(res, side: str = "a") -> tuple[str, int, float]:
    """(method words, tokens averaged over, perplexity) of a loss or comparison result."""
    kind = type(res).__name__
    if kind == "CausalLossReport":
        return "next token, first token unscored", int(res.n_scored), float(res.perplexity)
    if kind == "MaskedLossReport":
        return f"MLM, seeded 15 % masked, seed {res.seed}", int(res.n_chosen), float(res.perplexity)
    if kind == "PLLReport":
        return "pseudo, each token masked in turn", int(res.n_tokens), float(res.pseudo_perplexity)
    if kind == "TokenDivergence":
        ppl = float(res.perplexity_a if side == "a" else res.perplexity_b)
        if res.objective == "next-token":
            if res.prefix_token:
                return f"next token after {res.prefix_token}, every token scored", int(res.n_positions), ppl
            return "next token, first token unscored", int(res.n_positions), ppl
        if res.masking == "each":
            return "pseudo, each token masked in turn", int(res.n_positions), ppl
        return f"MLM, seeded 15 % masked, seed {res.seed}", int(res.n_positions), ppl
    raise TypeError(f"no perplexity in a {kind}")


def label(res, side: str = "a", prefix: str = "Perplexity") -> str:
    """'Perplexity (next token, first token unscored; 103 tokens)': the method and the token count."""
    words, n, _ = parts(res, side)
    return f"{prefix} ({words}; {n:,} tokens)"


def value(v: float) -> str:
    """A perplexity printed the same way everywhere."""
    v = float(v)
    if not math.isfinite(v):
        return "—"
    return f"{v:,.6g}"  # six significant digits, thousands separated: 1,058.97 · 412.346 · 8.1e+06


def text(res, side: str = "a", prefix: str = "Perplexity") -> str:
    """'Perplexity (…; 103 tokens) = 1,059.13'."""
    return f"{label(res, side, prefix)} = {value(parts(res, side)[2])}"


def describe(res, side: str = "a") -> str:
    """The definition in words, for a tooltip."""
    words, n, _ = parts(res, side)
    if words.startswith("next token"):
        return (f"exp(mean −log P(token | the tokens before it)) over {n} tokens"
                + (f"; {words.split(', ')[0].removeprefix('next token ')} is put before the text so the first "
                   "token is predicted too" if "after" in words else "; the first token has no context"))
    if words.startswith("pseudo"):
        return f"exp(−mean log P(token | the text with that token masked)) over {n} tokens, each masked in turn"
    return f"exp(mean cross-entropy) at {n} positions chosen by BERT's 15 % masking (80 % [MASK], 10 % random, 10 % kept)"


def reference(lm: LoadedModel) -> tuple[float, str] | None:
    """(validation perplexity, what it is) of a bundled checkpoint, from the training.json beside it.

    Causal LMs: next-token perplexity on the held-out corpus; BERT: exp(MLM loss) on the fixed
    validation pairs (BERT's 15 % masking). None for a model trained elsewhere.
    """
    import json
    from pathlib import Path

    prov = getattr(lm, "provenance", None)
    if prov is None or prov.source != "bundled" or not prov.resolved_path:
        return None
    folder = Path(prov.resolved_path)
    record = folder.parent / "training.json"
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
        entry = data["checkpoints"][folder.name]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if "valid_perplexity" in entry:
        return float(entry["valid_perplexity"]), f"validation perplexity of this checkpoint ({folder.name})"
    if "mlm_loss" in entry:
        return (float(math.exp(entry["mlm_loss"])),
                f"validation MLM perplexity of this checkpoint ({folder.name}, 15 % masking)")
    return None


def out_of_domain_note(lm: LoadedModel, res, factor: float = 3.0) -> str | None:
    """A warning when the text's perplexity is above `factor` × the model's own validation perplexity."""
    ref = reference(lm)
    if ref is None:
        return None
    words, _, ppl = parts(res)
    if words.startswith("pseudo"):
        return None  # the validation figure is a seeded-masking MLM perplexity: not the same quantity
    ref_ppl, what = ref
    if not (math.isfinite(ppl) and ppl > factor * ref_ppl):
        return None
    return (f"This text is far from what the model was trained on: its perplexity {value(ppl)} is "
            f"{ppl / ref_ppl:.1f} × the {what}, {value(ref_ppl)}. The figures below describe a model out of its "
            "domain; the bundled models were trained on Python documentation prose (sample 'Python docs prose').")
