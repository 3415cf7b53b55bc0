"""The policy update: GRPO loss over micro-batches -> gradients -> one optimizer step.

`train_on_batch(trainer, batch)` runs `grpo.num_iterations` optimizer steps on one generation
batch: the loss of each micro-batch (algo/loss.py) over the completion log-probs (log_probs.py) is
backpropagated, then optimizer_step.py sums the gradients across ranks, clips and applies them,
unless the step is not finite (guards.py), in which case the update is skipped on every rank
alike. Each iteration is judged on its own loss. The first iteration also measures the ratio
of the training forward's log-probs to the sampler's (sampler_metrics.py).
"""

from __future__ import annotations

import torch

from smolgrpo.algo.loss import grpo_loss
from smolgrpo.models import distributed as dist_utils
from smolgrpo.training.batching import GroupBatch
from smolgrpo.training.log_probs import completion_log_probs
from smolgrpo.training.optimizer_step import optimizer_step
from smolgrpo.training.sampler_metrics import SamplerRatioStats


def train_on_batch(trainer, batch: GroupBatch | None) -> dict:
    """num_iterations optimizer steps on one generation batch; returns loss statistics.

    `batch` is None on a rank that kept no group while another rank did: it still joins
    every collective (token counts, gradient all-reduce) with a zero gradient.
    """
    config = trainer.config
    num_iterations = config.grpo.num_iterations
    rows = 0 if batch is None else batch.completion_ids.shape[0]
    micro = config.optim.micro_batch_size
    slices = [slice(i, min(i + micro, rows)) for i in range(0, rows, micro)]
    # dapo/bnpo normalise by the token count of the whole step on all ranks; gradients are
    # summed across ranks, so each rank divides by the global count. At least 1: when every
    # completion is masked (mask_truncated_completions) the loss is 0, not 0/0 = NaN.
    local_tokens = 0.0 if batch is None else float(batch.completion_mask.sum())
    global_tokens = max(dist_utils.all_sum(local_tokens), 1.0)
    global_rows = dist_utils.all_sum(float(rows))
    old_log_probs, ref_log_probs = fixed_log_probs(trainer, batch, slices)
    totals = {"loss": 0.0, "clip_fraction": 0.0, "kl": 0.0, "grad_norm": 0.0}
    entropy_sum = 0.0  # over this rank's valid tokens, first pass only
    # exp(old - sampler) is the same at every iteration (old is fixed): measured at the first
    sampler_ratios = SamplerRatioStats(config.grpo.sampler_ratio_cap)
    for iteration in range(num_iterations):
        iteration_loss = 0.0  # this optimizer step's own loss: the NaN guard judges it alone
        for part in slices:
            if iteration == 0:  # after the first optimizer update, the step is finished
                trainer.check_stop()
            output, entropy = micro_batch_loss(
                trainer, batch, part, old_log_probs, ref_log_probs, global_tokens
            )
            weight = micro_batch_weight(config.grpo.loss_type, part, global_rows)
            (output.loss * weight).backward()
            if iteration == 0:
                entropy_sum += float((entropy * batch.completion_mask[part]).sum())
                sampler_ratios.add(output.sampler_ratio)
            share = (part.stop - part.start) / rows / num_iterations
            loss = float(output.loss.detach())
            iteration_loss += loss * weight
            totals["loss"] += loss * weight / num_iterations
            totals["clip_fraction"] += float(output.clip_fraction) * share
            if output.kl is not None:
                totals["kl"] += float(output.kl) * share
        grad_norm, skipped = optimizer_step(trainer, iteration_loss)
        totals["grad_norm"] += grad_norm / num_iterations
        if skipped:
            totals["bad_steps"] = totals.get("bad_steps", 0) + 1
    totals["loss"] = dist_utils.all_sum(totals["loss"])
    totals["entropy"] = dist_utils.all_sum(entropy_sum) / global_tokens
    totals.update(sampler_ratios.metrics())
    return totals


def fixed_log_probs(
    trainer, batch: GroupBatch | None, slices: list[slice]
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(old policy's, reference model's) completion log-probs (N, C), each None when unused:
    the old ones for num_iterations > 1, the reference ones for the KL term."""
    config = trainer.config
    old_log_probs = ref_log_probs = None
    if slices and (config.grpo.num_iterations > 1 or trainer.reference_model is not None):
        with torch.no_grad(), trainer.autocast():
            if config.grpo.num_iterations > 1:
                old_log_probs = all_log_probs(trainer, trainer.model, batch, slices)  # (N, C)
            if trainer.reference_model is not None:
                ref_log_probs = all_log_probs(
                    trainer, trainer.reference_model, batch, slices
                )  # (N, C)
    return old_log_probs, ref_log_probs


def micro_batch_loss(
    trainer,
    batch: GroupBatch,
    part: slice,
    old_log_probs: torch.Tensor | None,
    ref_log_probs: torch.Tensor | None,
    global_tokens: float,
):
    """(the GRPO loss output, the entropy (n, C)) of the micro-batch `part` of `batch`."""
    config = trainer.config
    sampler_log_probs = batch.sampler_log_probs
    with trainer.autocast():
        log_probs, entropy = completion_log_probs_of(
            trainer, trainer.model, batch, part, return_entropy=True
        )  # (n, C), (n, C)
        output = grpo_loss(
            log_probs,
            None if old_log_probs is None else old_log_probs[part],
            batch.advantages[part],
            batch.completion_mask[part],
            loss_type=config.grpo.loss_type,
            epsilon=config.grpo.epsilon,
            epsilon_high=config.grpo.epsilon_high,
            importance_sampling_level=config.grpo.importance_sampling_level,
            sequence_epsilon=config.grpo.sequence_epsilon,
            beta=config.grpo.beta,
            ref_log_probs=None if ref_log_probs is None else ref_log_probs[part],
            max_completion_length=config.sampling.max_completion_length,
            num_items_in_batch=global_tokens,
            sampler_log_probs=None if sampler_log_probs is None else sampler_log_probs[part],
            sampler_ratio_cap=config.grpo.sampler_ratio_cap,
        )
    return output, entropy


def micro_batch_weight(loss_type: str, part: slice, global_rows: float) -> float:
    """grpo and dr_grpo average over the rows of their micro-batch: each micro-batch is
    weighted by its share of all rows so the sum is the full-batch loss (dapo and bnpo
    already divide by the step's global token count)."""
    if loss_type in ("dapo", "bnpo"):
        return 1.0
    return (part.stop - part.start) / global_rows


def all_log_probs(trainer, model, batch: GroupBatch, slices: list[slice]) -> torch.Tensor:
    return torch.cat([completion_log_probs_of(trainer, model, batch, s) for s in slices])  # (N, C)


def completion_log_probs_of(trainer, model, batch: GroupBatch, rows: slice, return_entropy=False):
    # Each group's prompt runs once (log_probs.py), except where the KV cache is off in
    # training (gradient checkpointing) or FSDP would see two forwards per backward.
    share_prompt = not (trainer.config.model.gradient_checkpointing or trainer.sharded)
    # Columns past this micro-batch's longest counted completion only hold padding: skip
    # them (the batch is padded to the longest completion of the whole step), then pad the
    # results back to C with zeros, which the completion mask ignores.
    width = batch.completion_ids.shape[1]
    # The last counted column + 1 (not the count: calculator tokens leave holes in the mask).
    counted = batch.completion_mask[rows] > 0  # (n, C)
    columns = torch.arange(1, width + 1, device=counted.device)  # (C,)
    used = max(1, int((counted * columns).max()))
    result = completion_log_probs(
        model,
        batch.prompt_ids[rows],
        batch.prompt_mask[rows],
        batch.completion_ids[rows, :used],
        temperature=trainer.config.sampling.temperature,
        return_entropy=return_entropy,
        share_prompt=share_prompt,
    )  # (n, used) or a pair of them
    pad = width - used
    if pad == 0:
        return result
    padded = [
        torch.nn.functional.pad(t, (0, pad)) for t in (result if return_entropy else [result])
    ]
    return tuple(padded) if return_entropy else padded[0]
