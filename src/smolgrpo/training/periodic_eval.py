"""The eval of `run.eval_every` during training: accuracy on the eval split, logged with the
step's metrics as `eval/...`, without shifting the training RNG."""

from __future__ import annotations

import torch

from smolgrpo.models import distributed as dist_utils
from smolgrpo.runs.interrupts import StopRequested


def periodic_eval(trainer) -> dict:
    """The `eval/` metrics of the trainer's model now (rank 0; {} elsewhere, or when a stop
    cut the eval short, which sets `trainer.eval_cut_short`)."""
    from smolgrpo.runs.metrics_log import PERIODIC_EVAL_KEYS

    trainer.phase("evaluating")
    result = {}
    if trainer.is_main or trainer.sharded:  # under FSDP every rank takes part in each forward
        if trainer.eval_problems is None:
            trainer.eval_problems = trainer.task.load(
                trainer.config.data.eval_split, trainer.config.run.eval_limit
            )
        rng_state = torch.get_rng_state()  # evaluation must not shift the training RNG
        try:
            with trainer.autocast():
                metrics = _evaluate(trainer)
        except StopRequested:  # the step is finished and kept; only its eval is lost
            metrics, trainer.eval_cut_short = None, True
        finally:
            torch.set_rng_state(rng_state)
        if trainer.is_main and metrics is not None:
            result = {f"eval/{k}": metrics[k] for k in PERIODIC_EVAL_KEYS}
    dist_utils.barrier()
    return result


def _evaluate(trainer) -> dict:
    from smolgrpo.evaluation.evaluate import evaluate
    from smolgrpo.evaluation.settings import EvalSettings

    settings = EvalSettings(
        template=trainer.template,
        few_shot=trainer.few_shot,
        batch_size=trainer.config.run.eval_batch_size,
        max_new_tokens=trainer.config.sampling.max_completion_length,
        reward_weights=trainer.config.rewards.weights,
        overlong_buffer=trainer.config.rewards.overlong_buffer,
        answer_check=trainer.task.answer_check,
        calculator=trainer.tools,
        synced=trainer.sharded,
    )
    metrics, _ = evaluate(
        trainer.model,
        trainer.tokenizer,
        trainer.eval_problems,
        settings,
        show_progress=False,
        should_stop=trainer.stop_pending,
    )
    return metrics
