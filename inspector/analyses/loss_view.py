"""The Loss report section on the contract: which loss parts run for a model, and what they show.

A causal LM gets its per-token next-token loss; a masked LM its seeded 15 % MLM loss, the
pseudo-log-likelihood (texts up to `pll_max_tokens`) and, for a sentence pair on a checkpoint
with an NSP head, next-sentence prediction. Both get the logit-gradient check at one position.
The computations are `analyses.loss`; this module only chooses the parts and declares the view
(metrics, the per-token loss chart and histogram, tokens coloured by loss, the tables).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .. import perplexity
from ..analysis import (Analysis, Chart, ColouredTokens, Heading, Metric, Note, Table, Unavailable, part, setting,
                        unavailable_note)
from ..errors import NotAvailableError
from ..svg_charts import bar_width
from ..tokens import guesses, visible
from ._common import MAX_TOP_K
from .loss import (CausalLossReport, GradientCheck, MaskedLossReport, NSPResult, PLLReport, causal_token_loss,
                   logit_gradient_check, masked_lm_loss, next_sentence, pseudo_log_likelihood)

if TYPE_CHECKING:  # pragma: no cover
    from ..inputs import Encoded
    from ..models import LoadedModel

_KINDS = {0: "[MASK]", 1: "random", 2: "unchanged"}  # MaskedLossReport.replacement_kind
_SURPRISING = 10  # rows of the most-surprising-tokens table
_HISTOGRAM_BINS = 30


@dataclass(frozen=True)
class LossResult:
    """The Loss section's parts, as the report stores them (None: not computed for this model or text)."""

    loss: CausalLossReport | MaskedLossReport
    pll: PLLReport | Unavailable | None = None  # masked LM, texts up to pll_max_tokens
    nsp: NSPResult | Unavailable | None = None  # masked LM with an NSP head, given a sentence pair
    gradient: GradientCheck | Unavailable | None = None


def default_gradient_position(encoded: Encoded, causal: bool) -> int:
    """The last prediction (causal: the second-to-last token) or the middle ordinary token (masked)."""
    if causal:
        return max(encoded.n_tokens - 2, 0)
    content = [i for i in range(encoded.n_tokens) if not encoded.special[i]]
    return content[len(content) // 2] if content else 0




class LossAnalysis(Analysis):
    name = "loss"
    title = "Loss and perplexity"
    description = ("Per-token cross-entropy and perplexity (next token for a causal LM, seeded BERT masking for a "
                   "masked LM), pseudo-log-likelihood, next-sentence prediction, and the loss gradient at one "
                   "position checked against P − onehot.")
    own_page = "token_loss"
    report_parts = True
    result_type = LossResult

    @dataclass(frozen=True)
    class Settings:
        top_k: int = setting(5, "Most likely tokens kept per scored position.", min=1, max=MAX_TOP_K)
        stride: int | None = setting(None, "Sliding-window stride for texts longer than the context "
                                           "(empty: half the window).", min=1)
        mlm_seed: int = setting(0, "Masked LM: seed of BERT's 15 % masking.", min=0, key="mlm_seed")
        pll_max_tokens: int = setting(128, "Masked LM: pseudo-log-likelihood (one forward pass per token) only up "
                                           "to this many tokens.", min=0, key="mlm_pll_max_tokens")
        gradient_position: int | None = setting(None, "Position of the logit-gradient check (empty: the last "
                                                      "prediction, or the middle token of a masked LM).", min=0,
                                                key="gradient_position")

    def available(self, lm: LoadedModel) -> tuple[bool, str]:
        if lm.is_causal or lm.has_mlm_head:
            return True, ""
        return False, (f"Loss needs a language-model head; this model is {lm.kind.label}, "
                       "so it has no loss or perplexity.")

    def run(self, lm: LoadedModel, encoded: Encoded, settings: LossAnalysis.Settings) -> LossResult:
        ok, reason = self.available(lm)
        if not ok:  # the main part is never wrapped: without a head the whole section is unavailable
            raise NotAvailableError(reason)
        text, top_k = encoded.text, int(settings.top_k)
        pll = nsp = None
        if lm.is_causal:
            main = causal_token_loss(lm, text, stride=settings.stride, top_k=top_k)
        else:
            main = masked_lm_loss(lm, text, seed=int(settings.mlm_seed), top_k=top_k)
            if encoded.n_tokens <= int(settings.pll_max_tokens):
                pll = part(lambda: pseudo_log_likelihood(lm, text))
            if encoded.text_pair and lm.has_nsp_head:
                nsp = part(lambda: next_sentence(lm, text, encoded.text_pair))
        position = settings.gradient_position
        if position is None:
            position = default_gradient_position(encoded, lm.is_causal)
        gradient = part(lambda: logit_gradient_check(lm, encoded, int(position)))
        return LossResult(loss=main, pll=pll, nsp=nsp, gradient=gradient)

    def view(self, result: LossResult) -> list:
        res = result.loss
        if isinstance(res, CausalLossReport):
            blocks = _causal_blocks(res)
        elif isinstance(res, MaskedLossReport):
            blocks = _masked_blocks(res)
        else:
            blocks = [Note(f"No view for a {type(res).__name__}.", level="warning")]
        for value, blocks_of in ((result.pll, _pll_blocks), (result.nsp, _nsp_blocks),
                                 (result.gradient, _gradient_blocks)):
            if isinstance(value, Unavailable):
                blocks.append(unavailable_note(value))
            elif value is not None:
                blocks += blocks_of(value)
        return blocks


def _causal_blocks(res: CausalLossReport) -> list:
    ce = np.asarray(res.ce_nats, dtype=float)
    blocks: list = [
        Metric(perplexity.label(res), perplexity.value(res.perplexity), help=perplexity.describe(res)),
        Metric("mean loss (nats/token)", float(res.mean_ce_nats), digits=6),
        Metric("bits per token", float(res.mean_ce_bits), digits=6),
        Metric("scored tokens", int(res.n_scored)),
        Metric("window / stride / windows", f"{res.window} / {res.stride} / {res.n_windows}"),
        Metric("top-1 accuracy", float(np.mean(res.rank == 1)) if res.n_scored else None),
    ]
    labels = tuple(visible(res.tokens[int(p)]) for p in res.positions)
    blocks.append(Chart("bar", "loss of each predicted token", y_title="nats",
                        series=(("loss", labels, tuple(float(v) for v in ce)),), width=bar_width(len(labels)),
                        reference=float(res.mean_ce_nats), reference_label="mean"))
    finite = ce[np.isfinite(ce)]
    if finite.size:
        counts, edges = np.histogram(finite, bins=_HISTOGRAM_BINS)
        blocks.append(Chart("histogram", "distribution of per-token loss", x_title="nats",
                            series=(("tokens", tuple(float(e) for e in edges), tuple(int(c) for c in counts)),),
                            markers=(("mean", float(res.mean_ce_nats)),)))
    values: list = [None] * len(res.tokens)
    for p, v in zip(res.positions, ce):
        values[int(p)] = float(v)
    blocks.append(ColouredTokens(tuple(res.tokens), tuple(values), "nats",
                                 caption="Tokens coloured by their loss (darker = more surprising):"))
    worst = np.argsort(-ce, kind="stable")[:_SURPRISING]
    blocks.append(Table("Most surprising tokens",
                        ("position", "token", "loss (nats)", "P(token)", "rank", "model's top guesses"),
                        tuple((int(res.positions[i]), visible(res.tokens[int(res.positions[i])]), float(ce[i]),
                               float(res.prob[i]), int(res.rank[i]), guesses(res.top_tokens[i], res.top_probs[i]))
                              for i in worst)))
    return blocks


def _masked_blocks(res: MaskedLossReport) -> list:
    blocks: list = [
        Metric(perplexity.label(res), perplexity.value(res.perplexity), help=perplexity.describe(res)),
        Metric("MLM loss (nats)", float(res.loss), digits=6),
        Metric("accuracy on chosen positions", float(res.accuracy)),
        Metric("chosen / content tokens", f"{res.n_chosen} / {res.n_candidates}"),
        Metric("[MASK] / random / unchanged", f"{res.n_mask} / {res.n_random} / {res.n_unchanged}"),
        Metric("seed, mask probability", f"{res.seed}, {res.mask_prob:g}"),
        Metric("chunks", int(res.n_chunks)),
    ]
    rows = tuple((int(p), visible(res.tokens[int(p)]), visible(res.replacement_tokens[i]), _KINDS.get(int(k), str(k)),
                  float(res.ce_nats[i]), float(res.prob[i]), int(res.rank[i]),
                  guesses(res.top_tokens[i], res.top_probs[i]))
                 for i, (p, k) in enumerate(zip(res.positions, res.replacement_kind)))
    blocks.append(Table("", ("position", "original", "model saw", "replacement", "loss (nats)", "P(original)", "rank",
                             "top guesses"), rows))
    return blocks


def _pll_blocks(pll: PLLReport) -> list:
    return [
        Heading("Pseudo-log-likelihood (each token masked in turn)"),
        Metric(perplexity.label(pll), perplexity.value(pll.pseudo_perplexity), help=perplexity.describe(pll)),
        Metric("PLL (nats)", float(pll.pll)),
        Metric("tokens", int(pll.n_tokens)),
        ColouredTokens(tuple(pll.tokens), tuple(float(-v) for v in pll.log_prob), "nats"),
    ]


def _nsp_blocks(nsp: NSPResult) -> list:
    return [
        Heading("Next-sentence prediction"),
        Metric("P(IsNext)", float(nsp.p_is_next)),
        Metric("prediction", nsp.prediction),
        Metric("NSP loss if B follows A (nats)", float(nsp.loss_if_next)),
    ]


def _gradient_blocks(g: GradientCheck) -> list:
    return [
        Heading(f"Gradient of the loss at position {g.position} ({g.objective})"),
        Metric("target token", visible(g.target_token)),
        Metric("loss (nats)", float(g.loss)),
        Metric("P(target)", float(g.prob_target)),
        Metric("max |autograd − (P − onehot)|", float(g.logit_grad_max_abs_diff)),
        Metric("∂L/∂z_target (= P − 1)", float(g.logit_grad_target)),
        Metric("Σ ∂L/∂z (= 0)", float(g.logit_grad_sum)),
        Metric("max |∂L/∂W_out − (P − onehot) ⊗ h|", float(g.output_formula_max_abs_diff)),
        Metric("cos(−∂L/∂w_target, h)", float(g.target_row_cos_h)),
        Metric("weights tied", bool(g.tied)),
        Table("", ("token", "∂L/∂z"), tuple((visible(t), float(v)) for t, v in zip(g.top_tokens, g.top_logit_grads))),
    ]
