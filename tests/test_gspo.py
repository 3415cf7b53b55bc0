"""GSPO's sequence-level importance ratio (grpo.importance_sampling_level: sequence)."""

import math

import pytest
import torch

from smolgrpo.algo.loss import grpo_loss
from smolgrpo.config.schema import GRPOConfig
from smolgrpo.errors import SmolGRPOError

MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])


def _loss_and_grad(log_probs, old, advantages, **kwargs):
    log_probs = log_probs.clone().requires_grad_(True)
    out = grpo_loss(log_probs, old, advantages, MASK, **kwargs)
    out.loss.backward()
    return out, log_probs.grad


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_on_policy_levels_agree(loss_type):
    torch.manual_seed(0)
    log_probs = -torch.rand(2, 3) - 0.1
    advantages = torch.tensor([0.7, -1.3])
    kwargs = {"loss_type": loss_type, "max_completion_length": 3}
    token, token_grad = _loss_and_grad(log_probs, None, advantages, **kwargs)
    seq, seq_grad = _loss_and_grad(
        log_probs, None, advantages, importance_sampling_level="sequence", **kwargs
    )
    torch.testing.assert_close(token.loss, seq.loss)
    torch.testing.assert_close(token_grad, seq_grad)
    # Old log-probs equal to the new ones (num_iterations = 1's first pass): the same again.
    same, same_grad = _loss_and_grad(
        log_probs, log_probs.clone(), advantages, importance_sampling_level="sequence", **kwargs
    )
    torch.testing.assert_close(same.loss, token.loss)
    torch.testing.assert_close(same_grad, token_grad)


def test_hand_computed_sequence_ratio():
    # Row 0: log-ratios 0.1, -0.2, 0.4 -> mean 0.1; row 1: 0.3, 0.1 (third token is padding).
    old = torch.tensor([[-1.0, -2.0, -0.5], [-1.5, -0.7, -3.0]])
    log_ratio = torch.tensor([[0.1, -0.2, 0.4], [0.3, 0.1, 9.0]])
    advantages = torch.tensor([1.0, -1.0])
    out, grad = _loss_and_grad(
        old + log_ratio,
        old,
        advantages,
        loss_type="dapo",
        importance_sampling_level="sequence",
        sequence_epsilon=0.2,
    )
    s0, s1 = math.exp(0.1), math.exp(0.2)  # 1.10517, 1.22140: row 0 inside [0.8, 1.2]
    # Row 1 has A < 0 and s1 > 1.2: min(s1 * A, 1.2 * A) = -s1, the unclipped term.
    expected = (3 * (-s0 * 1.0) + 2 * (-s1 * -1.0)) / 5  # dapo: sum over the 5 tokens / 5
    assert out.loss.item() == pytest.approx(expected, abs=1e-6)
    assert out.loss.item() == pytest.approx(-0.174540, abs=1e-5)
    # d loss / d logp_it = -A_i * s_i / 5 at every valid token (the whole row's ratio), 0 on pad.
    expected_grad = torch.tensor([[-s0 / 5] * 3, [s1 / 5, s1 / 5, 0.0]], dtype=grad.dtype)
    torch.testing.assert_close(grad, expected_grad)
    assert out.clip_fraction.item() == 0.0


def test_per_sequence_mean_matches_trl_broadcast_ratio():
    """TRL's form: one (B, 1) ratio exp(mean log-ratio) with the gradient through the mean."""
    torch.manual_seed(1)
    old = -torch.rand(2, 3) - 0.2
    new = old + 0.05 * torch.randn(2, 3)
    advantages = torch.tensor([0.4, -0.9])
    for loss_type in ("grpo", "dapo"):
        ours, ours_grad = _loss_and_grad(
            new, old, advantages, loss_type=loss_type, importance_sampling_level="sequence"
        )
        log_probs = new.clone().requires_grad_(True)
        mean = ((log_probs - old) * MASK).sum(-1) / MASK.sum(-1)
        ratio = torch.exp(mean).unsqueeze(-1)  # (B, 1)
        clipped = torch.clamp(ratio, 1 - 3e-4, 1 + 3e-4)
        adv = advantages.unsqueeze(1)
        per_token = -torch.minimum(ratio * adv, clipped * adv) * MASK
        if loss_type == "grpo":
            trl = (per_token.sum(-1) / MASK.sum(-1)).mean()
        else:
            trl = per_token.sum() / MASK.sum()
        trl.backward()
        torch.testing.assert_close(ours.loss, trl)
        torch.testing.assert_close(ours_grad, log_probs.grad)


def test_sequence_clipping():
    old = torch.zeros(2, 3)
    # Row 0: mean log-ratio (0.02 + 0 + 0.01) / 3 = 0.01 > log(1 + 3e-4), with A > 0: clipped.
    # Row 1: mean (-0.01 - 0.01) / 2 = -0.01 < log(1 - 3e-4), with A < 0: clipped.
    new = torch.tensor([[0.02, 0.0, 0.01], [-0.01, -0.01, 0.0]])
    advantages = torch.tensor([2.0, -1.0])
    out, grad = _loss_and_grad(
        new, old, advantages, loss_type="grpo", importance_sampling_level="sequence"
    )
    expected = (-(1 + 3e-4) * 2.0 + (1 - 3e-4) * 1.0) / 2  # per-row means, then over rows
    assert out.loss.item() == pytest.approx(expected, abs=1e-6)
    assert torch.count_nonzero(grad) == 0  # a clipped sequence gets no gradient at all
    assert out.high_clip_fraction.item() == pytest.approx(3 / 5)
    assert out.low_clip_fraction.item() == pytest.approx(2 / 5)
    # Token level with eps 0.2: the same ratios are far inside the clip range.
    token, token_grad = _loss_and_grad(new, old, advantages, loss_type="grpo")
    assert torch.count_nonzero(token_grad) == 5
    assert token.clip_fraction.item() == 0.0


def test_config_validation():
    GRPOConfig(importance_sampling_level="sequence").validate()
    with pytest.raises(SmolGRPOError, match="importance_sampling_level"):
        GRPOConfig(importance_sampling_level="seq").validate()
    with pytest.raises(SmolGRPOError, match="sequence_epsilon"):
        GRPOConfig(sequence_epsilon=0.0).validate()
    with pytest.raises(ValueError, match="importance_sampling_level"):
        grpo_loss(
            torch.zeros(1, 1), None, torch.zeros(1), torch.ones(1, 1), importance_sampling_level="x"
        )
