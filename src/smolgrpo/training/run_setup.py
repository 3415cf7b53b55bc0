"""Run directory, model set-up for training (dtype, LoRA, checkpointing) and the final save."""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from smolgrpo.config.schema import Config
from smolgrpo.config.tools import TOOLS_FILE, save_tools
from smolgrpo.errors import SmolGRPOError
from smolgrpo.models import distributed as dist_utils
from smolgrpo.models.loading import (
    load_model_and_tokenizer,
    prepare_tokenizer,
    resolve_device,
    share_weight_files,
)
from smolgrpo.reporting.model_card import write_training_card
from smolgrpo.rewards.plugins import is_plugin
from smolgrpo.runs.lock import LOCK_FILE, RunLock
from smolgrpo.tasks import TASK_FILE, save_task
from smolgrpo.tasks.prompts import PROMPT_TEMPLATE_FILE

RUN_MARKER = ".smolgrpo-run"  # written when a run folder is set up: what --overwrite may delete
CONFIG_FILE = "config.yaml"


def is_run_folder(folder: Path) -> bool:
    """A smolgrpo run: its marker, or (a run begun before the marker) config.yaml beside
    metrics.jsonl, checkpoints/ or samples/."""
    if (folder / RUN_MARKER).is_file():
        return True
    return (folder / CONFIG_FILE).is_file() and (
        (folder / "metrics.jsonl").is_file()
        or (folder / "checkpoints").is_dir()
        or (folder / "samples").is_dir()
    )


def _entries(folder: Path) -> list[Path]:
    """The folder's entries but the lock file (a folder holding only that counts as empty)."""
    return [path for path in folder.iterdir() if path.name != LOCK_FILE]


def _inputs_inside(folder: Path, config: Config) -> list[tuple[str, Path]]:
    """(config key, path) of each local file or folder the run reads that lies in `folder`:
    the model, the data, reward and tool plug-in files."""
    candidates = [("model.name", config.model.name)]
    if config.data.source:
        candidates.append(("data.source", config.data.source))
    plugins = [("rewards.weights", name) for name in config.rewards.weights]
    plugins += [("sampling.tools", name) for name in config.sampling.tools]
    for key, name in plugins:
        module_part = name.rsplit(":", 1)[0] if is_plugin(name) else ""
        if module_part.endswith(".py") or "/" in module_part:
            candidates.append((f"{key} '{name}'", module_part))
    root = folder.resolve()
    found = []
    for key, value in candidates:
        path = Path(value).expanduser()
        if path.exists() and path.resolve().is_relative_to(root):
            found.append((key, path))
    return found


@dataclass
class RunFolder:
    """A run folder checked and locked before the model and data load (`open_run_folder`);
    `replace` and `write_run_files` finish setting it up once they have loaded."""

    path: Path
    config: Config
    resume: bool
    overwrite: bool
    lock: RunLock
    created: bool  # this process made the folder (removed again if set-up fails)

    def replace(self) -> None:
        """--overwrite: delete the old run, all but the lock file. Called once the model and
        data have loaded, so that a failing load leaves the old run as it was."""
        if self.resume or not self.overwrite:
            return
        # Checked again: the same rules hold now (a run, not holding what this run reads).
        check_folder(self.path, self.config, resume=False, overwrite=True)
        for entry in _entries(self.path):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def release(self, failed: bool = False) -> None:
        """Unlock; after a failed set-up, remove the folder again if this process made it and
        nothing was written to it."""
        self.lock.release()
        if failed and self.created:
            _remove_if_empty(self.path)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def check_folder(run_dir: Path, config: Config, resume: bool, overwrite: bool) -> None:
    """Refuse, in one line, a folder this run may not use; reads nothing but the folder.

    New run: a new or empty folder. --resume: a run (or a new or empty folder: a run killed
    before it wrote anything starts at step 0). --overwrite: a run, or an empty folder, that
    holds neither the model nor the data this run reads. A folder that is not a run is never
    deleted, and its refusal does not point at --overwrite."""
    if run_dir.exists() and not run_dir.is_dir():
        raise SmolGRPOError(f"{run_dir}: not a folder (run.output_dir must name a folder)")
    if not run_dir.is_dir() or not _entries(run_dir):
        return
    is_run = is_run_folder(run_dir)
    if resume:
        if not is_run:
            raise SmolGRPOError(f"{run_dir}: --resume given but this is not a smolgrpo run")
        return
    if not is_run:
        raise SmolGRPOError(
            f"{run_dir}: not empty and not a smolgrpo run; choose a new or empty folder for "
            "run.output_dir (--output-dir)"
        )
    if not overwrite:
        raise SmolGRPOError(
            f"{run_dir}: already holds a run; pass --resume to continue it or --overwrite "
            "to replace it"
        )
    inside = _inputs_inside(run_dir, config)
    if inside:
        key, path = inside[0]
        raise SmolGRPOError(
            f"{run_dir}: holds {path}, which this run reads ({key}); replacing the run would "
            "delete it: choose another folder for run.output_dir (--output-dir)"
        )


def open_run_folder(run_dir: Path, config: Config, resume: bool, overwrite: bool) -> RunFolder:
    """Before anything loads: refuse a folder this run may not use (one line) and take the
    folder's lock (run_lock.py), held until `RunFolder.release`."""
    run_dir = Path(run_dir)
    check_folder(run_dir, config, resume, overwrite)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        lock = RunLock.acquire(run_dir)
    except BaseException:
        if created:
            _remove_if_empty(run_dir)
        raise
    folder = RunFolder(run_dir, config, resume, overwrite, lock, created)
    try:  # again, now that no other smolgrpo process can change the folder
        check_folder(run_dir, config, resume, overwrite)
    except BaseException:
        folder.release(failed=True)
        raise
    return folder


def write_run_files(run_dir: Path, config: Config) -> None:
    """The marker, config.yaml, samples/, prompt_template.json and task.json of the run."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_MARKER).write_text("a smolgrpo run folder (smolgrpo train/sft)\n")
    config.save(run_dir / CONFIG_FILE)
    (run_dir / "samples").mkdir(exist_ok=True)
    config.prompt.template().save(run_dir / PROMPT_TEMPLATE_FILE)
    save_task(config.data, run_dir / TASK_FILE)
    save_tool_file(config, run_dir)


def save_tool_file(config: Config, folder: Path) -> None:
    """tools.json (config/tools.py) when the run calls tools: `eval` calls the same ones."""
    sampling, path = config.sampling, folder / TOOLS_FILE
    if sampling.tool_specs():
        save_tools(
            path, sampling.tool_specs(), sampling.tool_timeout_s, sampling.tool_max_output_chars
        )
    else:
        path.unlink(missing_ok=True)  # a resumed run that dropped its tools


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

        from smolgrpo.models.architectures import lora_target_modules

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
    save_tool_file(trainer.config, staging)
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


def fused_adamw_applies(parameters: list) -> bool:
    """AdamW's fused kernel (one pass over each tensor, as transformers' Trainer uses by default)
    for plain float tensors on one CPU or CUDA device; on CPU torch's default is a per-tensor
    loop, 4.7x slower on SmolLM2-135M (benchmarks/optimizer_step.py). FSDP's sharded DTensors
    keep torch's default."""
    if not parameters:
        return False
    devices = {p.device.type for p in parameters}
    plain = all(type(p) is torch.nn.Parameter and p.is_floating_point() for p in parameters)
    return plain and len(devices) == 1 and devices <= {"cpu", "cuda"}


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
        fused=fused_adamw_applies(parameters) or None,
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
