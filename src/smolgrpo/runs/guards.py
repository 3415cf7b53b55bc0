"""Guards that turn numerical and resource faults into a skipped step or a one-line error.

Why a separate module: the trainer's loop should read top to bottom, and these checks are
policy (how many bad steps to tolerate, which setting to suggest when memory runs out) that is
easier to test on its own.

- A NaN or inf loss or gradient norm skips the optimizer update (gradients zeroed, the LR
  schedule still advances so a resumed run stays on time). One bad step is usually a single
  unlucky batch; `optim.max_bad_steps` in a row means the run has diverged, and it stops before
  writing a checkpoint, so the last good one stays the newest.
- Out of memory and a full disk are not bugs but limits of the machine: they become
  `SmolGRPOError`s (one `error:` line, exit 2) that say what to change.
"""

from __future__ import annotations

import contextlib
import math

from smolgrpo.errors import SmolGRPOError, is_disk_full


def step_schedule(scheduler) -> None:
    """`scheduler.step()`, also on a step whose update was skipped (so the schedule stays on
    time), without PyTorch's warning that the scheduler stepped before the optimizer: on a
    skipped step that is what is meant."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
        scheduler.step()


def is_finite_step(loss: float, grad_norm: float) -> bool:
    """False when the loss or the (total, pre-clipping) gradient norm is NaN or inf.

    A NaN in any log-prob reaches the loss, and a NaN or inf in any gradient reaches the total
    norm, so these two scalars cover log-probs, loss and gradients."""
    return math.isfinite(float(loss)) and math.isfinite(float(grad_norm))


def count_bad_steps(in_a_row: int, metrics: dict, max_bad_steps: int, run_dir) -> int:
    """The new count of consecutive skipped steps; raises once it reaches `max_bad_steps`."""
    if not metrics.get("bad_steps", 0):
        return 0
    in_a_row += 1
    if in_a_row >= max_bad_steps:
        from smolgrpo.runs.checkpoint import latest_good_checkpoint

        checkpoint = latest_good_checkpoint(run_dir)
        kept = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint yet"
        raise SmolGRPOError(
            f"step {metrics['step']}: NaN/inf loss or gradients for {in_a_row} steps in a row "
            f"(optim.max_bad_steps={max_bad_steps}); stopped, {kept}. Lower "
            "optim.learning_rate or optim.max_grad_norm, or use model.dtype=float32, then --resume"
        )
    return in_a_row


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError):
        return True
    try:
        import torch

        if isinstance(error, torch.cuda.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def out_of_memory_message(error: BaseException, config=None) -> str:
    """Which settings to lower, with their current values when the training config is known."""
    where = "CUDA out of memory" if "cuda" in f"{type(error).__name__} {error}".lower() else ""
    if config is None:  # `smolgrpo eval`, or before the config was read
        return (
            f"{where or 'out of memory'}; lower --batch-size, --max-new-tokens or --num-samples "
            "(training: optim.micro_batch_size, sampling.num_generations, "
            "sampling.max_completion_length, or set model.gradient_checkpointing=true)"
        )
    optim, sampling = config.optim, config.sampling
    return (
        f"{where or 'out of memory'} while training; lower optim.micro_batch_size "
        f"(now {optim.micro_batch_size}), sampling.num_generations "
        f"(now {sampling.num_generations}) or sampling.max_completion_length "
        f"(now {sampling.max_completion_length}), or set model.gradient_checkpointing=true"
        + (" (now false)" if not config.model.gradient_checkpointing else "")
    )


def disk_full_message(error: BaseException) -> str:
    filename = getattr(error, "filename", None)
    where = f" writing {filename}" if filename else ""
    return (
        f"disk full{where}; the newest complete checkpoint is intact: free some space "
        "(or lower run.keep_checkpoints) and continue with --resume"
    )


def resource_error_message(error: BaseException, config=None) -> str | None:
    """A one-line message for out-of-memory or disk-full errors, None for anything else."""
    if is_out_of_memory(error):
        return out_of_memory_message(error, config)
    if is_disk_full(error):
        return disk_full_message(error)
    return None


@contextlib.contextmanager
def resource_errors(config=None):
    """Re-raise out-of-memory and disk-full errors as one-line `SmolGRPOError`s."""
    try:
        yield
    except SmolGRPOError:
        raise
    except Exception as error:
        message = resource_error_message(error, config)
        if message is None:
            raise
        raise SmolGRPOError(message) from error
