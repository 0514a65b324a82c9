"""The softmax-cross-entropy gradient at one position (seed 000): autograd against the closed form.

∂L/∂z = P − onehot for the logits z, ∂L/∂W_out = (P − onehot) ⊗ h for the output matrix, and the
gradient that reaches each input-embedding row (the same rows as the output's when the weights
are tied). The result is `loss.GradientCheck` (the Loss report's "gradient" part); `loss`
re-exports `logit_gradient_check`.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError, NotAvailableError
from ..inputs import Encoded, display_token, display_tokens
from ._common import MAX_TOP_K, check_int
from .scoring import causal_parts, mlm_parts, require_mlm

if TYPE_CHECKING:  # pragma: no cover
    from ..models import LoadedModel
    from .loss import GradientCheck


def logit_gradient_check(lm: LoadedModel, encoded: Encoded, position: int, top_k: int = 10) -> GradientCheck:
    """∂L/∂logits by autograd vs P − onehot at one position, and the gradient reaching embedding rows.

    Gradients are taken with respect to `inputs_embeds` and a detached view of the output weight
    with `torch.autograd.grad`: the shared model's parameters, their `requires_grad` flags and
    `.grad` fields are never touched.
    """
    if not (lm.is_causal or lm.has_mlm_head):
        raise NotAvailableError(
            "The logit-gradient view is not available for an encoder-only model (no language-model head).")
    if not isinstance(encoded, Encoded):
        raise InputError("Give an encoded text (inspector.inputs.encode).")
    tok = lm.tokenizer
    top_k = check_int(top_k, 1, min(MAX_TOP_K, lm.vocab_size), "top_k")
    ids = encoded.input_ids[0].clone()
    T = ids.numel()
    if lm.is_causal:
        if T < 2:
            raise InputError("The text has 1 token; the next-token gradient needs at least 2.", "Use a longer text.")
        position = check_int(position, 0, T - 2, "position (the last token has no next token)")
        target_id = int(ids[position + 1])
        objective = "next-token"
        body, head = causal_parts(lm)
    else:
        require_mlm(lm, "The logit-gradient view")
        position = check_int(position, 0, T - 1, "position")
        if bool(encoded.special[position]):
            raise InputError(f"Position {position} is a special token ({encoded.tokens[position]}).",
                             "Choose a position of a word piece of the text.")
        target_id = int(ids[position])
        ids[position] = tok.mask_token_id
        objective = "masked-token"
        body, head = mlm_parts(lm)

    decoder = lm.model.get_output_embeddings()  # Linear(D, V); the last layer of `head`
    embedding = lm.model.get_input_embeddings()
    tied = decoder.weight.data_ptr() == embedding.weight.data_ptr()
    dev = lm.device
    with torch.enable_grad():
        inputs_embeds = embedding(ids[None].to(dev)).detach().requires_grad_(True)  # (1, T, D)
        kwargs = {"attention_mask": encoded.attention_mask.to(dev)}
        if not lm.is_causal and encoded.token_type_ids is not None:
            kwargs["token_type_ids"] = encoded.token_type_ids.to(dev)
        hidden = body(None, inputs_embeds=inputs_embeds, **kwargs)[0, position]  # (D,)
        if lm.is_causal:
            h = hidden
        else:
            h = head.transform(hidden)  # BERT: dense + GELU + LayerNorm before the decoder
        w_out = decoder.weight.detach().requires_grad_(True)  # a new leaf sharing storage; the parameter is untouched
        logits = F.linear(h, w_out, decoder.bias.detach() if decoder.bias is not None else None)  # (V,)
        loss = F.cross_entropy(logits[None].float(), torch.tensor([target_id], device=dev))
        g_logits, g_embeds, g_w = torch.autograd.grad(loss, [logits, inputs_embeds, w_out])

    with torch.no_grad():
        z = logits.detach().float()
        p = torch.softmax(z, dim=-1)
        onehot = torch.zeros_like(p)
        onehot[target_id] = 1.0
        closed = p - onehot  # (V,) seed 000: ∂L/∂z_i = P(i) − y_i
        g_logits = g_logits.float()
        diff_logits = float((g_logits - closed).abs().max())
        h_vec = h.detach().float()
        g_w = g_w.float()  # (V, D)
        diff_out = float((g_w - closed[:, None] * h_vec[None, :]).abs().max())
        out_norms = g_w.norm(dim=-1)  # (V,)
        k = min(top_k, out_norms.numel())
        out_top = out_norms.topk(k)
        logit_top = g_logits.abs().topk(k).indices

        # Total gradient reaching each input-embedding row: input side summed per token id,
        # plus the output side when the matrices are one (tied weights).
        g_in = g_embeds[0].float()  # (T, D)
        g_target = g_w[target_id].clone()
        if tied:
            rows = g_w.index_add_(0, ids.to(g_in.device), g_in)  # (V, D), in place: g_w is not used below
            emb_norms = rows.norm(dim=-1)
            emb_top = emb_norms.topk(k)
            emb_ids, emb_vals = emb_top.indices, emb_top.values
        else:
            uniq, inv = torch.unique(ids, return_inverse=True)
            per_id = torch.zeros((uniq.numel(), g_in.shape[1]), dtype=torch.float32).index_add_(0, inv, g_in.cpu())
            norms = per_id.norm(dim=-1)
            order = norms.argsort(descending=True)[:k]
            emb_ids, emb_vals = uniq[order], norms[order]
        cos = float(F.cosine_similarity(-g_target, h_vec, dim=0)) if float(g_target.norm()) > 0 else math.nan

    from .loss import GradientCheck  # the result type the reports store (loss imports this module)

    p_target = float(p[target_id])
    return GradientCheck(
        spec=lm.spec,
        objective=objective,
        position=position,
        target_id=target_id,
        target_token=display_token(tok, target_id),
        tokens=display_tokens(tok, ids.tolist()),
        dtype=str(lm.dtype).replace("torch.", ""),
        loss=float(loss.detach()),
        prob_target=p_target,
        logit_grad_max_abs_diff=diff_logits,
        logit_grad_target=float(g_logits[target_id]),
        logit_grad_sum=float(g_logits.double().sum()),
        logit_grad_norm=float(g_logits.norm()),
        top_k=k,
        top_ids=logit_top.cpu().numpy().astype(np.int64),
        top_tokens=display_tokens(tok, logit_top.tolist()),
        top_logit_grads=g_logits[logit_top].cpu().double().numpy(),
        input_grad_norm=g_in.norm(dim=-1).cpu().double().numpy(),
        hidden_norm=float(h_vec.norm()),
        tied=bool(tied),
        output_formula_max_abs_diff=diff_out,
        output_top_ids=out_top.indices.cpu().numpy().astype(np.int64),
        output_top_tokens=display_tokens(tok, out_top.indices.tolist()),
        output_top_norms=out_top.values.cpu().double().numpy(),
        target_row_grad_norm=float(g_target.norm()),
        target_row_cos_h=cos,
        embedding_top_ids=emb_ids.cpu().numpy().astype(np.int64),
        embedding_top_tokens=display_tokens(tok, emb_ids.tolist()),
        embedding_top_norms=emb_vals.cpu().double().numpy(),
    )
