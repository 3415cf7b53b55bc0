"""`metrics.jsonl`: one JSON row per training step, written by rank 0 and mirrored to trackers;
read back (and cut back to a checkpoint's step on resume) by the same module."""

from __future__ import annotations

import json
import os
from pathlib import Path

# What a periodic eval logs (as eval/<key>), from evaluate.evaluate's metrics.
PERIODIC_EVAL_KEYS = (
    "accuracy",
    "accuracy_last_number",
    "strict_format_rate",
    "soft_format_rate",
    "mean_completion_tokens",
    "truncation_rate",
)


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
            from smolgrpo.runs.tracking import Trackers

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
