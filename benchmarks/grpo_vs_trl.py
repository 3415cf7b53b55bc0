"""Side-by-side GRPO speed and memory: smolgrpo vs Hugging Face TRL's GRPOTrainer.

Both tools train the same weights (the embedded SmolLM2-135M-Instruct, saved once with
`save_pretrained`) on the same GSM8K prompts in the same order (smolgrpo's default prompt: system
prompt, one worked example, `<reasoning>` prefill), with the same reward functions and weights,
group size, batch, completion length, temperature, loss (dapo, clip-higher), beta, optimiser and
learning rate. Each tool runs in its own child process, one after the other, so that peak memory
(peak RSS on CPU, torch.cuda.max_memory_allocated on GPU) is its own; the parent prints one table
and writes it as JSON under benchmarks/results/.

    pip install -r benchmarks/requirements.txt
    SMOLGRPO_DATA_DIR=../shared/data/gsm8k python benchmarks/grpo_vs_trl.py --preset cpu

`--forced-length` (the default) makes both sides generate exactly `max_completion_length` tokens
(EOS is masked out), so that the sampled answer lengths cannot decide the result.
Time split per step: generation, reward, optimiser (AdamW step) and the rest of the step
("log-prob + backward": forward/backward passes and the loss), each the mean over the timed steps.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from grpo_vs_trl_workload import (  # next to this script
    COMMON,
    PRESETS,
    RESULT_KEYS,
    OptimizerTimer,
    few_shot_count,
    peak_memory_mb,
    summarise,
    sync_device,
    workload,
)


# ----------------------------------------------------------------------------- smolgrpo side
def run_smolgrpo(settings: dict, forced_length: bool) -> dict:
    import torch

    from smolgrpo.config.schema import Config
    from smolgrpo.models.loading import load_model_and_tokenizer
    from smolgrpo.training.trainer import Trainer

    torch.manual_seed(COMMON["seed"])
    model_dir, _, problems, _, _, _ = workload(settings)
    config = Config()
    config.model.name = str(model_dir)
    config.model.device = settings["device"]
    config.model.gradient_checkpointing = False
    config.prompt.num_few_shot = few_shot_count(settings)
    sampling, grpo, optim = config.sampling, config.grpo, config.optim
    sampling.num_generations = settings["num_generations"]
    sampling.max_completion_length = settings["max_completion_length"]
    sampling.temperature = COMMON["temperature"]
    sampling.ignore_eos = forced_length
    grpo.beta, grpo.loss_type = COMMON["beta"], COMMON["loss_type"]
    grpo.epsilon, grpo.epsilon_high = COMMON["epsilon"], COMMON["epsilon_high"]
    grpo.scale_rewards, grpo.num_iterations = COMMON["scale_rewards"], 1
    optim.learning_rate, optim.warmup_steps, optim.lr_schedule = (
        COMMON["learning_rate"],
        0,
        "constant",
    )
    optim.max_grad_norm, optim.weight_decay = COMMON["max_grad_norm"], COMMON["weight_decay"]
    optim.adam_beta1, optim.adam_beta2 = COMMON["adam_beta1"], COMMON["adam_beta2"]
    optim.prompts_per_step = settings["prompts_per_step"]
    optim.micro_batch_size = settings["micro_batch_size"]
    optim.max_steps = settings["warmup_steps"] + settings["timed_steps"]
    config.run.seed = COMMON["seed"]
    with tempfile.TemporaryDirectory() as run_dir:
        config.run.output_dir = run_dir
        config.validate()
        model, tokenizer = load_model_and_tokenizer(str(model_dir), device=settings["device"])
        trainer = Trainer(
            config,
            overwrite=True,
            show_progress=False,
            model=model,
            tokenizer=tokenizer,
            train_problems=problems,
        )
        timer = OptimizerTimer(trainer.optimizer, settings["device"])
        per_step = []
        for _ in range(config.optim.max_steps):
            optimizer_before = timer.total
            sync_device(settings["device"])
            metrics, _ = trainer.train_step()
            per_step.append(
                {
                    "step_s": metrics["step_time_s"],
                    "generation_s": metrics["generation_s"],
                    "reward_s": metrics["reward_s"],
                    "optimizer_s": timer.total - optimizer_before,
                    "tokens": metrics["generated_tokens"],
                }
            )
    result = summarise(per_step, settings)
    result["settings"] = {
        "gradient_checkpointing": False,
        "micro_batch_size": optim.micro_batch_size,
    }
    return result


# ----------------------------------------------------------------------------- TRL side
def run_trl(settings: dict, forced_length: bool) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from smolgrpo.rewards.builtin import DEFAULT_REWARD_WEIGHTS, REWARDS

    torch.manual_seed(COMMON["seed"])
    model_dir, tokenizer, _, order, prompts, template = workload(settings)
    device = settings["device"]
    timings = {"generation_s": 0.0, "reward_s": 0.0, "tokens": 0}
    names = list(DEFAULT_REWARD_WEIGHTS)

    def make_reward(name):
        function = REWARDS[name].function

        def reward(prompts, completions, gold, **_):
            started = time.perf_counter()
            # smolgrpo scores prefill + completion: the prefill is part of the answer.
            values = function([template.prefill + c for c in completions], gold)
            timings["reward_s"] += time.perf_counter() - started
            return values

        reward.__name__ = name
        return reward

    dataset = Dataset.from_list([{"prompt": p, "gold": q.gold} for p, q in zip(prompts, order)])
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device)
    original_generate = model.generate
    eos_ids = {tokenizer.eos_token_id}

    def timed_generate(*args, **kwargs):
        sync_device(device)
        started = time.perf_counter()
        output = original_generate(*args, **kwargs)
        sync_device(device)
        timings["generation_s"] += time.perf_counter() - started
        completion = output[:, kwargs["input_ids"].shape[1] :]
        for row in completion.tolist():
            length = next((i + 1 for i, t in enumerate(row) if t in eos_ids), len(row))
            timings["tokens"] += length
        return output

    model.generate = timed_generate
    batch = settings["num_generations"] * settings["prompts_per_step"]
    accumulation = max(1, batch // settings["micro_batch_size"])
    arguments = GRPOConfig(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=batch // accumulation,
        gradient_accumulation_steps=accumulation,
        num_generations=settings["num_generations"],
        max_completion_length=settings["max_completion_length"],
        temperature=COMMON["temperature"],
        top_p=1.0,
        learning_rate=COMMON["learning_rate"],
        lr_scheduler_type="constant",
        warmup_steps=0,
        beta=COMMON["beta"],
        loss_type=COMMON["loss_type"],
        epsilon=COMMON["epsilon"],
        epsilon_high=COMMON["epsilon_high"],
        scale_rewards=COMMON["scale_rewards"],
        num_iterations=1,
        max_grad_norm=COMMON["max_grad_norm"],
        adam_beta1=COMMON["adam_beta1"],
        adam_beta2=COMMON["adam_beta2"],
        weight_decay=COMMON["weight_decay"],
        reward_weights=[DEFAULT_REWARD_WEIGHTS[n] for n in names],
        max_steps=settings["warmup_steps"] + settings["timed_steps"],
        shuffle_dataset=False,
        gradient_checkpointing=False,
        bf16=device.startswith("cuda"),
        use_cpu=device == "cpu",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=COMMON["seed"],
        generation_kwargs={"min_new_tokens": settings["max_completion_length"]}
        if forced_length
        else None,
    )
    per_step = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            sync_device(device)
            self.started = time.perf_counter()
            self.snapshot = dict(timings, optimizer_s=optimizer_timer.total)

        def on_step_end(self, *_, **__):
            sync_device(device)
            elapsed = time.perf_counter() - self.started
            now = dict(timings, optimizer_s=optimizer_timer.total)
            per_step.append({"step_s": elapsed, **{k: now[k] - self.snapshot[k] for k in now}})

    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[make_reward(n) for n in names],
        args=arguments,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[StepTimer()],
    )
    trainer.create_optimizer_and_scheduler(num_training_steps=arguments.max_steps)
    optimizer_timer = OptimizerTimer(trainer.optimizer, device)
    trainer.train()
    result = summarise(per_step, settings)
    result["settings"] = {
        "gradient_checkpointing": arguments.gradient_checkpointing,
        "per_device_train_batch_size": arguments.per_device_train_batch_size,
        "gradient_accumulation_steps": arguments.gradient_accumulation_steps,
        "use_vllm": arguments.use_vllm,
        "bf16": arguments.bf16,
    }
    return result


# ----------------------------------------------------------------------------- parent
def versions() -> dict:
    import importlib.metadata as md

    found = {}
    for package in ("smolgrpo", "trl", "torch", "transformers", "accelerate", "datasets"):
        try:
            found[package] = md.version(package)
        except md.PackageNotFoundError:
            found[package] = "missing"
    return found


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"


def child(args) -> None:
    settings = PRESETS[args.preset] | ({"timed_steps": args.steps} if args.steps else {})
    if args.device:
        settings["device"] = args.device
    run = run_smolgrpo if args.side == "smolgrpo" else run_trl
    result = run(settings, args.forced_length)
    result["peak_memory_mb"] = peak_memory_mb(settings["device"])
    Path(args.output).write_text(json.dumps(result))


# Peak memory bandwidth (GB/s) of cards we may be lent, from the vendors' data sheets.
BANDWIDTH_GBS = {"H100 80GB HBM3": 3350, "H100 PCIe": 2000, "H100 NVL": 3900, "H200": 4800}
PARAMETERS = 134_515_008  # SmolLM2-135M-Instruct


def bandwidth_bound(table: dict, bandwidth_gbs: float | None) -> dict | None:
    """Decode steps/s that memory bandwidth allows (each step reads every weight once, in bf16;
    the KV cache is ignored, so the bound is optimistic) against what smolgrpo's rollout reached
    (max_completion_length decode steps in generation_s, prefill included)."""
    if not bandwidth_gbs:
        bandwidth_gbs = next((v for k, v in BANDWIDTH_GBS.items() if k in table["device"]), None)
    if not bandwidth_gbs:
        return None
    bound = bandwidth_gbs * 1e9 / (PARAMETERS * 2)
    reached = table["workload"]["max_completion_length"] / table["smolgrpo"]["generation_s"]
    return {
        "bandwidth_gbs": bandwidth_gbs,
        "bound_decode_steps_per_s": bound,
        "decode_steps_per_s": reached,
        "fraction_of_bound": reached / bound,
    }


def print_table(table: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    ours, theirs = table["smolgrpo"], table["trl"]
    view = Table(title=f"GRPO step, {table['preset']} preset on {table['device']}")
    for column in ("metric", "smolgrpo", "TRL GRPOTrainer", "smolgrpo / TRL"):
        view.add_column(column, justify="right" if column != "metric" else "left")
    for key in RESULT_KEYS:
        ratio = ours[key] / theirs[key] if theirs[key] else float("nan")
        view.add_row(key, f"{ours[key]:.3f}", f"{theirs[key]:.3f}", f"{ratio:.2f}x")
    console = Console()
    console.print(view)
    console.print(f"workload: {json.dumps(table['workload'])}")
    console.print(f"smolgrpo settings: {json.dumps(ours['settings'])}")
    console.print(f"TRL settings: {json.dumps(theirs['settings'])}")
    console.print(f"versions: {json.dumps(table['versions'])}")
    if table.get("bandwidth_bound"):
        console.print(f"decode vs memory-bandwidth bound: {json.dumps(table['bandwidth_bound'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (after warm-up)")
    parser.add_argument("--device", default=None, help="override the preset's device")
    parser.add_argument(
        "--forced-length",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="both sides generate exactly max_completion_length tokens (default: on)",
    )
    parser.add_argument("--only", choices=["smolgrpo", "trl"], help="run one side only")
    parser.add_argument(
        "--bandwidth-gbs",
        type=float,
        default=None,
        help="GPU memory bandwidth for the decode bound (default: known cards by name)",
    )
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return child(args)
    settings = PRESETS[args.preset] | ({"timed_steps": args.steps} if args.steps else {})
    device = args.device or settings["device"]
    table = {
        "preset": args.preset,
        "date": datetime.date.today().isoformat(),
        "device": device_name(device),
        "forced_length": args.forced_length,
        "workload": {**COMMON, **settings, "device": device},
        "versions": versions(),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
    }
    for side in [args.only] if args.only else ["smolgrpo", "trl"]:
        with tempfile.NamedTemporaryFile(suffix=".json") as output:
            command = [sys.executable, __file__, "--preset", args.preset, "--side", side]
            command += [
                "--output",
                output.name,
                "--forced-length" if args.forced_length else "--no-forced-length",
            ]
            command += (["--steps", str(args.steps)] if args.steps else []) + (
                ["--device", args.device] if args.device else []
            )
            print(f"running {side} ...", flush=True)
            subprocess.run(command, check=True)
            table[side] = json.loads(Path(output.name).read_text())
    if args.only:
        print(json.dumps(table[args.only], indent=1))
        return
    table["bandwidth_bound"] = bandwidth_bound(table, args.bandwidth_gbs)
    print_table(table)
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    kind = "gpu" if device.startswith("cuda") else "cpu"
    path = results / f"{args.preset}-preset_{kind}_{table['date']}.json"
    path.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
