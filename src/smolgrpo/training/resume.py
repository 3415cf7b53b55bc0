"""A run's checkpoints, seen from the trainer: writing one (every `run.save_every` steps, at the
end, on a stop) and resuming from the newest good one on `--resume`.

The recipe is compared with the checkpoint's recorded config before the model loads (refused
changes, resume_check.py); once the checkpoint has loaded, the changed settings the recipe may
bring are applied and listed in one warning, and the metrics rows of steps after the
checkpoint's step are dropped (they are run again).
"""

from __future__ import annotations

from smolgrpo.errors import warn
from smolgrpo.models import distributed as dist_utils
from smolgrpo.models import fsdp
from smolgrpo.runs.checkpoint import (
    latest_good_checkpoint,
    list_checkpoints,
    load_checkpoint,
    recorded_config,
    rng_state,
    save_checkpoint,
)
from smolgrpo.runs.metrics_log import truncate_metrics
from smolgrpo.training.batching import PromptStream
from smolgrpo.training.resume_check import (
    apply_optimizer_settings,
    changes,
    check_resume_config,
    describe_changes,
)


def check_recorded_config(trainer) -> None:
    """Before the model loads: refuse a recipe that changes what the checkpoints hold (the
    model, its LoRA shape, the task), compared with the newest recorded config."""
    for path in reversed(list_checkpoints(trainer.run_dir)):
        recorded = recorded_config(path)
        if recorded is not None:  # the fixed keys are the same in all of a run's checkpoints
            check_resume_config(path, recorded, trainer.config.to_dict())
            return


def resume_from_checkpoint(trainer) -> None:
    """Load the newest good checkpoint into `trainer` (model, optimizer, schedule, step,
    training time, prompt-stream position), with the recipe's optimizer settings applied."""
    checkpoint = latest_good_checkpoint(trainer.run_dir)
    if checkpoint is None:
        if trainer.is_main:
            truncate_metrics(trainer.run_dir / "metrics.jsonl", 0)  # rows of the lost steps
            warn(f"{trainer.run_dir}: no checkpoint to resume from; starting at step 0")
        return
    state = load_checkpoint(
        checkpoint,
        trainer.model,
        trainer.optimizer,
        trainer.scheduler,
        rank=trainer.rank,
        sharded=trainer.sharded,
    )
    # The recipe's optimizer settings and schedule, not the checkpoint's (resume_check.py).
    apply_optimizer_settings(trainer.optimizer, trainer.scheduler, trainer.config)
    trainer.step = trainer.saved_step = state["step"]
    trainer.train_time_s = float(state.get("train_time_s", 0.0))
    trainer.stream = PromptStream(trainer.train_problems, trainer.config.run.seed, **state["data"])
    if trainer.is_main:
        truncate_metrics(trainer.run_dir / "metrics.jsonl", trainer.step)
        print(f"resumed from {checkpoint} (step {trainer.step})")
        _warn_of_changes(trainer.step, state.get("config") or {}, trainer.config.to_dict())


def _warn_of_changes(step: int, recorded: dict, current: dict) -> None:
    found = changes(recorded, current)
    if found:
        warn(
            f"resuming step {step} with a changed recipe, applied from here on: "
            f"{describe_changes(found)}"
        )


def write_checkpoint(trainer) -> None:
    """Checkpoint the trainer's step (written by rank 0; a collective under FSDP)."""
    trainer.phase("saving")
    rank_rng_states = dist_utils.gather_objects([rng_state()])  # every rank's own RNG
    model_state = optimizer_state = None
    if trainer.sharded:  # gathered from all ranks' shards (collective), on rank 0
        model_state = fsdp.trainable_full_state(trainer.model)
        optimizer_state = fsdp.full_optimizer_state(trainer.model, trainer.optimizer)
    if trainer.is_main:
        save_checkpoint(
            trainer.run_dir,
            trainer.step,
            trainer.model,
            trainer.optimizer,
            trainer.scheduler,
            trainer.stream.state(),
            keep=trainer.config.run.keep_checkpoints,
            train_time_s=trainer.training_time_s(),
            config=trainer.config.to_dict(),
            rank_rng_states=rank_rng_states,
            model_state=model_state,
            optimizer_state=optimizer_state,
        )
    trainer.saved_step = trainer.step
    dist_utils.barrier()
