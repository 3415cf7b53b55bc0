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
* Advantages add ``eps = 1e-4`` to the std, and the std is Bessel-corrected (``unbiased=True``),
  both exactly as TRL's ``GRPOTrainer`` does; a group of identical rewards thus gets advantage 0.

Sampling and training must see the same distribution, so log-probs divide the logits by the
sampling temperature and use the position ids that ``generate`` derives from the attention mask
(a no-op for RoPE models, which are shift-invariant, but not for absolute position embeddings).
"""

from dataclasses import dataclass

import torch
from torch import Tensor

VALID_SCALE_REWARDS = ("group", "batch", "none")
VALID_LOSS_TYPES = ("grpo", "bnpo", "dapo", "dr_grpo")


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


def selective_log_softmax(logits: Tensor, token_ids: Tensor, temperature: float = 1.0) -> Tensor:
    """``log_softmax(logits / temperature).gather(token_ids)`` without materialising the full
    log-softmax.

    Args:
        logits: (B, T, V); token_ids: (B, T) integer.
        temperature: divides the logits after the upcast below, as the sampler does: a bf16
            division would round each tempered logit to bf16's 8 bits.

    Returns:
        (B, T) log-probs. Half-precision logits are upcast to float32 one row at a time (bf16
        log-probs are too coarse for importance ratios), so the result is float32 for them and
        the input dtype otherwise.
    """
    low_precision = logits.dtype in (torch.float16, torch.bfloat16)
    row_log_probs = []
    # One batch row at a time: the only full-vocab temporary is (T, V), never (B, T, V).
    for row_logits, row_token_ids in zip(logits, token_ids, strict=True):
        row_logits = row_logits.float() if low_precision else row_logits  # (T, V)
        if temperature != 1.0:
            row_logits = row_logits / temperature  # (T, V)
        chosen_logits = row_logits.gather(-1, row_token_ids.unsqueeze(-1)).squeeze(-1)  # (T,)
        log_normalisers = torch.logsumexp(row_logits, dim=-1)  # (T,)
        row_log_probs.append(chosen_logits - log_normalisers)  # (T,)
    return torch.stack(row_log_probs)  # (B, T)


def per_token_log_probs(
    model,
    input_ids: Tensor,
    attention_mask: Tensor,
    num_completion_tokens: int,
    chunk_size: int | None = None,
    temperature: float = 1.0,
    return_entropy: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Log-probs of the last ``num_completion_tokens`` tokens of prompt+completion ids.

    Logits at positions ``L-C-1 .. L-2`` predict tokens ``L-C .. L-1``; ``logits_to_keep=C+1``
    spares the prompt's logits. Position ids follow ``generate`` (cumulative sum of the
    attention mask) so left-padded prompts get the same positions as when they were sampled
    (RoPE ignores a constant shift, absolute position embeddings do not).

    Args:
        model: a Hugging Face causal LM (accepts ``logits_to_keep`` and ``position_ids``).
        input_ids, attention_mask: (B, L) prompt followed by completion.
        num_completion_tokens: C, with 1 <= C < L.
        chunk_size: if set, run the forward on row chunks of this size so the (B, C, V)
            logits never exist at once. Gradients flow through every chunk.
        temperature: logits are divided by it, so ratios use the sampling distribution.
        return_entropy: also return the per-token entropy of the (tempered) policy, computed
            without gradient, for monitoring entropy collapse.

    Returns:
        (B, C) log-probs (float32 for half-precision models), and (B, C) entropies if asked.
    """
    total_length = input_ids.shape[1]
    if not 1 <= num_completion_tokens < total_length:
        raise ValueError(f"need 1 <= num_completion_tokens < {total_length}")
    position_ids = (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)  # (B, L)
    rows_per_chunk = chunk_size if chunk_size else input_ids.shape[0]
    chunk_log_probs, chunk_entropies = [], []
    for start in range(0, input_ids.shape[0], rows_per_chunk):
        rows = slice(start, start + rows_per_chunk)
        logits = model(
            input_ids=input_ids[rows],
            attention_mask=attention_mask[rows],
            position_ids=position_ids[rows],
            logits_to_keep=num_completion_tokens + 1,
            use_cache=False,
        ).logits  # (b, C + 1, V)
        logits = logits[:, :-1, :]  # (b, C, V): the last logit predicts past the sequence
        completion_ids = input_ids[rows, -num_completion_tokens:]  # (b, C)
        # tempered inside, after the float32 upcast
        chunk_log_probs.append(selective_log_softmax(logits, completion_ids, temperature))
        if return_entropy:
            chunk_entropies.append(token_entropy(logits, temperature))  # (b, C)
    log_probs = torch.cat(chunk_log_probs, dim=0)  # (B, C)
    if return_entropy:
        return log_probs, torch.cat(chunk_entropies, dim=0)  # (B, C), (B, C)
    return log_probs


@torch.no_grad()
def token_entropy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Entropy ``logsumexp(l) - sum softmax(l) * l`` of ``l = logits / temperature`` per
    position, one row at a time, no grad; the division is done in float32.

    Args:
        logits: (B, T, V). Returns (B, T) float32.
    """
    rows = []
    for row_logits in logits:
        row_logits = row_logits.float()  # (T, V)
        if temperature != 1.0:
            row_logits = row_logits / temperature  # (T, V)
        probabilities = torch.softmax(row_logits, dim=-1)  # (T, V)
        rows.append(
            torch.logsumexp(row_logits, dim=-1) - (probabilities * row_logits).sum(-1)
        )  # (T,)
    return torch.stack(rows)  # (B, T)


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
    """
    if loss_type not in VALID_LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {VALID_LOSS_TYPES}, got {loss_type!r}")
    if loss_type == "dr_grpo" and max_completion_length is None:
        raise ValueError("loss_type='dr_grpo' needs max_completion_length")
    if beta > 0.0 and ref_log_probs is None:
        raise ValueError("beta > 0 needs ref_log_probs")
    epsilon_high = epsilon if epsilon_high is None else epsilon_high

    valid = completion_mask.bool()  # (B, C)
    mask = valid.to(log_probs.dtype)  # (B, C)
    # Padding positions may hold -inf/NaN log-probs; zero them before any exp so that neither the
    # loss nor its gradient sees a NaN (0 * NaN is NaN, so multiplying by the mask is not enough).
    log_probs = log_probs.masked_fill(~valid, 0.0)  # (B, C)
    if old_log_probs is None:
        old_log_probs = log_probs.detach()  # (B, C)
    else:
        old_log_probs = old_log_probs.detach().masked_fill(~valid, 0.0)  # (B, C)

    token_advantages = advantages.detach().to(log_probs.dtype).unsqueeze(1)  # (B, 1)
    ratio = torch.exp(log_probs - old_log_probs)  # (B, C)
    clipped_ratio = torch.clamp(ratio, 1.0 - epsilon, 1.0 + epsilon_high)  # (B, C)
    per_token_loss = -torch.minimum(
        ratio * token_advantages, clipped_ratio * token_advantages
    )  # (B, C)

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
    )


def completion_mask_from_ids(
    completion_ids: Tensor,
    eos_token_ids: list[int] | int,
    pad_token_id: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Mask of the tokens the policy actually produced, and which completions were truncated.

    Args:
        completion_ids: (B, C) sampled ids, right-padded after the end of each completion.
        eos_token_ids: one id or several (chat models often stop on more than one).
        pad_token_id: if given and not an EOS id, pad positions are masked too (they were never
            sampled). If pad equals an EOS id, its first occurrence counts as that EOS.

    Returns:
        mask (B, C) int64, 1 up to and including the first EOS and 0 after it; truncated (B,)
        bool, True where no EOS was emitted (the whole row is then kept, minus pads).
    """
    eos_ids = [eos_token_ids] if isinstance(eos_token_ids, int) else list(eos_token_ids)
    eos_id_tensor = torch.tensor(eos_ids, device=completion_ids.device)  # (E,)
    is_eos = torch.isin(completion_ids, eos_id_tensor)  # (B, C)
    truncated = ~is_eos.any(dim=1)  # (B,)
    completion_length = completion_ids.shape[1]
    # argmax returns the first maximum, i.e. the first EOS; rows without EOS keep everything.
    first_eos_index = torch.where(
        truncated,
        torch.full_like(truncated, completion_length, dtype=torch.long),
        is_eos.int().argmax(dim=1),
    )  # (B,)
    positions = torch.arange(completion_length, device=completion_ids.device)  # (C,)
    mask = positions.unsqueeze(0) <= first_eos_index.unsqueeze(1)  # (B, C)
    if pad_token_id is not None and pad_token_id not in eos_ids:
        mask = mask & (completion_ids != pad_token_id)  # (B, C)
    return mask.long(), truncated
