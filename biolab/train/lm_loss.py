"""The causal LM loss with the LM head and the cross-entropy fused, in chunks of tokens.

transformers computes ``logits = h @ W^T`` for every token, upcasts them to fp32 and takes
``cross_entropy``; autograd then keeps the fp32 logits and runs log_softmax's backward over them.
For a 2048-token vocabulary and a 32 x 128 batch that is three 8M-element fp32 tensors written and
read again, and on a CPU it was ~25% of a bf16 training step of the ``tiny`` model (the LM head's
matmuls alone ~10%). Here the gradient with respect to the logits, ``softmax - onehot``, is formed
chunk by chunk while the logits are still in cache, and turned at once into the gradients of the
hidden states and of the head's weight; backward only scales them. Same loss as transformers' (the
mean over target tokens, ``-100`` ignored), its exp/log in fp32, the matmuls in the hidden states'
dtype (bf16 under autocast, as the head's own matmul would be).

Used where it was measured to pay and where it is exactly the model's loss: a CPU, one process
(DDP needs the forward through its wrapper), and a causal LM whose head is a bias-free linear map
of its base model's last hidden state (GPT-NeoX, GPT-2, Llama, Qwen3-MoE without its router loss; LoRA
adapters on any of them). Everything else keeps ``model(**batch).loss``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from biolab.model import is_masked_lm

# Rows of logits formed at once: 1024 x 2048 fp32 is 8 MB. Measured on a 2-core AVX-512 BF16 CPU
# (4064 tokens, d 128, vocab 2048, bf16, one thread): 48.5 ms for the fused loss and gradients at
# 1024 rows, 49.7 at 512, 55.5 at 256, 59.3 unchunked; the three matmuls alone 34 ms.
CHUNK_ROWS = 1024
IGNORE = -100  # transformers' ignore_index
# Checked against model(**batch).loss and its gradients in tests/test_lm_loss.py.
FUSED_ARCHS = ("gpt_neox", "gpt2", "llama", "qwen3_moe")


class _LinearCrossEntropy(torch.autograd.Function):
    """mean over rows with ``labels != IGNORE`` of ``-log softmax(h @ w^T)[label]``, for
    h: (rows, d), w: (vocab, d), labels: (rows,). The gradients are computed in forward."""

    @staticmethod
    def forward(ctx, h: Tensor, w: Tensor, labels: Tensor) -> Tensor:
        valid = labels != IGNORE
        n = valid.sum().clamp(min=1)
        target = labels.clamp(min=0)[:, None]
        scale = (valid / n).float()[:, None]  # d loss / d logit row, before (softmax - onehot)
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        for s in range(0, h.shape[0], CHUNK_ROWS):
            e = s + CHUNK_ROWS
            z = torch.mm(h[s:e], w.t()).float()  # (chunk, vocab) logits, then shifted in place
            z -= z.amax(1, keepdim=True)
            picked = z.gather(1, target[s:e])
            z.exp_()
            norm = z.sum(1, keepdim=True)
            total += ((norm.log() - picked) * valid[s:e, None]).sum()
            z *= scale[s:e] / norm  # softmax, already scaled by the row's weight in the mean
            z.scatter_add_(1, target[s:e], -scale[s:e])  # minus the onehot: d loss / d logits
            g = z.to(h.dtype)
            torch.mm(g, w, out=grad_h[s:e])
            grad_w += torch.mm(g.t(), h[s:e])
        ctx.save_for_backward(grad_h, grad_w.to(w.dtype))
        return total / n

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_out, grad_w * grad_out, None


def linear_cross_entropy(hidden: Tensor, weight: Tensor, labels: Tensor) -> Tensor:
    """The mean next-token loss of ``hidden`` (batch, seq, d) under the head ``weight`` (vocab, d)
    for ``labels`` (batch, seq), shifted as transformers shifts them: position t predicts t + 1."""
    d = hidden.shape[-1]
    h = hidden[:, :-1].reshape(-1, d)
    if torch.is_autocast_enabled("cpu") and h.dtype == torch.float32:
        h = h.to(torch.get_autocast_dtype("cpu"))  # the dtype the head's matmul would run in
    return _LinearCrossEntropy.apply(h, weight.to(h.dtype), labels[:, 1:].reshape(-1))


def _lora_only(model: nn.Module) -> nn.Module | None:
    """The transformers model under a peft model whose adapters are all LoRA (they act inside the
    layers, so the inner model's forward is the peft model's); the model itself when it is no peft
    model; None for other adapters."""
    configs = getattr(model, "peft_config", None)
    if configs is None:
        return model
    if all(str(getattr(c, "peft_type", "")).endswith("LORA") for c in configs.values()):
        return model.get_base_model()
    return None


def fused_head(model: nn.Module) -> tuple[nn.Module, nn.Linear] | None:
    """(base model giving the last hidden state, LM head) where the fused loss is the model's own
    loss; None where it is not (a masked LM, another adapter, a head with a bias or wrapped, an MoE
    whose .loss adds its router's auxiliary loss)."""
    causal = _lora_only(model)
    if causal is None or is_masked_lm(causal) or causal.config.model_type not in FUSED_ARCHS:
        return None
    if getattr(causal.config, "output_router_logits", False):
        return None
    head = causal.get_output_embeddings()
    if type(head) is not nn.Linear or head.bias is not None:
        return None
    return causal.base_model, head


def lm_loss(model: nn.Module, batch: dict[str, Tensor], fused: tuple[nn.Module, nn.Linear] | None) -> Tensor:
    """The training loss of ``batch`` (``input_ids``, ``labels``, optionally ``attention_mask``):
    through ``fused`` (``fused_head(model)``) when given, else the model's own."""
    if fused is None:
        return model(**batch).loss
    base, head = fused
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    hidden = base(**inputs).last_hidden_state
    return linear_cross_entropy(hidden, head.weight, batch["labels"])
