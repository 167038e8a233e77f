import pytest
import torch

from biolab.model import MOE_ARCHS, ModelConfig, build_model
from biolab.train import lm_loss as lm
from biolab.train.finetune import FinetuneConfig, apply_lora
from biolab.train.lm_loss import FUSED_ARCHS, fused_head, lm_loss

VOCAB = 96


def small(arch: str):
    torch.manual_seed(0)
    experts = 4 if arch in MOE_ARCHS else 0  # an MoE's tokens spread over several experts
    cfg = ModelConfig(arch=arch, n_layer=2, n_head=2, d_model=32, max_positions=64, n_experts=experts)
    return build_model(cfg, VOCAB, 0, 1, 0).train()


def batch(rows: int = 3, seq: int = 20) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, VOCAB, (rows, seq), generator=g)
    labels = ids.clone()
    labels[0, :7] = -100  # a question that is not a target
    labels[1, 15:] = -100  # right padding
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def loss_and_grads(model, data, fused):
    model.zero_grad(set_to_none=True)
    loss = lm_loss(model, data, fused)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", FUSED_ARCHS)
def test_the_fused_loss_is_the_models_own_loss_and_gradients(arch, monkeypatch):
    monkeypatch.setattr(lm, "CHUNK_ROWS", 16)  # several chunks, the last one short
    model, data = small(arch), batch()
    fused = fused_head(model)
    assert fused is not None
    want, want_grads = loss_and_grads(model, data, None)
    got, got_grads = loss_and_grads(model, data, fused)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert got_grads.keys() == want_grads.keys()
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_under_bf16_autocast_it_matches_the_models_loss_to_bf16_rounding():
    model, data = small("gpt_neox"), batch()
    fused = fused_head(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, want_grads = loss_and_grads(model, data, None)
        got, got_grads = loss_and_grads(model, data, fused)
    assert abs(got.item() - want.item()) < 1e-2
    for name, grad in want_grads.items():
        assert (got_grads[name] - grad).norm() <= 0.02 * grad.norm() + 1e-6, name


def test_a_lora_model_gets_the_fused_loss_and_the_same_adapter_gradients():
    model = apply_lora(small("gpt_neox"), FinetuneConfig(method="lora", lora_r=2, embed_r=2))
    for p in model.parameters():  # LoRA's B starts at zero, which would leave A's gradient zero
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.05)
    data = batch()
    fused = fused_head(model)
    assert fused is not None
    want, want_grads = loss_and_grads(model, data, None)
    got, got_grads = loss_and_grads(model, data, fused)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert want_grads and got_grads.keys() == want_grads.keys()
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_a_masked_lm_or_a_head_with_a_bias_keeps_the_models_loss():
    assert fused_head(small("modernbert")) is None
    model = small("gpt2")
    head = model.get_output_embeddings()
    model.set_output_embeddings(torch.nn.Linear(head.in_features, head.out_features, bias=True))
    assert fused_head(model) is None


def test_a_batch_without_any_target_has_zero_loss_and_no_gradient():
    model, data = small("gpt_neox"), batch()
    data["labels"][:] = -100
    loss, grads = loss_and_grads(model, data, fused_head(model))
    assert loss.item() == 0.0
    assert all(g.abs().max() == 0 for g in grads.values())
