"""Post-training weight quantisation to measure what knowledge survives it (Part 3.3 result 8).

Round to nearest (RTN), symmetric, per group: each run of ``group_size`` input weights of a row
shares one scale, ``absmax / (2^(bits-1) - 1)``; weights become ``round(w / scale) * scale``
(simulated: stored back in float32). The paper used GPTQ (auto_gptq, calibrated on 1000 bios),
which corrects each column's rounding error with the next columns': RTN is the simpler, weaker
method, so its int4 loss is an upper bound on GPTQ's. Every linear layer is quantised except the
token embedding and the LM head (tied to it in our models), as GPTQ leaves them. An MoE's experts,
which transformers stores as one [experts, out, in] tensor per projection rather than as linear layers,
are quantised expert by expert; its router (an [experts, d] weight, no linear layer either) stays in
float, as it picks the expert rather than storing knowledge.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

BITS = (8, 4)


@torch.no_grad()
def quantize_weights(weight: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """``weight`` [out, in] rounded to ``bits``-bit integers with one scale per ``group_size`` inputs
    (the whole row when the row does not split into such groups)."""
    if bits < 2:
        raise ValueError(f"bits must be >= 2, got {bits}")
    out, inp = weight.shape
    g = group_size if group_size and inp % group_size == 0 else inp
    w = weight.float().reshape(out, inp // g, g)
    qmax = 2 ** (bits - 1) - 1
    scale = w.abs().amax(-1, keepdim=True).clamp(min=1e-12) / qmax
    return (torch.round(w / scale).clamp(-qmax, qmax) * scale).reshape(out, inp).to(weight.dtype)


@torch.no_grad()
def quantize_model_(model: nn.Module, bits: int, group_size: int = 32) -> int:
    """Quantise ``model``'s linear layers (and an MoE's experts) in place; returns how many weights were
    rounded."""
    skip = {
        id(m.weight) for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None
    }
    n = 0
    for module in model.modules():
        if isinstance(module, nn.Linear) and id(module.weight) not in skip:
            module.weight.copy_(quantize_weights(module.weight, bits, group_size))
        elif isinstance(module, Conv1D):  # GPT-2 stores [in, out]
            module.weight.copy_(quantize_weights(module.weight.t(), bits, group_size).t())
        else:
            continue
        n += module.weight.numel()
    for weight in expert_weights(model):
        for matrix in weight:  # one expert's [out, in] matrix at a time
            matrix.copy_(quantize_weights(matrix, bits, group_size))
        n += weight.numel()
    return n


def expert_weights(model: nn.Module) -> list[nn.Parameter]:
    """The stacked expert matrices of an MoE model, [experts, out, in] each (a module holding
    ``num_experts`` and 3-d weights, as transformers' MoE classes keep them); [] for a dense model."""
    return [
        p
        for module in model.modules()
        if hasattr(module, "num_experts")
        for p in module.parameters(recurse=False)
        if p.dim() == 3
    ]
