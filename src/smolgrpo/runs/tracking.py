"""Opt-in experiment tracking: the rows of metrics.jsonl, and sample completions, sent on.

`run.report_to: [tensorboard, trackio, wandb]` (none by default) sends every logged step's
numbers, under the same keys as `metrics.jsonl`, and each logged samples file as a table (text
for TensorBoard) to those trackers. Each is an optional extra (`pip install
'smolgrpo[tensorboard]'`); naming one that is not installed is a one-line error when the config
loads. metrics.jsonl stays the source of truth: a tracker only mirrors it, written by rank 0.

Where things go: TensorBoard event files in `<run dir>/tensorboard/`; W&B and Trackio runs in
the project `$WANDB_PROJECT` / `$TRACKIO_PROJECT` (default `smolgrpo`), named after the run
folder, W&B's local files under `<run dir>/wandb/` (offline with `WANDB_MODE=offline`); a resumed
run continues the same W&B run (its id is kept in `<run dir>/wandb_run_id`).
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

from smolgrpo.errors import SmolGRPOError

# name in run.report_to -> (module it needs, the pyproject extra that installs it)
TRACKERS = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "trackio": ("trackio", "trackio"),
    "wandb": ("wandb", "wandb"),
}
SAMPLE_COLUMNS = ["step", "question", "gold", "completion", "total_reward"]


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def check_report_to(report_to: list) -> None:
    """Each name is known and its package installed, or a one-line SmolGRPOError."""
    for name in report_to:
        if not isinstance(name, str) or name not in TRACKERS:
            raise SmolGRPOError(
                f"config: invalid value in 'run.report_to': {name!r} "
                f"(must be one of {', '.join(TRACKERS)})"
            )
        module, extra = TRACKERS[name]
        if not _installed(module):
            raise SmolGRPOError(
                f"run.report_to: {name} needs the '{module}' package: "
                f"pip install 'smolgrpo[{extra}]'"
            )


def _numbers(metrics: dict) -> dict[str, float]:
    return {
        key: float(value)
        for key, value in metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and key != "step"
        if math.isfinite(float(value))
    }


def _sample_rows(samples: list[dict]) -> list[list]:
    return [
        [s["step"], s["question"], s["gold"], c["text"], c["total_reward"]]
        for s in samples
        for c in s["completions"]
    ]


class TensorBoardTracker:
    def __init__(self, run_dir: Path, config: dict):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.writer.add_text("config", f"```\n{config}\n```", 0)

    def log(self, step: int, metrics: dict, samples: list[dict] | None) -> None:
        for key, value in _numbers(metrics).items():
            self.writer.add_scalar(key, value, step)
        if samples:
            lines = ["| " + " | ".join(SAMPLE_COLUMNS) + " |", "|" + " --- |" * 5]
            for row in _sample_rows(samples):
                cells = [str(cell).replace("|", "\\|").replace("\n", "<br>") for cell in row]
                lines.append("| " + " | ".join(cells) + " |")
            self.writer.add_text("samples", "\n".join(lines), step)
        self.writer.flush()  # a killed run keeps what it logged, as metrics.jsonl does

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """One W&B run per run directory: its id is kept in `<run dir>/wandb_run_id`, so a run
    continued with --resume logs on into the same W&B run instead of starting a second one."""

    ID_FILE = "wandb_run_id"

    def __init__(self, run_dir: Path, config: dict):
        import wandb

        self.wandb = wandb
        id_file = run_dir / self.ID_FILE
        run_id = id_file.read_text().strip() if id_file.is_file() else None
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "smolgrpo"),
            name=run_dir.name,
            dir=str(run_dir),
            config=config,
            id=run_id,
            resume="allow" if run_id else None,
        )
        if run_id is None:
            id_file.write_text(self.run.id + "\n")

    def log(self, step: int, metrics: dict, samples: list[dict] | None) -> None:
        data: dict = dict(_numbers(metrics))
        if samples:
            data["samples"] = self.wandb.Table(columns=SAMPLE_COLUMNS, data=_sample_rows(samples))
        self.run.log(data, step=step)

    def close(self) -> None:
        self.run.finish()


class TrackioTracker:
    def __init__(self, run_dir: Path, config: dict):
        import trackio

        self.trackio = trackio
        self.run = trackio.init(
            project=os.environ.get("TRACKIO_PROJECT", "smolgrpo"), name=run_dir.name, config=config
        )

    def log(self, step: int, metrics: dict, samples: list[dict] | None) -> None:
        data: dict = dict(_numbers(metrics))
        table = getattr(self.trackio, "Table", None)
        if samples and table is not None:
            data["samples"] = table(columns=SAMPLE_COLUMNS, data=_sample_rows(samples))
        self.trackio.log(data, step=step)

    def close(self) -> None:
        self.trackio.finish()


_CLASSES = {"tensorboard": TensorBoardTracker, "trackio": TrackioTracker, "wandb": WandbTracker}


class Trackers:
    """The trackers a run asked for; `log` mirrors one metrics.jsonl row (and its samples).

    A tracker is a mirror, not the record: one that raises while logging or closing (a W&B
    outage, a full Trackio database) is switched off with one `warning:` line naming it, and
    the run goes on with the others (metrics.jsonl is written before the trackers see a row)."""

    def __init__(self, report_to: list, run_dir: Path, config: dict):
        check_report_to(report_to)
        self.trackers = [(name, _CLASSES[name](Path(run_dir), config)) for name in report_to]

    def log(self, metrics: dict, samples: list[dict] | None) -> None:
        for name, tracker in list(self.trackers):
            try:
                tracker.log(int(metrics["step"]), metrics, samples)
            except Exception as error:  # noqa: BLE001 - whatever the tracker's library raises
                self._switch_off(name, tracker, f"step {metrics['step']}", error)

    def _switch_off(self, name: str, tracker, when: str, error: BaseException) -> None:
        from smolgrpo.errors import warn

        self.trackers = [(n, t) for n, t in self.trackers if t is not tracker]
        text = " ".join(str(error).split())
        reason = f"{type(error).__name__}: {text}" if text else type(error).__name__
        warn(f"tracker '{name}' failed at {when} ({reason}); it is switched off for the rest "
             "of the run (metrics.jsonl has every step)")  # fmt: skip
        try:
            tracker.close()
        except Exception:  # noqa: BLE001 - already reported
            pass

    def close(self) -> None:
        trackers, self.trackers = self.trackers, []
        for name, tracker in trackers:
            try:
                tracker.close()
            except Exception as error:  # noqa: BLE001 - the run is done; say so and go on
                self.trackers = [(name, tracker)]
                self._switch_off(name, tracker, "the end of the run", error)
        self.trackers = []
