"""GRPO maths: group advantages, per-token log-probs, clipped surrogate loss and KL.

Notation: a batch holds ``num_prompts`` prompts with ``G`` sampled completions each, so
``N = num_prompts * G`` rows, laid out as consecutive blocks of ``G`` per prompt. ``B`` is the
number of rows in a (micro-)batch, ``C`` the completion length, ``V`` the vocabulary size.

DeepSeekMath GRPO (Shao et al. 2024, arXiv:2402.03300) maximises, per group,

    J = 1/G sum_i 1/|o_i| sum_t [ min(rho_it * A_i, clip(rho_it, 1 - eps, 1 + eps) * A_i)
                                  - beta * KL_it ]
    rho_it = pi_theta(o_it | q, o_i,<t) / pi_old(o_it | q, o_i,<t)
    A_i    = (r_i - mean(r_1..r_G)) / std(r_1..r_G)
    KL_it  = pi_ref / pi_theta - log(pi_ref / pi_theta) - 1          (the "k3" estimator)

How this module departs from the paper (each departure is a switch, defaults in brackets):

* Clip-higher (DAPO, Yu et al. 2025, arXiv:2503.14476): the upper clip bound uses its own
  ``epsilon_high`` (default: ``epsilon``) so low-probability tokens can grow more before the
  clip stops them, which keeps entropy from collapsing.
* Token-level loss (DAPO) [``loss_type="dapo"``]: sum over every valid token of the batch divided
  by the number of valid tokens, instead of the per-sequence mean. With the per-sequence mean a
  token in a long completion weighs less than one in a short completion.
  ``loss_type="grpo"`` keeps the paper's aggregation; ``"bnpo"`` is the same as ``"dapo"`` here.
* Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training", arXiv:2503.20783):
  ``scale_rewards="none"`` drops the division by the group std (it up-weights questions that are
  nearly always or nearly never solved) and ``loss_type="dr_grpo"`` divides by the constant
  ``B * max_completion_length`` so the loss has no length bias at all.
* ``scale_rewards="batch"``: group mean but batch std (the "Lite PPO" recipe of Liu et al. 2025,
  "Tricks or Traps?", arXiv:2508.08221), which is more robust than a per-group std.
* KL uses Schulman's k3 estimator ("Approximating KL Divergence", 2020,
  http://joschu.net/blog/kl-approx.html): unbiased, always >= 0, low variance. Like DAPO and TRL we
  default to ``beta = 0`` (no reference model).
* GSPO (Zheng et al. 2025, "Group Sequence Policy Optimization", arXiv:2507.18071)
  [``importance_sampling_level="token"``]: with ``"sequence"`` every token of completion i uses
  the length-normalised sequence ratio ``s_i = exp(1/|o_i| sum_t (logp_it - logp_old_it))``,
  clipped to ``[1 - sequence_epsilon, 1 + sequence_epsilon]`` (default 3e-4, the paper's range:
  a mean log-ratio moves far less than a token's). See :func:`sequence_log_ratio`.
* Truncated importance sampling against the sampler (TIS; Yao et al. 2025, "Your Efficient RL
  Framework Secretly Brings You Off-Policy RL Training"; TRL's vLLM correction)
  [``sampler_ratio_cap=3.0``]: the decode loop that drew the tokens rounds differently from the
  training forward that computes ``pi_old``, so every token's loss term is multiplied by the
  detached ``w_it = min(pi_old / pi_sampler, C)``. See :func:`sampler_ratio`.
* Advantages add ``eps = 1e-4`` to the std, and the std is Bessel-corrected (``unbiased=True``),
  both exactly as TRL's ``GRPOTrainer`` does; a group of identical rewards thus gets advantage 0.

Sampling and training must see the same distribution, so log-probs divide the logits by the
sampling temperature and use the position ids that ``generate`` derives from the attention mask
(a no-op for RoPE models, which are shift-invariant, but not for absolute position embeddings).
"""

from dataclasses import dataclass

import torch
from torch import Tensor

VALID_LOSS_TYPES = ("grpo", "bnpo", "dapo", "dr_grpo")
VALID_IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")


def sequence_log_ratio(log_probs: Tensor, old_log_probs: Tensor, mask: Tensor) -> Tensor:
    """GSPO's per-token log-ratio ``sg(m_i) + logp_it - sg(logp_it)`` (the "GSPO-token" form).

    ``m_i = 1/|o_i| sum_t mask_it (logp_it - old_it)`` is the mean log-ratio of row i, so the
    value at every token is ``log s_i``, and ``d s_it / d logp_it = s_i``. Summed over the
    |o_i| tokens this is the gradient of GSPO's sequence objective, whose ``s_i`` depends on
    every token with ``d s_i / d logp_it = s_i / |o_i|`` (TRL's (B, 1) ratio): both give the
    same loss and the same gradient for every ``loss_type``. Inputs (B, C), masked to 0 off
    the completion; returns (B, C).
    """
    lengths = mask.sum(dim=1).clamp(min=1.0)  # (B,)
    mean_log_ratio = ((log_probs - old_log_probs) * mask).sum(dim=1) / lengths  # (B,)
    return mean_log_ratio.detach().unsqueeze(1) + log_probs - log_probs.detach()  # (B, C)


def sampler_ratio(old_log_probs: Tensor, sampler_log_probs: Tensor, mask: Tensor) -> Tensor:
    """Per-token ``exp(old - sampler)``: how much likelier the training forward finds each
    token than the sampler that drew it. Detached; NaN where it is not defined: off ``mask``
    and where ``sampler_log_probs`` is NaN (tokens no sampler drew: the calculator's, a guided
    group's reference row). Inputs (B, C); returns (B, C).
    """
    measured = mask.bool() & ~torch.isnan(sampler_log_probs)  # (B, C)
    log_ratio = old_log_probs.detach() - sampler_log_probs  # (B, C)
    return torch.exp(log_ratio.masked_fill(~measured, float("nan")))  # (B, C)


def kl_k3(log_probs: Tensor, ref_log_probs: Tensor) -> Tensor:
    """Per-token k3 KL estimate ``exp(ref - logp) - (ref - logp) - 1``: 0 iff equal, >= 0."""
    log_ratio = ref_log_probs - log_probs  # (B, C)
    return torch.exp(log_ratio) - log_ratio - 1.0  # (B, C)


@dataclass
class LossOutput:
    """Result of :func:`grpo_loss`.

    ``loss`` carries the gradient; every other field is detached and is a mean over the valid
    tokens of this (micro-)batch: ``clip_fraction`` (either side), ``low_clip_fraction`` (ratio
    below ``1 - epsilon`` with A < 0), ``high_clip_fraction`` (ratio above ``1 + epsilon_high``
    with A > 0) and ``kl`` (k3; None when no ``ref_log_probs`` were given).
    """

    loss: Tensor
    clip_fraction: Tensor
    low_clip_fraction: Tensor
    high_clip_fraction: Tensor
    kl: Tensor | None
    # (B, C) :func:`sampler_ratio`, untruncated, NaN where undefined (None: no sampler log-probs)
    sampler_ratio: Tensor | None = None


def grpo_loss(
    log_probs: Tensor,
    old_log_probs: Tensor | None,
    advantages: Tensor,
    completion_mask: Tensor,
    *,
    loss_type: str = "dapo",
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    beta: float = 0.0,
    ref_log_probs: Tensor | None = None,
    max_completion_length: int | None = None,
    num_items_in_batch: float | None = None,
    importance_sampling_level: str = "token",
    sequence_epsilon: float = 3e-4,
    sampler_log_probs: Tensor | None = None,
    sampler_ratio_cap: float | None = None,
) -> LossOutput:
    """Clipped GRPO surrogate ``-min(rho * A, clip(rho, 1 - eps, 1 + eps_high) * A) + beta * KL``.

    Args:
        log_probs: (B, C) current policy log-probs, with grad.
        old_log_probs: (B, C) log-probs under the sampling policy, or None for the on-policy
            case (mu = 1): then old = log_probs.detach(), the ratio is 1 and the gradient is the
            REINFORCE gradient ``A * grad logp``.
        advantages: (B,). completion_mask: (B, C), 1 on completion tokens up to the first EOS.
        loss_type: "grpo" (per-sequence mean, then mean over all B rows), "bnpo"/"dapo" (sum over
            valid tokens / valid token count), "dr_grpo" (sum / (B * max_completion_length)).
        num_items_in_batch: for "bnpo"/"dapo" only, replaces the local token count. Pass the valid
            token count of the whole optimiser step (all micro-batches; divided by the world size
            when DDP averages gradients over ranks) so that summing micro-batch losses yields the
            full-batch loss exactly. Ignored by "grpo" and "dr_grpo", whose normalisers don't
            depend on the batch's token count.
        importance_sampling_level: "token" (the ratio above) or "sequence" (GSPO: each token
            uses its row's ratio ``s_i``, see :func:`sequence_log_ratio`, clipped to
            ``[1 - sequence_epsilon, 1 + sequence_epsilon]``; ``epsilon``/``epsilon_high`` are
            then unused). On-policy (old = None) both levels give the same loss and gradient.
        sampler_log_probs: (B, C) log-probs of the tokens under the sampler that drew them, NaN
            where none drew them; gives ``LossOutput.sampler_ratio``.
        sampler_ratio_cap: C > 0 multiplies each token's clipped surrogate by the detached
            ``min(exp(old - sampler), C)`` (1 where the ratio is undefined), at either
            importance-sampling level, as TRL's ``token_truncate``; the KL term is not weighted.
            None or 0: off, the loss is exactly the uncorrected one.
    """
    if loss_type not in VALID_LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {VALID_LOSS_TYPES}, got {loss_type!r}")
    if loss_type == "dr_grpo" and max_completion_length is None:
        raise ValueError("loss_type='dr_grpo' needs max_completion_length")
    if beta > 0.0 and ref_log_probs is None:
        raise ValueError("beta > 0 needs ref_log_probs")
    if importance_sampling_level not in VALID_IMPORTANCE_SAMPLING_LEVELS:
        raise ValueError(
            f"importance_sampling_level must be one of {VALID_IMPORTANCE_SAMPLING_LEVELS}, "
            f"got {importance_sampling_level!r}"
        )
    epsilon_high = epsilon if epsilon_high is None else epsilon_high
    if importance_sampling_level == "sequence":
        epsilon = epsilon_high = sequence_epsilon

    valid = completion_mask.bool()  # (B, C)
    mask = valid.to(log_probs.dtype)  # (B, C)
    # Padding positions may hold -inf/NaN log-probs; zero them before any exp so that neither the
    # loss nor its gradient sees a NaN (0 * NaN is NaN, so multiplying by the mask is not enough).
    log_probs = log_probs.masked_fill(~valid, 0.0)  # (B, C)
    if old_log_probs is None:
        old_log_probs = log_probs.detach()  # (B, C)
    else:
        old_log_probs = old_log_probs.detach().masked_fill(~valid, 0.0)  # (B, C)

    weights = None  # (B, C) the truncated sampler ratio, when applied
    to_sampler = None
    if sampler_log_probs is not None:
        to_sampler = sampler_ratio(old_log_probs, sampler_log_probs, valid)  # (B, C)
        if sampler_ratio_cap:
            weights = to_sampler.clamp(max=sampler_ratio_cap).nan_to_num(nan=1.0)  # (B, C)

    token_advantages = advantages.detach().to(log_probs.dtype).unsqueeze(1)  # (B, 1)
    if importance_sampling_level == "sequence":
        log_ratio = sequence_log_ratio(log_probs, old_log_probs, mask)  # (B, C)
    else:
        log_ratio = log_probs - old_log_probs  # (B, C)
    ratio = torch.exp(log_ratio)  # (B, C)
    clipped_ratio = torch.clamp(ratio, 1.0 - epsilon, 1.0 + epsilon_high)  # (B, C)
    per_token_loss = -torch.minimum(
        ratio * token_advantages, clipped_ratio * token_advantages
    )  # (B, C)
    if weights is not None:
        per_token_loss = per_token_loss * weights.to(per_token_loss.dtype)  # (B, C)

    per_token_kl = None
    if ref_log_probs is not None:
        ref_log_probs = ref_log_probs.detach().masked_fill(~valid, 0.0)  # (B, C)
        per_token_kl = kl_k3(log_probs, ref_log_probs)  # (B, C)
        if beta > 0.0:
            per_token_loss = per_token_loss + beta * per_token_kl  # (B, C)

    masked_loss = per_token_loss * mask  # (B, C)
    token_count = mask.sum().clamp(min=1.0)  # ()
    if loss_type == "grpo":
        sequence_lengths = mask.sum(dim=1).clamp(min=1.0)  # (B,)
        loss = (masked_loss.sum(dim=1) / sequence_lengths).mean()  # ()
    elif loss_type in ("bnpo", "dapo"):
        normaliser = token_count if num_items_in_batch is None else num_items_in_batch
        loss = masked_loss.sum() / normaliser  # ()
    else:
        loss = masked_loss.sum() / (log_probs.shape[0] * max_completion_length)  # ()

    with torch.no_grad():
        is_low_clipped = (ratio < 1.0 - epsilon) & (token_advantages < 0)  # (B, C)
        is_high_clipped = (ratio > 1.0 + epsilon_high) & (token_advantages > 0)  # (B, C)
        low_clip_fraction = (is_low_clipped & valid).sum() / token_count  # ()
        high_clip_fraction = (is_high_clipped & valid).sum() / token_count  # ()
        mean_kl = None  # () when a reference is given
        if per_token_kl is not None:
            mean_kl = (per_token_kl * mask).sum() / token_count  # ()
    return LossOutput(
        loss=loss,
        clip_fraction=low_clip_fraction + high_clip_fraction,  # disjoint: A has one sign
        low_clip_fraction=low_clip_fraction,
        high_clip_fraction=high_clip_fraction,
        kl=mean_kl,
        sampler_ratio=to_sampler,
    )
