"""Logit lens: what the model would predict if it stopped after each layer.

The residual stream after layer i goes through the model's own final norm and unembedding (its
language-model head); per position we keep the top-k tokens with their probabilities, and the
rank and probability of the token that really comes next (causal LM) or of the original token
at masked positions (masked LM: a seeded 15 % of the ordinary tokens are replaced by [MASK]).

Row 0 is the embedding output, row i the output of block i, the last row the model's own
output logits (for GPT-2 `hidden_states[-1]` already has ln_f applied, so the last row is
taken from the logits and never normed twice). The vocabulary-sized logits exist for one
layer and a chunk of positions at a time; only the reductions are kept.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import families
from ..analysis import Analysis, Chart, Metric, Note, Table, setting
from ..errors import NotAvailableError
from ..inputs import display_token

if TYPE_CHECKING:  # pragma: no cover
    from ..inputs import Encoded
    from ..models import LoadedModel

_CHUNK = 256  # positions per logits chunk: (chunk, vocab) floats at a time


@dataclass(frozen=True)
class LogitLensResult:
    """Per lens row (embeddings, block 1..L-1, final) × scored position; ranks are 1-based."""

    mode: str  # "causal" (predict the next token) or "masked" (predict the original masked token)
    tokens: tuple[str, ...]  # the text's tokens (as fed: masked positions show the mask token)
    layer_names: tuple[str, ...]  # (R,)
    positions: np.ndarray  # (P,) int: position whose hidden state is read
    target_ids: np.ndarray  # (P,) int: the token that should be predicted there
    target_tokens: tuple[str, ...]  # (P,)
    top_ids: np.ndarray  # (R, P, k) int
    top_tokens: tuple[tuple[tuple[str, ...], ...], ...]  # (R, P, k)
    top_probs: np.ndarray  # (R, P, k) float
    target_rank: np.ndarray  # (R, P) int, 1 = the top prediction
    target_prob: np.ndarray  # (R, P) float

    @property
    def top1_accuracy(self) -> np.ndarray:
        """(R,) share of positions where the target is the top prediction."""
        return (self.target_rank == 1).mean(axis=1) if self.target_rank.size else np.zeros(len(self.layer_names))

    @property
    def mean_target_prob(self) -> np.ndarray:
        return self.target_prob.mean(axis=1) if self.target_prob.size else np.zeros(len(self.layer_names))

    @property
    def median_target_rank(self) -> np.ndarray:
        return np.median(self.target_rank, axis=1) if self.target_rank.size else np.zeros(len(self.layer_names))


def _final_norm(model):
    """The norm applied after the last block (GPT-2 ln_f, Llama/Qwen norm, GPT-NeoX final_layer_norm)."""
    for path in ("transformer.ln_f", "model.norm", "gpt_neox.final_layer_norm", "model.decoder.final_layer_norm"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None:
            return obj
    return None


def _readout(lm: LoadedModel):
    """hidden state (N, d) -> logits (N, V) through the model's final norm and head."""
    model = lm.model
    if lm.is_causal:
        norm, head = _final_norm(model), families.output_head(model)
        if norm is None or head is None:
            raise NotAvailableError(f"The logit lens does not know the final norm of {lm.architecture}.")
        return lambda h: head(norm(h))
    cls = getattr(model, "cls", None)  # BERT-style masked-LM head: transform (dense, act, LayerNorm) + decoder
    if cls is None:
        raise NotAvailableError(f"The logit lens does not know the masked-LM head of {lm.architecture}.")
    return getattr(cls, "predictions", cls)  # BertForPreTraining: cls = MLM predictions + NSP head


def _mask_positions(special: list[bool], n: int, seed: int, share: float) -> list[int]:
    ordinary = [i for i in range(n) if not special[i]]
    if not ordinary:
        return []
    k = max(1, int(round(share * len(ordinary))))
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(ordinary, size=min(k, len(ordinary)), replace=False))


class LogitLens(Analysis):
    name = "logit_lens"
    title = "Logit lens"
    description = ("Each layer's residual stream read through the final norm and unembedding: what the model "
                   "would predict if it stopped there, and where the right token ranks.")

    @dataclass(frozen=True)
    class Settings:
        top_k: int = setting(5, "Predictions kept per layer and position.", min=1, max=50)
        mask_seed: int = setting(0, "Masked LM: seed choosing the masked positions.", min=0)
        mask_share: float = setting(0.15, "Masked LM: share of ordinary tokens replaced by the mask token.",
                                    min=0.01, max=1.0)

    def available(self, lm: LoadedModel) -> tuple[bool, str]:
        if lm.is_causal or lm.has_mlm_head:
            return True, ""
        return False, (f"The logit lens needs a language-model head; {lm.architecture} ({lm.spec}) is "
                       "encoder-only.")

    @torch.no_grad()
    def run(self, lm: LoadedModel, encoded: Encoded, settings: LogitLens.Settings) -> LogitLensResult:
        ok, reason = self.available(lm)
        if not ok:
            raise NotAvailableError(reason)
        ids = encoded.input_ids.to(lm.device)  # (1, T)
        T = ids.shape[1]
        kwargs = {"attention_mask": encoded.attention_mask.to(lm.device)} if encoded.attention_mask is not None else {}
        if getattr(encoded, "token_type_ids", None) is not None and not lm.is_causal:
            kwargs["token_type_ids"] = encoded.token_type_ids.to(lm.device)
        tokens = list(encoded.tokens)
        if lm.is_causal:
            mode = "causal"
            positions = list(range(T - 1))
            targets = ids[0, 1:].tolist()
        else:
            mode = "masked"
            positions = _mask_positions(list(encoded.special), T, settings.mask_seed, settings.mask_share)
            targets = ids[0, positions].tolist()
            ids = ids.clone()
            mask_id = lm.tokenizer.mask_token_id
            if mask_id is None:
                raise NotAvailableError(f"{lm.spec} has no mask token, so nothing can be masked.")
            ids[0, positions] = mask_id
            mask_tok = lm.tokenizer.mask_token
            tokens = [mask_tok if i in set(positions) else t for i, t in enumerate(tokens)]
        if lm.is_causal:
            kwargs["use_cache"] = False
        out = lm.model(input_ids=ids, output_hidden_states=True, **kwargs)
        hidden = out.hidden_states  # L + 1 tensors (1, T, d)
        final = out.logits if getattr(out, "logits", None) is not None else out.prediction_logits  # (1, T, V)
        readout = _readout(lm)
        n_rows = len(hidden)
        k = min(settings.top_k, final.shape[-1])
        P = len(positions)
        top_ids = np.zeros((n_rows, P, k), dtype=np.int64)
        top_probs = np.zeros((n_rows, P, k), dtype=np.float64)
        ranks = np.zeros((n_rows, P), dtype=np.int64)
        tprob = np.zeros((n_rows, P), dtype=np.float64)
        pos_t = torch.tensor(positions, dtype=torch.long, device=ids.device)
        tgt_t = torch.tensor(targets, dtype=torch.long, device=ids.device)
        for row in range(n_rows):
            for start in range(0, P, _CHUNK):
                sl = slice(start, start + _CHUNK)
                p, t = pos_t[sl], tgt_t[sl]
                if row == n_rows - 1:
                    logits = final[0, p]  # the model's own output (final norm applied once)
                else:
                    logits = readout(hidden[row][0, p])  # (n, V)
                logp = torch.log_softmax(logits.double(), dim=-1)
                lp_t = logp.gather(1, t[:, None])  # (n, 1)
                ranks[row, sl] = ((logp > lp_t).sum(dim=1) + 1).cpu().numpy()
                tprob[row, sl] = lp_t[:, 0].exp().cpu().numpy()
                v, i = logp.topk(k, dim=-1)
                top_ids[row, sl] = i.cpu().numpy()
                top_probs[row, sl] = v.exp().cpu().numpy()
        tok = lm.tokenizer

        def convert(id_list):
            return [display_token(tok, int(i)) for i in id_list]

        top_tokens = tuple(tuple(tuple(convert(top_ids[r, j])) for j in range(P)) for r in range(n_rows))
        names = ("embeddings",) + tuple(f"block {i}" for i in range(1, n_rows - 1)) + (f"block {n_rows - 1} (output)",)
        return LogitLensResult(
            mode=mode, tokens=tuple(tokens), layer_names=names, positions=np.asarray(positions, dtype=np.int64),
            target_ids=np.asarray(targets, dtype=np.int64), target_tokens=tuple(convert(targets)),
            top_ids=top_ids, top_tokens=top_tokens, top_probs=top_probs, target_rank=ranks, target_prob=tprob)

    def view(self, result: LogitLensResult, max_positions: int = 64) -> list:  # max_positions: table/heat map
        r = result
        what = "the next token" if r.mode == "causal" else "the original token at masked positions"
        blocks: list = [
            Note(f"Each row reads the residual stream after a layer through the final norm and the unembedding; "
                 f"the target is {what}. Rank 1 = the top prediction."),
            Metric("Scored positions", int(len(r.positions))),
            Metric("Top-1 accuracy at the output", float(r.top1_accuracy[-1]) if len(r.positions) else None),
            Metric("Mean P(target) at the output", float(r.mean_target_prob[-1]) if len(r.positions) else None),
        ]
        if not len(r.positions):
            blocks.append(Note("No position to score (the text is a single token, or nothing could be masked).",
                               level="info"))
            return blocks
        first = [next((i for i in range(len(r.layer_names)) if r.target_rank[i, j] == 1), None)
                 for j in range(len(r.positions))]
        reached = [f for f in first if f is not None]
        blocks.append(Metric("Positions whose target becomes top-1 at some layer", len(reached)))
        x = tuple(range(len(r.layer_names)))
        blocks.append(Chart("line", "Target token per layer: top-1 accuracy and mean probability",
                            x_title="layer (0 = embeddings)", y_title="share / probability",
                            series=(("top-1 accuracy", x, tuple(float(v) for v in r.top1_accuracy)),
                                    ("mean P(target)", x, tuple(float(v) for v in r.mean_target_prob)))))
        blocks.append(Chart("line", "Median rank of the target token per layer", x_title="layer (0 = embeddings)",
                            y_title="median rank", log_y=True,
                            series=(("median rank", x, tuple(float(v) for v in r.median_target_rank)),)))
        n = min(max_positions, len(r.positions))
        cols = tuple(f"{int(p)}:{r.tokens[int(p)]}" for p in r.positions[:n])
        blocks.append(Chart("heatmap", f"log10 rank of the target (first {n} positions)", x_title="position",
                            y_title="layer", z=tuple(tuple(float(v) for v in np.log10(r.target_rank[:, :n][i]))
                                                     for i in range(len(r.layer_names))),
                            row_labels=r.layer_names, col_labels=cols, colorbar_title="log10 rank", zmin=0.0))
        rows = []
        for row_i, layer in enumerate(r.layer_names):
            rows.append((layer, float(r.top1_accuracy[row_i]), float(r.mean_target_prob[row_i]),
                         float(r.median_target_rank[row_i])))
        blocks.append(Table("Per layer", ("layer", "top-1 accuracy", "mean P(target)", "median rank"), tuple(rows)))
        prow = []
        for j in range(n):
            p = int(r.positions[j])
            prow.append((p, r.tokens[p], r.target_tokens[j],
                         ", ".join(f"{t} ({pr:.2f})" for t, pr in zip(r.top_tokens[0][j][:3], r.top_probs[0, j, :3])),
                         ", ".join(f"{t} ({pr:.2f})" for t, pr in zip(r.top_tokens[-1][j][:3], r.top_probs[-1, j, :3])),
                         int(r.target_rank[-1, j]), "—" if first[j] is None else r.layer_names[first[j]]))
        blocks.append(Table("Per position", ("position", "token", "target", "top-3 after embeddings",
                                             "top-3 at the output", "rank at the output", "first layer at top-1"),
                            tuple(prow), note=f"First {n} of {len(r.positions)} scored positions."))
        return blocks
