import json

import pytest
import torch

from biolab.model import ModelConfig, build_model
from biolab.train import attention
from biolab.train.attention import ATTENTION, CHUNKED_ARCHS, use_chunked_attention


def small(arch: str):
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, n_layer=2, n_head=2, d_model=32, max_positions=64)
    return build_model(cfg, 96, 0, 1, 0).train()


def run(model, autocast: bool):
    x = torch.randint(2, 96, (5, 20), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(x)
    mask[1, 15:] = 0  # right padding, as in a QA batch
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(input_ids=x, labels=x, attention_mask=mask)
    out.loss.backward()
    return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("arch", CHUNKED_ARCHS)
def test_chunked_attention_computes_what_eager_computes(arch, autocast, monkeypatch):
    monkeypatch.setattr(attention, "CHUNK_SCORES", 2 * 2 * 20 * 20)  # chunks of 2 of the 5 sequences
    model = small(arch)
    model.set_attn_implementation("eager")
    want_logits, want_grads = run(model, autocast)
    assert use_chunked_attention(model)
    assert model.config._attn_implementation == ATTENTION
    got_logits, got_grads = run(model, autocast)
    torch.testing.assert_close(got_logits, want_logits, rtol=0, atol=0)
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-6, atol=1e-7, msg=name)


def test_a_saved_model_does_not_need_the_chunked_attention_to_load(tmp_path):
    model = small("gpt_neox")
    use_chunked_attention(model)
    model.save_pretrained(tmp_path)
    assert ATTENTION not in (tmp_path / "config.json").read_text()
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "gpt_neox"


def test_another_architecture_is_left_as_it_is():
    model = small("modernbert")
    before = model.config._attn_implementation
    assert not use_chunked_attention(model)
    assert model.config._attn_implementation == before
