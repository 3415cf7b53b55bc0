"""Tests for smolgrpo.algo.loss, each checked against a hand computation."""

import math

import pytest
import torch
from conftest import build_tiny_model
from torch.testing import assert_close

from smolgrpo.algo.advantages import group_advantages, zero_std_keep_mask
from smolgrpo.algo.log_probs import (
    completion_mask_from_ids,
    per_token_log_probs,
    selective_log_softmax,
)
from smolgrpo.algo.loss import grpo_loss, kl_k3

EXAMPLE_REWARDS = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
# Group 0 has mean 0.25, so deviations are [0.75, -0.25, -0.25, -0.25]; group 1 is constant.
EXAMPLE_DEVIATIONS = torch.tensor([0.75, -0.25, -0.25, -0.25, 0.0, 0.0, 0.0, 0.0])


def tiny_llama(seed: int = 0):
    return build_tiny_model(vocab_size=64, seed=seed).eval()


def manual_log_probs(model, input_ids, attention_mask, num_completion_tokens, temperature=1.0):
    """Full-sequence forward + log_softmax + gather, the obvious (memory-hungry) way."""
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
    log_probs = torch.log_softmax(logits[:, :-1] / temperature, dim=-1)
    targets = input_ids[:, 1:]
    token_log_probs = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return token_log_probs[:, -num_completion_tokens:]


# ---------------------------------------------------------------- advantages


def test_group_scaling_uses_unbiased_group_std():
    advantages, zero_std = group_advantages(EXAMPLE_REWARDS, 4, "group")
    # Unbiased variance of group 0: (0.75^2 + 3 * 0.25^2) / 3 = 0.25, std 0.5.
    assert_close(advantages, EXAMPLE_DEVIATIONS / (0.5 + 1e-4))
    assert zero_std.tolist() == [False, True]


def test_batch_scaling_uses_std_of_all_rewards():
    advantages, zero_std = group_advantages(EXAMPLE_REWARDS, 4, "batch")
    # Batch mean 5/8; squared deviations 0.140625 * 5 + 0.390625 * 3 = 1.875; unbiased / 7.
    assert_close(advantages, EXAMPLE_DEVIATIONS / (math.sqrt(1.875 / 7) + 1e-4))
    assert zero_std.tolist() == [False, True]


def test_no_scaling_is_dr_grpo():
    advantages, zero_std = group_advantages(EXAMPLE_REWARDS, 4, "none")
    assert_close(advantages, EXAMPLE_DEVIATIONS)
    assert zero_std.tolist() == [False, True]


def test_custom_eps_and_single_generation():
    advantages, _ = group_advantages(EXAMPLE_REWARDS, 4, "group", eps=0.5)
    assert_close(advantages, EXAMPLE_DEVIATIONS / 1.0)
    advantages, zero_std = group_advantages(torch.tensor([3.0, 5.0]), 1)
    assert_close(advantages, torch.zeros(2))  # no NaN from a one-sample std
    assert zero_std.tolist() == [True, True]


def test_integer_rewards_and_invalid_arguments():
    advantages, _ = group_advantages(torch.tensor([1, 0, 0, 0, 1, 1, 1, 1]), 4, "none")
    assert_close(advantages, EXAMPLE_DEVIATIONS)
    with pytest.raises(ValueError, match="scale_rewards"):
        group_advantages(EXAMPLE_REWARDS, 4, "prompt")
    with pytest.raises(ValueError, match="divisible"):
        group_advantages(EXAMPLE_REWARDS, 3)


def test_zero_std_keep_mask():
    _, zero_std = group_advantages(EXAMPLE_REWARDS, 4)
    keep = zero_std_keep_mask(zero_std, 4)
    assert keep.tolist() == [True] * 4 + [False] * 4
    assert zero_std_keep_mask(torch.tensor([True, False, True]), 2).tolist() == [
        False,
        False,
        True,
        True,
        False,
        False,
    ]


# ---------------------------------------------------------------- clipped loss


def clipping_example():
    # Row 0 has A = +1, row 1 has A = -1; old log-probs are 0 so ratio = exp(log_probs).
    ratios = torch.tensor([[1.5, 0.5, 1.1], [0.5, 1.5, 0.9]])
    log_probs = ratios.log().requires_grad_()
    return log_probs, torch.zeros(2, 3), torch.tensor([1.0, -1.0]), torch.ones(2, 3)


def test_clipped_surrogate_values_and_gradient():
    log_probs, old_log_probs, advantages, mask = clipping_example()
    output = grpo_loss(log_probs, old_log_probs, advantages, mask, loss_type="dapo")
    # Row 0 (A=+1): min(1.5, 1.2)=1.2 clipped, min(0.5, 0.8)=0.5, 1.1 -> losses -1.2, -0.5, -1.1.
    # Row 1 (A=-1): min(-0.5, -0.8)=-0.8 clipped, min(-1.5, -1.2)=-1.5, -0.9 -> 0.8, 1.5, 0.9.
    assert_close(output.loss, torch.tensor((-1.2 - 0.5 - 1.1 + 0.8 + 1.5 + 0.9) / 6))
    assert_close(output.clip_fraction, torch.tensor(2 / 6))
    assert_close(output.low_clip_fraction, torch.tensor(1 / 6))
    assert_close(output.high_clip_fraction, torch.tensor(1 / 6))
    assert output.kl is None
    output.loss.backward()
    # d(-A * ratio)/d logp = -A * ratio for unclipped tokens, 0 where the clip is active.
    expected = torch.tensor([[0.0, -0.5, -1.1], [0.0, 1.5, 0.9]]) / 6
    assert_close(log_probs.grad, expected)


def test_epsilon_high_lets_positive_tokens_grow_further():
    log_probs = torch.tensor([[math.log(1.25)]], requires_grad=True)
    advantages, mask, old = torch.tensor([2.0]), torch.ones(1, 1), torch.zeros(1, 1)
    symmetric = grpo_loss(log_probs, old, advantages, mask, epsilon=0.2)
    assert_close(symmetric.loss, torch.tensor(-1.2 * 2.0))
    assert_close(symmetric.high_clip_fraction, torch.tensor(1.0))
    asymmetric = grpo_loss(log_probs, old, advantages, mask, epsilon=0.2, epsilon_high=0.28)
    assert_close(asymmetric.loss, torch.tensor(-1.25 * 2.0))
    assert_close(asymmetric.clip_fraction, torch.tensor(0.0))
    (gradient,) = torch.autograd.grad(asymmetric.loss, log_probs)
    assert_close(gradient, torch.tensor([[-1.25 * 2.0]]))
    # epsilon_high does not move the lower bound: ratio 0.75 with A < 0 is still clipped at 0.8.
    low = grpo_loss(
        torch.tensor([[math.log(0.75)]]), old, -advantages, mask, epsilon=0.2, epsilon_high=0.28
    )
    assert_close(low.loss, torch.tensor(0.8 * 2.0))
    assert_close(low.low_clip_fraction, torch.tensor(1.0))


# ---------------------------------------------------------------- KL


def test_kl_k3_values():
    log_probs = torch.log(torch.tensor([[0.5, 0.5, 0.3]]))
    ref_log_probs = torch.log(torch.tensor([[0.5, 0.25, 0.6]]))
    # ref/pi = 0.5 -> 0.5 - ln 0.5 - 1; ref/pi = 2 -> 2 - ln 2 - 1.
    expected = torch.tensor([[0.0, 0.5 + math.log(2.0) - 1.0, 1.0 - math.log(2.0)]])
    assert_close(kl_k3(log_probs, ref_log_probs), expected)
    assert_close(kl_k3(ref_log_probs, ref_log_probs), torch.zeros(1, 3))
    torch.manual_seed(0)
    random_kl = kl_k3(torch.randn(4, 7) * 3, torch.randn(4, 7) * 3)
    assert (random_kl >= 0).all()


def test_kl_penalty_in_loss_and_missing_reference():
    log_probs = torch.log(torch.tensor([[0.5, 0.5]])).requires_grad_()
    ref_log_probs = torch.log(torch.tensor([[0.5, 0.25]]))
    mask, advantages = torch.ones(1, 2), torch.tensor([1.0])
    output = grpo_loss(log_probs, None, advantages, mask, beta=0.1, ref_log_probs=ref_log_probs)
    kl_second_token = 0.5 + math.log(0.5) * -1 - 1.0
    assert_close(output.loss, torch.tensor((-2.0 + 0.1 * kl_second_token) / 2))
    assert_close(output.kl, torch.tensor(kl_second_token / 2))
    with pytest.raises(ValueError, match="ref_log_probs"):
        grpo_loss(log_probs, None, advantages, mask, beta=0.1)
    # beta = 0 with a reference still reports the KL but leaves the loss alone.
    logged = grpo_loss(log_probs, None, advantages, mask, ref_log_probs=ref_log_probs)
    assert_close(logged.loss, torch.tensor(-1.0))
    assert_close(logged.kl, output.kl)


# ---------------------------------------------------------------- aggregation


def aggregation_example():
    # Row 0: 3 valid tokens, A = 1. Row 1: 1 valid token, A = 3. On-policy so loss/token = -A.
    # The padding position holds -inf, which must neither poison the loss nor the gradient.
    log_probs = torch.tensor([[-1.0, -2.0, -0.5, -0.1], [-0.3, -float("inf"), 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    return log_probs.requires_grad_(), torch.tensor([1.0, 3.0]), mask


@pytest.mark.parametrize(
    ("loss_type", "extra", "expected_loss", "row_gradients"),
    [
        # mean(-3/3, -3/1) = -2; d/dlogp = -A_i / (B * len_i).
        ("grpo", {}, -2.0, (-1.0 / 6, -3.0 / 2)),
        # -(3 + 3) / 4 valid tokens; d/dlogp = -A_i / 4.
        ("dapo", {}, -1.5, (-1.0 / 4, -3.0 / 4)),
        ("bnpo", {}, -1.5, (-1.0 / 4, -3.0 / 4)),
        ("dapo", {"num_items_in_batch": 12.0}, -0.5, (-1.0 / 12, -3.0 / 12)),
        # -6 / (B * max_completion_length) = -6 / 10.
        ("dr_grpo", {"max_completion_length": 5}, -0.6, (-1.0 / 10, -3.0 / 10)),
    ],
)
def test_loss_type_normalisers(loss_type, extra, expected_loss, row_gradients):
    log_probs, advantages, mask = aggregation_example()
    output = grpo_loss(log_probs, None, advantages, mask, loss_type=loss_type, **extra)
    assert_close(output.loss, torch.tensor(expected_loss))
    assert_close(output.clip_fraction, torch.tensor(0.0))
    output.loss.backward()
    expected = mask * torch.tensor(row_gradients).unsqueeze(1)
    assert_close(log_probs.grad, expected)


def test_num_items_in_batch_makes_micro_batches_sum_to_full_batch():
    log_probs, advantages, mask = aggregation_example()
    ratios_old = log_probs.detach() + torch.tensor([[0.3, -0.4, 0.1, 0.0], [0.5, 0.0, 0.0, 0.0]])
    old = ratios_old.masked_fill(mask == 0, 0.0)
    full = grpo_loss(log_probs, old, advantages, mask).loss
    total_tokens = float(mask.sum())
    parts = [
        grpo_loss(
            log_probs[i : i + 1],
            old[i : i + 1],
            advantages[i : i + 1],
            mask[i : i + 1],
            num_items_in_batch=total_tokens,
        ).loss
        for i in range(2)
    ]
    assert_close(parts[0] + parts[1], full)


def test_masked_truncated_row_counts_in_grpo_mean_but_not_in_dapo():
    log_probs = torch.zeros(2, 2, requires_grad=True)
    advantages, mask = torch.tensor([2.0, 5.0]), torch.tensor([[1, 1], [0, 0]])
    assert_close(
        grpo_loss(log_probs, None, advantages, mask, loss_type="grpo").loss, torch.tensor(-1.0)
    )
    assert_close(
        grpo_loss(log_probs, None, advantages, mask, loss_type="dapo").loss, torch.tensor(-2.0)
    )
    empty = grpo_loss(log_probs, None, advantages, torch.zeros(2, 2), loss_type="dapo")
    assert_close(empty.loss, torch.tensor(0.0))


def test_invalid_loss_arguments():
    log_probs, advantages, mask = aggregation_example()
    with pytest.raises(ValueError, match="grpo.*bnpo.*dapo.*dr_grpo"):
        grpo_loss(log_probs, None, advantages, mask, loss_type="ppo")
    with pytest.raises(ValueError, match="max_completion_length"):
        grpo_loss(log_probs, None, advantages, mask, loss_type="dr_grpo")


# ---------------------------------------------------------------- log-probs


def test_selective_log_softmax_matches_log_softmax_gather():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11) * 4
    token_ids = torch.randint(0, 11, (3, 5))
    expected = torch.log_softmax(logits, -1).gather(-1, token_ids.unsqueeze(-1)).squeeze(-1)
    assert_close(selective_log_softmax(logits, token_ids), expected)
    # bf16 logits are scored in float32, so they match float32 maths on the rounded logits.
    bf16_logits = logits.bfloat16()
    result = selective_log_softmax(bf16_logits, token_ids)
    assert result.dtype == torch.float32
    reference = torch.log_softmax(bf16_logits.float(), -1).gather(-1, token_ids.unsqueeze(-1))
    assert_close(result, reference.squeeze(-1))


def random_batch(batch_size=4, prompt_length=5, completion_length=6, seed=1):
    generator = torch.Generator().manual_seed(seed)
    length = prompt_length + completion_length
    input_ids = torch.randint(0, 64, (batch_size, length), generator=generator)
    attention_mask = torch.ones(batch_size, length, dtype=torch.long)
    attention_mask[1, :2] = 0  # left padding on two prompts, as generate() produces
    attention_mask[3, :1] = 0
    return input_ids, attention_mask


@pytest.mark.parametrize("chunk_size", [None, 1, 3])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_per_token_log_probs_matches_full_forward(chunk_size, temperature):
    model = tiny_llama()
    input_ids, attention_mask = random_batch()
    with torch.no_grad():
        result = per_token_log_probs(model, input_ids, attention_mask, 6, chunk_size, temperature)
        expected = manual_log_probs(model, input_ids, attention_mask, 6, temperature)
    assert result.shape == (4, 6)
    assert_close(result, expected)


def test_left_padding_does_not_change_log_probs():
    model = tiny_llama()
    input_ids, attention_mask = random_batch()
    with torch.no_grad():
        padded = per_token_log_probs(model, input_ids, attention_mask, 6)
        unpadded = per_token_log_probs(model, input_ids[1:2, 2:], attention_mask[1:2, 2:], 6)
    assert_close(padded[1:2], unpadded)


def test_chunked_log_probs_keep_gradients():
    model = tiny_llama()
    input_ids, attention_mask = random_batch()
    gradients = []
    for chunk_size in (None, 2):
        model.zero_grad()
        per_token_log_probs(model, input_ids, attention_mask, 6, chunk_size).sum().backward()
        gradients.append([parameter.grad.clone() for parameter in model.parameters()])
    for unchunked, chunked in zip(*gradients, strict=True):
        assert_close(chunked, unchunked)


def test_on_policy_gradient_equals_reinforce_on_tiny_model():
    model = tiny_llama()
    input_ids, attention_mask = random_batch()
    attention_mask = torch.ones_like(attention_mask)  # no padding: default positions agree
    completion_mask = torch.tensor(
        [[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0], [1, 0, 0, 0, 0, 0]]
    )
    advantages = torch.tensor([1.5, -0.5, 0.25, -1.25])

    log_probs = per_token_log_probs(model, input_ids, attention_mask, 6)
    grpo_loss(log_probs, None, advantages, completion_mask, loss_type="grpo").loss.backward()
    grpo_gradients = [parameter.grad.clone() for parameter in model.parameters()]

    model.zero_grad()
    logits = model(input_ids).logits[:, :-1]
    token_log_probs = torch.log_softmax(logits, -1).gather(-1, input_ids[:, 1:, None])[..., 0]
    completion_log_probs = token_log_probs[:, -6:]
    sequence_means = (completion_log_probs * completion_mask).sum(1) / completion_mask.sum(1)
    reinforce_loss = -(advantages * sequence_means).mean()
    reinforce_loss.backward()
    for parameter, grpo_gradient in zip(model.parameters(), grpo_gradients, strict=True):
        assert_close(grpo_gradient, parameter.grad)
    assert any(gradient.abs().sum() > 0 for gradient in grpo_gradients)


# ---------------------------------------------------------------- completion mask

EOS, PAD = 2, 0


def test_completion_mask_from_ids():
    completion_ids = torch.tensor(
        [
            [5, 6, EOS, PAD, PAD],  # EOS in the middle
            [5, 6, 7, 8, 9],  # no EOS: truncated, everything kept
            [EOS, PAD, PAD, PAD, PAD],  # EOS first
            [5, EOS, 6, EOS, 7],  # only the first EOS counts
        ]
    )
    mask, truncated = completion_mask_from_ids(completion_ids, EOS)
    expected = [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]]
    assert mask.tolist() == expected
    assert truncated.tolist() == [False, True, False, False]


def test_completion_mask_multiple_eos_ids_and_pad():
    completion_ids = torch.tensor([[5, 3, PAD], [5, EOS, PAD], [5, PAD, PAD]])
    mask, truncated = completion_mask_from_ids(completion_ids, [EOS, 3], pad_token_id=PAD)
    assert mask.tolist() == [[1, 1, 0], [1, 1, 0], [1, 0, 0]]
    assert truncated.tolist() == [False, False, True]
    # When pad doubles as EOS, the first pad is the EOS and is kept.
    mask, truncated = completion_mask_from_ids(completion_ids, PAD, pad_token_id=PAD)
    assert mask.tolist() == [[1, 1, 1], [1, 1, 1], [1, 1, 0]]
    assert truncated.tolist() == [False, False, False]


def test_token_entropy_matches_hand_values():
    from smolgrpo.algo.log_probs import token_entropy

    uniform = torch.zeros(1, 2, 4)  # uniform over 4 tokens: entropy log 4
    peaked = torch.tensor([[[100.0, 0.0, 0.0, 0.0]]])  # almost deterministic: entropy ~0
    two_way = torch.tensor([[[0.0, 0.0, -1e9, -1e9]]])  # two equal tokens: entropy log 2
    torch.testing.assert_close(token_entropy(uniform), torch.full((1, 2), math.log(4)))
    assert float(token_entropy(peaked)) < 1e-6
    torch.testing.assert_close(token_entropy(two_way), torch.tensor([[math.log(2)]]))


def test_per_token_log_probs_returns_entropy_of_tempered_policy():
    from smolgrpo.algo.log_probs import token_entropy

    model = tiny_llama()
    input_ids = torch.randint(0, 64, (2, 9))
    attention_mask = torch.ones_like(input_ids)
    log_probs, entropy = per_token_log_probs(
        model, input_ids, attention_mask, 4, temperature=0.5, return_entropy=True
    )
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, -5:-1] / 0.5
    torch.testing.assert_close(entropy, token_entropy(logits))
    assert log_probs.shape == entropy.shape == (2, 4)
