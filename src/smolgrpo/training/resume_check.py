"""What `--resume` may change in a recipe, and what it does with a change.

Every checkpoint records the config it was written with (state.json, checkpoint.py). On
`--resume` the recipe given is compared with it:

- Refused, in one `error:` line naming the key, before the model loads: a change of the model
  or its shapes, or of the task, which the checkpoint's weights and data position belong to:
  `model.name`, `model.dtype`, `model.lora` and, with LoRA on, `model.lora_rank`,
  `model.lora_alpha`, `model.lora_target_modules`; the task keys of `data:` (`task`, `source`,
  `train_split`, the field names, `answer_type`, the reasoning-gym dataset, size, seed and
  options). Set the key back, or start a new run in another folder (from the old run's
  `final/` as `model.name`, for instance).
- Applied, and listed in one `warning:` line: every other key. The optimizer's learning rate,
  weight decay and Adam betas are set on its parameter groups after its state has loaded (the
  moments are kept), and the schedule (`learning_rate`, `warmup_steps`, `max_steps`,
  `lr_schedule`, `schedule_length`, `grpo.num_iterations`) is the new recipe's, at the step
  reached: with a new learning rate of 2e-5 at step 100 of a 200-step cosine, the next step uses
  2e-5 times the cosine's factor at step 100. Everything else (max_steps, run.time_limit_s,
  eval, sampling, rewards, save and log settings, ...) applies from the next step on.
  `run.output_dir` is not compared (a run folder may move).

The run's `config.yaml`, `prompt_template.json` and `task.json` are rewritten with the new
recipe only once the checkpoint has loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

from smolgrpo.errors import SmolGRPOError
from smolgrpo.tasks import TASK_FIELDS

MODEL_KEYS = ("model.name", "model.dtype", "model.lora")
LORA_KEYS = ("model.lora_rank", "model.lora_alpha", "model.lora_target_modules")
TASK_KEYS = tuple(f"data.{name}" for name in TASK_FIELDS)
PATH_KEYS = ("model.name", "data.source")  # the same path written two ways is no change
NOT_COMPARED = ("run.output_dir",)
_SHOWN_VALUE_CHARS = 40


def flatten(config: dict) -> dict:
    """{"optim": {"learning_rate": 1e-5}} -> {"optim.learning_rate": 1e-5}."""
    flat = {}
    for section, values in config.items():
        if isinstance(values, dict):
            for key, value in values.items():
                flat[f"{section}.{key}"] = value
        else:
            flat[section] = values
    return flat


def _same(key: str, old, new) -> bool:
    if old == new:
        return True
    if key in PATH_KEYS and isinstance(old, str) and isinstance(new, str):
        return Path(old).expanduser().resolve() == Path(new).expanduser().resolve()
    return False


def changes(recorded: dict, current: dict) -> list[tuple[str, object, object]]:
    """(key, recorded value, current value) of each key whose value differs, in config order.
    A key only one side has (a config from an older or newer version) is no change."""
    old, new = flatten(recorded), flatten(current)
    return [
        (key, old[key], value)
        for key, value in new.items()
        if key in old and key not in NOT_COMPARED and not _same(key, old[key], value)
    ]


def fixed_keys(recorded: dict, current: dict) -> tuple[str, ...]:
    """The keys a resumed run may not change (the LoRA shape keys only when LoRA is on)."""
    lora = flatten(recorded).get("model.lora") and flatten(current).get("model.lora")
    return MODEL_KEYS + (LORA_KEYS if lora else ()) + TASK_KEYS


def _shown(value) -> str:
    """'auto' for a string, JSON otherwise: 1e-05, true, ["q_proj"]."""
    return repr(value) if isinstance(value, str) else json.dumps(value, default=str)


def check_resume_config(checkpoint: Path, recorded: dict, current: dict) -> None:
    """One line naming the first key whose change the checkpoint cannot be resumed with."""
    fixed = fixed_keys(recorded, current)
    for key, old, new in changes(recorded, current):
        if key in fixed:
            raise SmolGRPOError(
                f"{checkpoint}: cannot resume with a different {key} (the checkpoint's is "
                f"{_shown(old)}, the recipe's {_shown(new)}); a resumed run keeps its model, "
                "LoRA shape and task: set it back, or start a new run in another folder"
            )


def describe_changes(found: list[tuple[str, object, object]]) -> str:
    """'optim.learning_rate 1e-05 -> 2e-05, prompt.system_prompt changed' (long values
    are not shown)."""
    parts = []
    for key, old, new in found:
        old_text, new_text = _shown(old), _shown(new)
        if max(len(old_text), len(new_text)) > _SHOWN_VALUE_CHARS:
            parts.append(f"{key} changed")
        else:
            parts.append(f"{key} {old_text} -> {new_text}")
    return ", ".join(parts)


def apply_optimizer_settings(optimizer, scheduler, config) -> None:
    """The recipe's learning rate, weight decay and betas on the loaded optimizer, and the
    current step's learning rate from the recipe's schedule (build_optimizer's schedule reads
    the config it was built from). With the recipe the checkpoint was made with, every value
    set is the one loaded."""
    optim = config.optim
    for group in optimizer.param_groups:
        group["initial_lr"] = optim.learning_rate
        group["weight_decay"] = optim.weight_decay
        group["betas"] = (optim.adam_beta1, optim.adam_beta2)
    scheduler.base_lrs = [optim.learning_rate] * len(optimizer.param_groups)
    last_lr = [
        base * factor(scheduler.last_epoch)
        for base, factor in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)
    ]
    for group, lr in zip(optimizer.param_groups, last_lr, strict=True):
        group["lr"] = lr
    scheduler._last_lr = last_lr
