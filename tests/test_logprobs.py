"""Tempered log-probs under bf16: the logits are divided by the temperature after the float32
upcast, as the sampler does, not in bf16 (which rounds every tempered logit to 8 bits)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from smolgrpo.algo.log_probs import per_token_log_probs, selective_log_softmax, token_entropy

TEMPERATURE = 0.7


def bf16_logits() -> torch.Tensor:
    torch.manual_seed(0)
    return (torch.randn(2, 5, 50) * 8).to(torch.bfloat16)  # (B, T, V)


def float32_reference(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    tempered = logits.float() / TEMPERATURE  # (B, T, V): the division on float32 values
    return torch.log_softmax(tempered, dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)


def test_selective_log_softmax_divides_by_the_temperature_in_float32():
    logits = bf16_logits()
    ids = torch.randint(0, 50, (2, 5))
    log_probs = selective_log_softmax(logits, ids, TEMPERATURE)
    assert log_probs.dtype == torch.float32
    assert torch.allclose(log_probs, float32_reference(logits, ids), atol=1e-5)
    # dividing in bf16 first (the old order) is measurably different: the test can fail
    old = selective_log_softmax(logits / TEMPERATURE, ids)
    assert (old - float32_reference(logits, ids)).abs().max() > 1e-3


def test_token_entropy_divides_by_the_temperature_in_float32():
    logits = bf16_logits()
    tempered = logits.float() / TEMPERATURE
    expected = -(torch.softmax(tempered, -1) * torch.log_softmax(tempered, -1)).sum(-1)
    assert torch.allclose(token_entropy(logits, TEMPERATURE), expected, atol=1e-5)


def test_per_token_log_probs_of_a_bf16_model_are_tempered_in_float32():
    logits = bf16_logits()  # what the model returns for 5 completion tokens + 1
    input_ids = torch.randint(0, 50, (2, 7))

    def model(**kwargs):
        assert kwargs["logits_to_keep"] == 5
        return SimpleNamespace(logits=logits)

    log_probs = per_token_log_probs(
        model, input_ids, torch.ones_like(input_ids), 4, temperature=TEMPERATURE
    )
    expected = float32_reference(logits[:, :-1], input_ids[:, -4:])
    assert torch.allclose(log_probs, expected, atol=1e-5)
