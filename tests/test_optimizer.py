"""build_optimizer picks AdamW's fused kernel where it applies, and it steps as torch's loop."""

from __future__ import annotations

import copy

import torch

from smolgrpo.config.loading import load_config
from smolgrpo.testing.tiny import build_tiny_model
from smolgrpo.training.run_setup import build_optimizer, fused_adamw_applies


def test_fused_adamw_on_cpu_steps_as_the_per_tensor_loop():
    config = load_config(None, ["optim.learning_rate=1e-2", "optim.warmup_steps=0"])
    model = build_tiny_model(32)
    reference = copy.deepcopy(model)
    optimizer, _ = build_optimizer(model, config)
    assert optimizer.defaults["fused"] is True
    loop = torch.optim.AdamW(
        reference.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.0, foreach=False
    )
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        for a, b in zip(model.parameters(), reference.parameters(), strict=True):
            a.grad = torch.randn(a.shape, generator=generator)
            b.grad = a.grad.clone()
        optimizer.step()
        loop.step()
    moved = 0.0
    for a, b, start in zip(model.parameters(), reference.parameters(),
                           build_tiny_model(32).parameters(), strict=True):  # fmt: skip
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        moved = max(moved, float((a - start).abs().max()))
    assert moved > 1e-3  # the steps did move the weights


def test_fused_adamw_is_not_used_where_it_does_not_apply():
    assert fused_adamw_applies([torch.nn.Parameter(torch.zeros(2))])
    assert not fused_adamw_applies([])
    assert not fused_adamw_applies([torch.nn.Parameter(torch.zeros(2, device="meta"))])
    assert not fused_adamw_applies([torch.zeros(2, requires_grad=True)])  # not a Parameter
