"""Per-step metrics, `metrics.jsonl`, sample logs and the training progress bar."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import torch

from smolgrpo import distributed as dist_utils

# What a periodic eval logs (as eval/<key>), from evaluate.evaluate's metrics.
PERIODIC_EVAL_KEYS = (
    "accuracy",
    "accuracy_last_number",
    "strict_format_rate",
    "soft_format_rate",
    "mean_completion_tokens",
    "truncation_rate",
)


def step_metrics(
    trainer, stats: dict, losses: dict, problems: list, timings: dict
) -> tuple[dict, list]:
    """(one metrics.jsonl row, the sample records for samples/step_N.jsonl) for a step."""
    G = trainer.config.sampling.num_generations
    rewards = {name: dist_utils.gather_objects(values) for name, values in stats["rewards"].items()}
    totals = dist_utils.gather_objects(stats["totals"])
    lengths = dist_utils.gather_objects(stats["lengths"])
    groups = dist_utils.all_sum(stats["groups_generated"])
    generated_tokens = dist_utils.all_sum(stats["generated_tokens"])
    metrics = {"step": trainer.step}
    for name, values in rewards.items():
        metrics[f"reward/{name}"] = statistics.fmean(values)
    metrics["reward_mean"] = statistics.fmean(totals)
    metrics["reward_std"] = statistics.pstdev(totals)
    if "correctness" in rewards:
        metrics["accuracy"] = statistics.fmean(v == 1.0 for v in rewards["correctness"])
    for name in ("strict_format", "soft_format"):
        if name in rewards:
            metrics[f"{name}_rate"] = statistics.fmean(v == 1.0 for v in rewards[name])
    metrics.update(
        loss=losses["loss"],
        kl=losses["kl"],
        clip_fraction=losses["clip_fraction"],
        entropy=losses.get("entropy", 0.0),
        grad_norm=losses["grad_norm"],
        bad_steps=losses.get("bad_steps", 0),  # updates skipped for a NaN/inf (guards.py)
        learning_rate=trainer.scheduler.get_last_lr()[0],
        completion_length_mean=statistics.fmean(lengths),
        completion_length_max=max(lengths),
        truncation_rate=dist_utils.all_sum(stats["truncated"]) / max(len(lengths), 1),
        frac_zero_std_groups=dist_utils.all_sum(stats["zero_std_groups"]) / max(groups, 1),
        groups_generated=int(groups),
        groups_trained=int(dist_utils.all_sum(len(problems))),
        generated_tokens=int(generated_tokens),
        tokens_per_s=generated_tokens / max(timings["step_s"], 1e-9),
        step_time_s=timings["step_s"],
        generation_s=stats["generation_s"],
        reward_s=stats["reward_s"],
        train_s=timings["train_s"],
    )
    if trainer.device.type == "cuda":
        metrics["peak_memory_mb"] = torch.cuda.max_memory_allocated(trainer.device) / 2**20
    samples = []
    for index, problem in enumerate(stats["problems"][: trainer.config.run.log_num_prompts]):
        rows = range(index * G, (index + 1) * G)
        samples.append(
            {
                "step": trainer.step,
                "origin": problem.origin,
                "question": problem.question,
                "gold": problem.gold,
                "completions": [
                    {
                        "text": stats["responses"][row],
                        "total_reward": stats["totals"][row],
                        "rewards": {name: stats["rewards"][name][row] for name in stats["rewards"]},
                    }
                    for row in rows
                ],
            }
        )
    return metrics, samples


class MetricsLogger:
    """Appends one JSON line per step (flushed and fsynced: a killed run loses no logged step)."""

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.run_dir, self.enabled = run_dir, enabled

    def log(self, metrics: dict, samples: list | None) -> None:
        if not self.enabled:
            return
        with open(self.run_dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(metrics) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        if samples:
            path = self.run_dir / "samples" / f"step_{metrics['step']}.jsonl"
            path.parent.mkdir(exist_ok=True)
            path.write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples))


def read_metrics(path: Path) -> list[dict]:
    """Rows of a metrics.jsonl; a partial last line (killed mid-write) is ignored."""
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    return rows


def truncate_metrics(path: Path, last_step: int) -> None:
    """On resume: keep each step up to the checkpoint exactly once, drop later or broken lines."""
    rows = [row for row in read_metrics(path) if row["step"] <= last_step]
    unique = {row["step"]: row for row in rows}
    temporary = path.with_suffix(".jsonl.tmp")
    temporary.write_text("".join(json.dumps(unique[s]) + "\n" for s in sorted(unique)))
    os.replace(temporary, path)


class TrainProgress:
    """A rich progress bar: step, reward, accuracy, format rate, tokens/s, ETA."""

    def __init__(self, total_steps: int, start_step: int, enabled: bool = True):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "reward {task.fields[reward]} acc {task.fields[accuracy]} "
                "strict {task.fields[strict]} {task.fields[tokens]} tok/s"
            ),
            TimeRemainingColumn(),
            disable=not enabled,
        )
        self.task = self.progress.add_task(
            "train",
            total=total_steps,
            completed=start_step,
            reward="-",
            accuracy="-",
            strict="-",
            tokens="-",
        )

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def update(self, metrics: dict) -> None:
        self.progress.update(
            self.task,
            completed=metrics["step"],
            reward=f"{metrics['reward_mean']:.3f}",
            accuracy=f"{metrics.get('accuracy', 0):.0%}",
            strict=f"{metrics.get('strict_format_rate', 0):.0%}",
            tokens=f"{metrics['tokens_per_s']:.0f}",
        )
