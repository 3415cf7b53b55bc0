"""The workload grpo_vs_trl.py gives both sides: presets, the settings they share, the prompts
in order, and the timers and summary both sides' steps go through (so neither is measured
differently)."""

from __future__ import annotations

import os
import resource
import statistics
import time

PRESETS = {
    # Small enough for 2 CPU cores in a few minutes.
    "cpu": dict(
        num_generations=4,
        prompts_per_step=2,
        max_completion_length=64,
        micro_batch_size=8,
        warmup_steps=1,
        timed_steps=3,
        device="cpu",
    ),
    # recipes/cpu-grpo.yaml's work: G = 8, 4 prompts, 200 new tokens, micro-batch 8, no worked
    # example in the prompt. float32 on both sides (see README: bf16 only where the CPU has it).
    "cpu-recipe": dict(
        num_generations=8,
        prompts_per_step=4,
        max_completion_length=200,
        micro_batch_size=8,
        warmup_steps=1,
        timed_steps=2,
        device="cpu",
        num_few_shot=0,
    ),
    # The real recipe's sizes (recipes/smollm2-135m-gsm8k.yaml).
    "gpu": dict(
        num_generations=8,
        prompts_per_step=16,
        max_completion_length=256,
        micro_batch_size=8,
        warmup_steps=2,
        timed_steps=5,
        device="cuda",
    ),
}
COMMON = dict(
    temperature=1.0,
    learning_rate=5e-6,
    beta=0.0,
    loss_type="dapo",
    epsilon=0.2,
    epsilon_high=0.28,
    scale_rewards="group",
    max_grad_norm=1.0,
    adam_beta1=0.9,
    adam_beta2=0.99,
    weight_decay=0.0,
    num_few_shot=1,
    seed=0,
)
RESULT_KEYS = (
    "steps_per_s",
    "generated_tokens_per_s",
    "generation_s",
    "reward_s",
    "logprob_backward_s",
    "optimizer_s",
    "step_s",
    "peak_memory_mb",
)


# ----------------------------------------------------------------------------- shared workload
def workload(settings: dict):
    """(model dir, tokenizer, ordered problems, rendered prompts): identical for both sides."""
    from transformers import AutoTokenizer

    from smolgrpo.models.loading import embedded_model_dir, prepare_tokenizer
    from smolgrpo.tasks.data import load_problems
    from smolgrpo.tasks.prompts import PromptTemplate, render_prompt, select_few_shot
    from smolgrpo.training.batching import PromptStream

    model_dir = embedded_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prepare_tokenizer(tokenizer)
    problems = load_problems(os.environ.get("SMOLGRPO_DATA_DIR"), "train", limit=500)
    total_steps = settings["warmup_steps"] + settings["timed_steps"]
    order = PromptStream(problems, COMMON["seed"]).take(total_steps * settings["prompts_per_step"])
    few_shot = select_few_shot(problems, few_shot_count(settings), COMMON["seed"])
    template = PromptTemplate()
    prompts = [render_prompt(tokenizer, p.question, template, few_shot) for p in order]
    return model_dir, tokenizer, problems, order, prompts, template


def few_shot_count(settings: dict) -> int:
    """Worked examples in the prompt: the preset's, else COMMON's."""
    return settings.get("num_few_shot", COMMON["num_few_shot"])


def peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def summarise(per_step: list[dict], settings: dict) -> dict:
    timed = per_step[settings["warmup_steps"] :]
    mean = {k: statistics.fmean(s[k] for s in timed) for k in timed[0]}
    return {
        "steps_per_s": 1.0 / mean["step_s"],
        "generated_tokens_per_s": mean["tokens"] / mean["step_s"],
        "generation_s": mean["generation_s"],
        "reward_s": mean["reward_s"],
        "optimizer_s": mean["optimizer_s"],
        "logprob_backward_s": mean["step_s"]
        - mean["generation_s"]
        - mean["reward_s"]
        - mean["optimizer_s"],
        "step_s": mean["step_s"],
        "per_step_s": [round(s["step_s"], 3) for s in per_step],
    }


class OptimizerTimer:
    """Wraps optimizer.step to time it (synchronising the GPU around it)."""

    def __init__(self, optimizer, device: str):
        self.total, self._step, self.device = 0.0, optimizer.step, device
        optimizer.step = self

    def __call__(self, *args, **kwargs):
        sync_device(self.device)
        started = time.perf_counter()
        result = self._step(*args, **kwargs)
        sync_device(self.device)
        self.total += time.perf_counter() - started
        return result


def sync_device(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
