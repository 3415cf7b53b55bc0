"""Group-relative advantages: each completion's reward against its group's (DeepSeekMath).

    A_i = (r_i - mean(r_1..r_G)) / (std(r_1..r_G) + 1e-4)

`scale_rewards` picks the std: the group's (`group`, the paper), the batch's (`batch`, the
"Lite PPO" recipe of Liu et al. 2025, arXiv:2508.08221) or none (`none`, Dr. GRPO). The std is
Bessel-corrected and 1e-4 is added, as TRL's GRPOTrainer does, so a group of equal rewards gets
advantage 0. Rows are laid out as consecutive blocks of G completions per prompt.
"""

import torch
from torch import Tensor

VALID_SCALE_REWARDS = ("group", "batch", "none")


def group_advantages(
    rewards: Tensor,
    num_generations: int,
    scale_rewards: str = "group",
    eps: float = 1e-4,
    *,
    zero_std_tolerance: float = 1e-6,
) -> tuple[Tensor, Tensor]:
    """Group-relative advantages ``A_i = (r_i - mean(group)) / (std + eps)``.

    Args:
        rewards: (N,) with consecutive blocks of ``num_generations`` belonging to one prompt.
        scale_rewards: "group" (per-group std, paper), "batch" (std of all N rewards) or
            "none" (Dr. GRPO: no scaling). Stds are unbiased (Bessel), as in TRL.
        eps: added to the std so a zero-std group divides by ``eps`` instead of 0.
        zero_std_tolerance: a group is zero-std when its std is below this.

    Returns:
        advantages (N,) and zero_std_groups (num_prompts,) bool. Zero-std is always judged per
        group (also for "batch"), because it answers "does this prompt carry any signal?".
    """
    if scale_rewards not in VALID_SCALE_REWARDS:
        raise ValueError(
            f"scale_rewards must be one of {VALID_SCALE_REWARDS}, got {scale_rewards!r}"
        )
    if rewards.dim() != 1 or num_generations < 1 or rewards.numel() % num_generations != 0:
        raise ValueError(
            f"rewards must be 1-D with a length divisible by num_generations={num_generations}, "
            f"got shape {tuple(rewards.shape)}"
        )
    rewards = rewards if rewards.is_floating_point() else rewards.float()  # (N,)
    grouped_rewards = rewards.view(-1, num_generations)  # (P, G)
    group_means = grouped_rewards.mean(dim=1, keepdim=True)  # (P, 1)
    advantages = (grouped_rewards - group_means).reshape(-1)  # (N,)

    # A single sample has no spread; torch's unbiased std would be NaN, so call it 0.
    if num_generations > 1:
        group_stds = grouped_rewards.std(dim=1)  # (P,)
    else:
        group_stds = torch.zeros_like(grouped_rewards[:, 0])  # (P,)
    zero_std_groups = group_stds < zero_std_tolerance  # (P,)

    if scale_rewards == "group":
        advantages = advantages / (group_stds.repeat_interleave(num_generations) + eps)  # (N,)
    elif scale_rewards == "batch":
        batch_std = rewards.std() if rewards.numel() > 1 else rewards.new_zeros(())  # ()
        advantages = advantages / (batch_std + eps)  # (N,)
    return advantages, zero_std_groups


def zero_std_keep_mask(zero_std_groups: Tensor, num_generations: int) -> Tensor:
    """Bool (N,) mask keeping the samples of groups with reward spread (DAPO dynamic sampling).

    A zero-std group has all advantages 0, so it adds no gradient but still dilutes token-count
    normalisers; DAPO drops such groups and refills the batch.
    """
    return (~zero_std_groups).repeat_interleave(num_generations)  # (N,)
