"""MediCLIP's text side: the original's state words and CoOp prompts (code
``config/brainmri.yaml``, ``models/CoOp.py``).

Each state word w becomes the prompt "X X X X X X X X w." whose 8 "X" token embeddings are
replaced by learned context vectors, one set per prompt (CoOp's class-specific context,
``CSC: True``, ``class_token_positions: [end]``), initialised N(0, 0.02). The text encoder
embeds every prompt; a state's text feature is the mean of its prompts' embeddings,
L2-normalised. ``text_features`` returns (embed_dim, 2): columns normal, abnormal.

The original's text encoder runs its transformer without CLIP's causal mask (its
``TextEncoder`` calls ``transformer(x)`` without ``attn_mask``); ``causal_mask`` (default
False, as the original) turns CLIP's mask back on.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ABNORMAL_STATES", "NORMAL_STATES", "PromptLearner"]

#: the original's normal state words (``prompts.normal``)
NORMAL_STATES = ("normal", "healthy", "negative", "unremarkable", "clear", "asymptomatic",
                 "normal findings", "no findings", "in good health", "no evidence of disease")
#: the original's abnormal state words (``prompts.abnormal``)
ABNORMAL_STATES = ("abnormal", "positive", "symptomatic", "disease", "lesion", "pathological",
                   "impaired", "evidence of disease", "abnormal finding", "pathological condition",
                   "pathological abnormality")


class PromptLearner(nn.Module):
    """Learned context vectors ``ctx_normal`` (10, n_ctx, width) and ``ctx_abnormal``
    (11, n_ctx, width) and the frozen token embeddings around them (buffers, rebuilt from
    the CLIP model, not saved).

    clip     the frozen open_clip CLIP whose text encoder embeds the prompts.
    n_ctx    learned tokens per prompt (8, the original's ``n_learnable_token``).
    """

    def __init__(self, clip: nn.Module, n_ctx: int = 8, *,
                 normal: Sequence[str] = NORMAL_STATES, abnormal: Sequence[str] = ABNORMAL_STATES,
                 generator: torch.Generator | None = None):
        super().__init__()
        from open_clip.tokenizer import tokenize
        width = clip.ln_final.weight.shape[0]
        self.n_ctx = int(n_ctx)
        for state, words in (("normal", normal), ("abnormal", abnormal)):
            ctx = torch.empty(len(words), self.n_ctx, width)
            nn.init.normal_(ctx, std=0.02, generator=generator)
            self.register_parameter(f"ctx_{state}", nn.Parameter(ctx))
            texts = [" ".join(["X"] * self.n_ctx) + " " + w.replace("_", " ") + "." for w in words]
            tokens = tokenize(texts, context_length=clip.context_length)
            with torch.no_grad():
                emb = clip.token_embedding(tokens).float()
            self.register_buffer(f"tokens_{state}", tokens, persistent=False)
            self.register_buffer(f"prefix_{state}", emb[:, :1], persistent=False)
            self.register_buffer(f"suffix_{state}", emb[:, 1 + self.n_ctx:], persistent=False)

    def prompts(self, state: str) -> torch.Tensor:
        """(P, context_length, width) prompt embeddings of ``state`` ("normal" / "abnormal")."""
        return torch.cat([getattr(self, f"prefix_{state}"), getattr(self, f"ctx_{state}"),
                          getattr(self, f"suffix_{state}")], dim=1)

    def text_features(self, clip: nn.Module, causal_mask: bool = False) -> torch.Tensor:
        """(embed_dim, 2): the unit text features of the normal and abnormal states."""
        cols = []
        for state in ("normal", "abnormal"):
            x = self.prompts(state) + clip.positional_embedding.float()
            x = clip.transformer(x, attn_mask=clip.attn_mask if causal_mask else None)
            x = clip.ln_final(x)
            tokens = getattr(self, f"tokens_{state}")
            x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
            x = x @ clip.text_projection
            emb = x.mean(0)
            cols.append(emb / emb.norm())
        return torch.stack(cols, dim=1)
