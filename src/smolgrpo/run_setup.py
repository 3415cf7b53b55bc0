"""Run directory, model set-up for training (dtype, LoRA, checkpointing) and the final save."""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from smolgrpo import distributed as dist_utils
from smolgrpo.checkpoint import share_weight_files
from smolgrpo.config import Config
from smolgrpo.errors import SmolGRPOError
from smolgrpo.model_card import write_training_card
from smolgrpo.modeling import load_model_and_tokenizer, prepare_tokenizer, resolve_device
from smolgrpo.prompts import PROMPT_TEMPLATE_FILE
from smolgrpo.tasks import TASK_FILE, save_task

RUN_MARKER = "config.yaml"


def prepare_run_dir(run_dir: Path, config: Config, resume: bool, overwrite: bool) -> None:
    """Create the run folder; refuse to mix a new run into an old one unless asked."""
    if run_dir.exists() and any(run_dir.iterdir()):
        if resume:
            if not (run_dir / RUN_MARKER).is_file():
                raise SmolGRPOError(f"{run_dir}: --resume given but this is not a smolgrpo run")
        elif overwrite:
            shutil.rmtree(run_dir)
        else:
            raise SmolGRPOError(
                f"{run_dir}: already holds a run; pass --resume to continue it or --overwrite"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(run_dir / RUN_MARKER)
    (run_dir / "samples").mkdir(exist_ok=True)
    config.prompt.template().save(run_dir / PROMPT_TEMPLATE_FILE)
    save_task(config.data, run_dir / TASK_FILE)


def check_training_dtype(config: Config) -> None:
    """Refuse `model.dtype: float16` for training: fp16 autocast needs loss scaling (a
    GradScaler) or small gradients underflow to 0, and there is none here (bf16 needs none)."""
    if config.model.dtype == "float16":
        raise SmolGRPOError(
            "model.dtype: float16 is not supported for training (no loss scaling); "
            "use bfloat16, float32 or auto"
        )


def setup_model(config: Config, model=None, tokenizer=None, rank: int = 0, sharded: bool = False):
    """(model in train mode, tokenizer, device, autocast dtype or None).

    `sharded` (FSDP): the model stays on the CPU; sharding moves each rank's shard to `device`,
    so the whole model never has to fit there."""
    check_training_dtype(config)
    if dist_utils.is_distributed():
        device = dist_utils.local_device()
    else:
        device = resolve_device(config.model.device)
    load_device = torch.device("cpu") if sharded else device
    if model is None:
        # Weights stay float32 (the optimizer's master copy); bf16 comes from autocast on GPU.
        model, tokenizer = load_model_and_tokenizer(
            config.model.name,
            str(load_device),
            "float32",
            config.model.trust_remote_code,
            config.model.allow_pickle,
        )
    else:
        prepare_tokenizer(tokenizer)
        model = model.to(load_device)
    autocast_dtype = None
    if config.model.dtype == "auto" and device.type == "cuda":
        autocast_dtype = torch.bfloat16
    elif config.model.dtype in ("bfloat16", "float16"):
        autocast_dtype = getattr(torch, config.model.dtype)
    if config.model.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if config.model.lora:
        from peft import LoraConfig, get_peft_model

        from smolgrpo.architectures import lora_target_modules

        model = get_peft_model(
            model,
            LoraConfig(
                r=config.model.lora_rank,
                lora_alpha=config.model.lora_alpha,
                lora_dropout=config.model.lora_dropout,
                target_modules=lora_target_modules(model, config.model.lora_target_modules),
                task_type="CAUSAL_LM",
            ),
        )
    model.train()
    return model, tokenizer, device, autocast_dtype


def save_final_model(trainer, state_dict: dict | None = None) -> Path:
    """`final/`: a plain transformers model (LoRA merged), tokenizer and prompt template.

    `state_dict`: the full weights gathered from an FSDP-sharded model (saved in its place)."""
    final = trainer.run_dir / "final"
    staging = trainer.run_dir / ".tmp-final"
    shutil.rmtree(staging, ignore_errors=True)
    model = trainer.model
    if trainer.config.model.lora:
        import copy

        model = copy.deepcopy(model).merge_and_unload()
    model.config.use_cache = True
    model.save_pretrained(staging, state_dict=state_dict, safe_serialization=True)
    share_weight_files(staging)
    trainer.tokenizer.save_pretrained(staging)
    shutil.copy(trainer.run_dir / PROMPT_TEMPLATE_FILE, staging / PROMPT_TEMPLATE_FILE)
    save_task(trainer.config.data, staging / TASK_FILE)  # also for runs begun before task.json
    write_training_card(staging, trainer.config.to_dict(), trainer.run_dir / "metrics.jsonl")
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    return final


def frozen_copy(model):
    """An unsharded, frozen copy in eval mode (the KL reference model)."""
    import copy

    reference = copy.deepcopy(model).eval()
    for parameter in reference.parameters():
        parameter.requires_grad_(False)
    return reference


@dataclass
class TimeShare:
    """The share of run.time_limit_s the run has used, which the trainer sets before each step
    (the same value on every rank) and a time-length schedule reads."""

    fraction: float = 0.0


def build_optimizer(model, config: Config, time_share: TimeShare | None = None):
    """AdamW over the trainable parameters and its warmup + cosine/constant LR schedule.

    The cosine's progress is the share of max_steps done, or with optim.schedule_length: time
    the larger of that and `time_share.fraction`: the decay then ends with the time limit."""
    optim = config.optim
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        parameters,
        lr=optim.learning_rate,
        weight_decay=optim.weight_decay,
        betas=(optim.adam_beta1, optim.adam_beta2),
    )
    total = optim.max_steps * config.grpo.num_iterations
    warmup = optim.warmup_steps * config.grpo.num_iterations
    by_time = time_share if optim.schedule_length == "time" else None

    def schedule(index: int) -> float:
        if index < warmup:
            return (index + 1) / (warmup + 1)
        if optim.lr_schedule == "constant":
            return 1.0
        progress = (index - warmup) / max(1, total - warmup)
        if by_time is not None:
            progress = max(progress, by_time.fraction)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def refresh_learning_rate(scheduler) -> None:
    """Set each parameter group's lr from the schedule at its current index again: after a new
    TimeShare.fraction, the coming step's lr is the schedule's at the time the step starts."""
    for group, base, factor in zip(
        scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True
    ):
        group["lr"] = base * factor(scheduler.last_epoch)
