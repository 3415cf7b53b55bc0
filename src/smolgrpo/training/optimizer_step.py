"""The end of every optimizer step, GRPO's and SFT's: gradients -> clip -> NaN guard -> update.

The gradients accumulated by the step's backward passes are summed across ranks (FSDP has
already reduce-scattered them), clipped, and applied unless the step is not finite
(guards.py): then the update is skipped on every rank alike. The scheduler steps either way,
so the learning-rate schedule stays on time.
"""

from __future__ import annotations

import torch

from smolgrpo.models import distributed as dist_utils
from smolgrpo.models import fsdp
from smolgrpo.runs import guards


def optimizer_step(trainer, loss: float) -> tuple[float, bool]:
    """Apply the accumulated gradients; returns (pre-clipping grad norm, whether skipped).

    `loss` is the value the NaN guard judges together with the gradient norm (GRPO: this
    iteration's own loss, SFT: the step's loss)."""
    if not trainer.sharded:  # FSDP has already reduce-scattered (summed) the gradients
        dist_utils.all_reduce_gradients(trainer.model)
    grad_norm = torch.nn.utils.clip_grad_norm_(
        [p for p in trainer.model.parameters() if p.requires_grad],
        trainer.config.optim.max_grad_norm,
    )
    grad_norm = fsdp.local_value(grad_norm)
    # NaN/inf in log-probs, loss or gradients: skip the update on every rank alike (the
    # zero_grad below drops the gradients).
    skipped = dist_utils.any_true(not guards.is_finite_step(loss, grad_norm))
    if not skipped:
        trainer.optimizer.step()
    guards.step_schedule(trainer.scheduler)
    trainer.optimizer.zero_grad(set_to_none=True)
    return float(grad_norm), skipped
