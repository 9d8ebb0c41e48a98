"""Per-token negative log-likelihoods of a sequence under a loaded model (perplexity's measure).

Computed from the decoder's hidden states a chunk of positions at a time, so no full
sequence x vocabulary logit table is ever materialised (20 GB at 80K tokens for Llama-3).
This module knows nothing about evaluations, windows or result folders.
"""

from __future__ import annotations

from typing import Any

from core.errors import LongCtxError


def token_nlls(model: Any, ids: list[int], chunk: int = 1024) -> list[float]:
    """The NLL of each token after the first, each predicted from all the tokens before it.

    Equal to the per-token loss of `model(input_ids, labels=input_ids)`, computed from the
    decoder's hidden states `chunk` positions at a time instead of a full logit table.
    """
    import torch
    import torch.nn.functional as F

    if len(ids) < 2:
        raise LongCtxError("a window needs at least 2 tokens")
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, head = base.get_decoder(), base.get_output_embeddings()
    cap = getattr(base.config, "final_logit_softcapping", None)
    device = next(base.parameters()).device
    x = torch.tensor([ids], device=device)
    out = []
    with torch.inference_mode():
        hidden = decoder(input_ids=x, use_cache=False).last_hidden_state[0]
        targets = x[0, 1:]
        for start in range(0, len(ids) - 1, chunk):
            stop = min(start + chunk, len(ids) - 1)
            logits = head(hidden[start:stop]).float()
            if cap:
                logits = torch.tanh(logits / cap) * cap
            out.append(F.cross_entropy(logits, targets[start:stop], reduction="none"))
    return torch.cat(out).tolist()
