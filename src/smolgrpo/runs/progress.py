"""Training progress on the console: a live bar on a terminal, plain lines in a log file."""

from __future__ import annotations

import sys
import time

from smolgrpo.runs.safe_output import STREAM_ERRORS, write_line

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
# An eval's progress: the running accuracy over the problems done, finer than a training step's.
EVAL_PROGRESS_FIELDS = (("accuracy", "acc", "{:.1%}"),)


def progress_values(metrics: dict, fields=PROGRESS_FIELDS) -> str:
    """`reward 0.125  acc 0%  ...` for the `fields` (key, label, format) that `metrics` holds."""
    shown = []
    for key, label, form in fields:
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
    """Progress of a training loop that logs metrics rows with a `step` (GRPO and SFT alike), or
    of an eval (`unit="problem"`, `fields=EVAL_PROGRESS_FIELDS`: `step` is then the number of
    problems done).

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
        unit: str = "step",
        fields=PROGRESS_FIELDS,
    ):
        self.total_steps, self.start_step, self.label = total_steps, start_step, label
        self.unit, self.fields = unit, fields
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
        values = progress_values(metrics, self.fields)
        if self.progress is not None:
            self._draw(
                self.progress.update, self.task, completed=metrics["step"], phase="", values=values
            )
        elif self.enabled:
            step = metrics["step"]
            parts = [f"{self.label} {self.unit} {step}/{self.total_steps}", values]
            interval = "step" if self.unit == "step" else "batch"
            parts.append(f"{interval} {format_duration(step_seconds)}")
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
