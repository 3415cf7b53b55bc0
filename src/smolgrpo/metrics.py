"""Per-step metrics, `metrics.jsonl`, sample logs and the training progress (bar or lines)."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from smolgrpo import distributed as dist_utils
from smolgrpo.safe_output import STREAM_ERRORS, write_line

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
    G = stats.get("rows_per_group", trainer.config.sampling.num_generations)  # sampled rows
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
        **{
            f"reward_time_s/{name}": dist_utils.all_max(seconds)  # the slowest rank's
            for name, seconds in stats.get("reward_times", {}).items()
        },
        train_s=timings["train_s"],
        # answer checks scored 0 because they timed out or failed (sandbox.py), all ranks
        reward_timeouts=int(dist_utils.all_sum(stats.get("reward_timeouts", 0))),
        reward_errors=int(dist_utils.all_sum(stats.get("reward_errors", 0))),
    )
    if trainer.config.sampling.calculator:  # tokens the calculator wrote (not in the loss)
        metrics["calculator_tokens"] = int(dist_utils.all_sum(stats.get("calculator_tokens", 0)))
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
    """Appends one JSON line per step (flushed and fsynced: a killed run loses no logged step).

    With a `config` whose `run.report_to` names trackers, used as a context manager, each row
    and its samples also go to those trackers (tracking.py), started on enter, closed on exit.
    """

    def __init__(self, run_dir: Path, enabled: bool = True, config=None):
        self.run_dir, self.enabled, self.config = run_dir, enabled, config
        self.trackers = None

    def __enter__(self):
        report_to = getattr(getattr(self.config, "run", None), "report_to", None)
        if self.enabled and report_to:
            from smolgrpo.tracking import Trackers

            self.trackers = Trackers(report_to, self.run_dir, self.config.to_dict())
        return self

    def __exit__(self, *exc) -> bool:
        if self.trackers is not None:
            self.trackers.close()
            self.trackers = None
        return False

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
        if self.trackers is not None:  # after the files: a tracker that fails is switched off
            self.trackers.log(metrics, samples)


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


# What a progress line shows, in this order: (metrics key, label, format). A key the loop did
# not log is left out: GRPO logs rewards and accuracy, the SFT loop its loss and token accuracy.
PROGRESS_FIELDS = (
    ("reward_mean", "reward", "{:.3f}"),
    ("accuracy", "acc", "{:.0%}"),
    ("strict_format_rate", "strict", "{:.0%}"),
    ("loss", "loss", "{:.4g}"),
    ("token_accuracy", "token acc", "{:.0%}"),
    ("learning_rate", "lr", "{:.2e}"),
    ("tokens_per_s", "tok/s", "{:.0f}"),
)


def progress_values(metrics: dict) -> str:
    """`reward 0.125  acc 0%  ...` for the PROGRESS_FIELDS that `metrics` holds."""
    shown = []
    for key, label, form in PROGRESS_FIELDS:
        value = metrics.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            shown.append(f"{label} {form.format(value)}")
    return "  ".join(shown)


def format_duration(seconds: float) -> str:
    """`42.0s`, `4m33s`, `1h02m`."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


class TrainProgress:
    """Progress of a training loop that logs metrics rows with a `step` (GRPO and SFT alike).

    In a terminal: a rich bar with elapsed time, ETA, the phase of the current step (the loop
    calls `phase("generating")`, ...) and the latest values. Anywhere else (a log file, a pipe),
    where a live bar would only show up at the end: one plain line per step, as TRL logs.
    """

    def __init__(
        self,
        total_steps: int,
        start_step: int,
        enabled: bool = True,
        stream=None,
        label: str = "train",
    ):
        self.total_steps, self.start_step, self.label = total_steps, start_step, label
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stdout
        self.started = self.last_update = time.monotonic()
        self.progress = None
        if enabled and _is_terminal(self.stream):
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn(f"[bold]{label}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn("[cyan]{task.fields[phase]}"),
                TextColumn("{task.fields[values]}"),
                console=Console(file=self.stream),
            )
            self.task = self.progress.add_task(
                label, total=total_steps, completed=start_step, phase="", values=""
            )

    # A closed or broken stream (a hung-up terminal, a pipe whose reader is gone) ends the
    # progress output, never the training: the bar or the lines stop, the loop goes on.
    def _draw(self, draw, *args, **kwargs):
        try:
            return draw(*args, **kwargs)
        except STREAM_ERRORS:
            self.progress, self.enabled = None, False
            return None

    def __enter__(self):
        self.started = self.last_update = time.monotonic()
        if self.progress is not None:
            self._draw(self.progress.__enter__)
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            return self._draw(self.progress.__exit__, *exc)
        return None

    def phase(self, name: str) -> None:
        """What the current step is doing (generating, scoring, training, ...): shown in the bar."""
        if self.progress is not None:
            self._draw(self.progress.update, self.task, phase=name)

    def update(self, metrics: dict) -> None:
        now = time.monotonic()
        step_seconds, self.last_update = now - self.last_update, now
        values = progress_values(metrics)
        if self.progress is not None:
            self._draw(
                self.progress.update, self.task, completed=metrics["step"], phase="", values=values
            )
        elif self.enabled:
            step = metrics["step"]
            parts = [f"{self.label} step {step}/{self.total_steps}", values]
            parts.append(f"step {format_duration(step_seconds)}")
            done = step - self.start_step
            if done > 0:
                remaining = (now - self.started) / done * max(self.total_steps - step, 0)
                parts.append(f"eta {format_duration(remaining)}")
            if not write_line("  ".join(part for part in parts if part), self.stream):
                self.enabled = False


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
