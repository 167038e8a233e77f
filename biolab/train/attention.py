"""Eager attention in chunks of sequences, for CPU training.

transformers' eager attention forms the (batch, heads, query, key) scores of the whole batch at once:
for the ``tiny`` model's 32 x 128 batch that is 8 MiB of fp32 per layer, added to the mask,
soft-maxed, cast and, in backward, read again, each pass from main memory. The same ops on a few
sequences at a time keep the scores in cache. Measured on a 2-core AVX-512 BF16 CPU (one thread,
bf16, 32 x 4 heads x 128 x 32, one layer forward + backward): 27.4 ms whole, 17.0 ms in chunks of 4
sequences (1 MiB of scores), 22.6 in chunks of 2, 25.3 in chunks of 8; SDPA's CPU kernel 41.5.

Registered with transformers' attention and mask interfaces as ``ATTENTION``; a model switched to it
(``model.set_attn_implementation(ATTENTION)``) gets the eager mask and computes what eager computes.
"""

from __future__ import annotations

from functools import cache

import torch
from torch import Tensor, nn

ATTENTION = "biolab_chunked_eager"
CHUNK_SCORES = 1 << 18  # fp32 scores formed at once: 1 MiB (see the module's measurements)
CHUNKED_ARCHS = ("gpt_neox", "gpt2", "llama")  # checked against eager in tests/test_attention.py


def chunked_eager_attention(
    module: nn.Module,
    query: Tensor,  # (batch, heads, q_len, head_dim)
    key: Tensor,  # (batch, kv_heads, k_len, head_dim)
    value: Tensor,  # (batch, kv_heads, k_len, head_dim)
    attention_mask: Tensor | None,  # additive, (batch or 1, 1, q_len, k_len)
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[Tensor, None]:
    """(attention output (batch, q_len, heads, head_dim), None): no weights are returned."""
    batch, heads, q_len, head_dim = query.shape
    if key.shape[1] != heads:  # grouped-query attention: each kv head serves several query heads
        key = key.repeat_interleave(heads // key.shape[1], dim=1)
        value = value.repeat_interleave(heads // value.shape[1], dim=1)
    scaling = head_dim**-0.5 if scaling is None else scaling
    per = max(1, CHUNK_SCORES // (heads * q_len * key.shape[2]))
    # split, not slices: backward then concatenates the chunks' gradients once, where each slice's
    # would be added into a zeroed gradient of the whole tensor (measured: that cost more than it saved)
    masks = [attention_mask] * -(-batch // per)
    if attention_mask is not None and attention_mask.shape[0] != 1:
        masks = attention_mask.split(per)
    outs = []
    for q, k, v, mask in zip(query.split(per), key.split(per), value.split(per), masks, strict=True):
        w = torch.matmul(q, k.transpose(2, 3)) * scaling
        if mask is not None:
            w = w + mask
        w = nn.functional.softmax(w, dim=-1, dtype=torch.float32).to(value.dtype)
        w = nn.functional.dropout(w, p=dropout, training=module.training)
        outs.append(torch.matmul(w, v))
    return torch.cat(outs).transpose(1, 2).contiguous(), None


@cache
def register() -> str:
    """Make ``ATTENTION`` known to transformers (once a process); returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(ATTENTION, chunked_eager_attention)
    AttentionMaskInterface.register(ATTENTION, eager_mask)
    return ATTENTION


def use_chunked_attention(model: nn.Module) -> bool:
    """Switch ``model`` to the chunked eager attention where it is checked to equal eager; True if
    it was switched, False (model untouched) for another architecture."""
    config = getattr(model, "config", None)
    if config is None or config.model_type not in CHUNKED_ARCHS:
        return False
    model.set_attn_implementation(register())
    return True
