"""Opt-in experiment tracking (run.report_to), offline: TensorBoard's event file read back,
W&B in offline mode, Trackio locally; each skipped when its package is not installed."""

from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import build_char_tokenizer, build_tiny_model

from smolgrpo.cli import main as cli
from smolgrpo.config.loading import load_config
from smolgrpo.runs import tracking
from smolgrpo.runs.metrics_log import read_metrics
from smolgrpo.tasks.data import Problem
from smolgrpo.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def train(tmp_path, report_to: str, steps: int = 2, resume: bool = False):
    config = load_config(
        None,
        [
            f"run.output_dir={tmp_path / 'run'}",
            f"run.report_to={report_to}",
            "run.log_samples_every=1",
            "sampling.num_generations=2",
            "sampling.max_completion_length=4",
            "optim.prompts_per_step=1",
            f"optim.max_steps={steps}",
            "optim.warmup_steps=0",
            "prompt.prefill=''",
        ],
    )
    tokenizer = build_char_tokenizer()
    problems = [Problem(f"Q{i}", f"#### {i}", str(i), f"toy:{i}") for i in range(4)]
    trainer = Trainer(
        config,
        resume=resume,
        overwrite=not resume,
        show_progress=False,
        model=build_tiny_model(len(tokenizer)),
        tokenizer=tokenizer,
        train_problems=problems,
    )
    trainer.train()
    return tmp_path / "run", read_metrics(tmp_path / "run/metrics.jsonl")


def test_tensorboard_mirrors_metrics_jsonl(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, rows = train(tmp_path, "[tensorboard]")
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    for key in ("reward_mean", "learning_rate", "completion_length_mean"):
        logged = [(e.step, e.value) for e in events.Scalars(key)]
        assert logged == [
            (row["step"], pytest.approx(row[key], rel=1e-6, abs=1e-9)) for row in rows
        ], key
    text = events.Tensors("samples/text_summary")[0]  # add_text is stored as a tensor summary
    assert text.step == 1 and b"| Q" in text.tensor_proto.string_val[0]


def test_wandb_resumed_run_logs_into_the_same_wandb_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir, _ = train(tmp_path, "[wandb]", steps=1)
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    train(tmp_path, "[wandb]", steps=2, resume=True)  # --resume: one more step
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(path.name.endswith(f"-{run_id}") for path in runs)


def test_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir, _ = train(tmp_path, "[wandb]", steps=1)
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    # The history lives in a binary run-*.wandb log until `wandb sync`: its keys are in it.
    history = next(runs[0].glob("run-*.wandb")).read_bytes()
    assert all(key.encode() in history for key in ("reward_mean", "loss", "reward_time_s/"))
    (table,) = (runs[0] / "files/media/table").glob("samples_*.table.json")
    logged = json.loads((run_dir / "samples/step_1.jsonl").read_text().splitlines()[0])
    rows = json.loads(table.read_text())["data"]
    assert [row[3] for row in rows] == [c["text"] for c in logged["completions"]]


def test_trackio_local(tmp_path, monkeypatch):
    if importlib.util.find_spec("trackio") is None:
        pytest.skip("trackio is not installed")
    import sqlite3

    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    monkeypatch.setenv("TRACKIO_PROJECT", "smolgrpo-test")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run_dir, rows = train(tmp_path, "[trackio]", steps=2)
    assert len(rows) == 2
    # Trackio's local mode keeps each project in one SQLite file: read the logged rows back.
    with sqlite3.connect(tmp_path / "trackio/smolgrpo-test.db") as db:
        logged = db.execute("select run_name, step, metrics from metrics order by id").fetchall()
    assert {name for name, _, _ in logged} == {"run"}  # named after the run folder
    by_step: dict[int, dict] = {}
    for _, step, metrics in logged:
        by_step.setdefault(step, {}).update(json.loads(metrics))
    assert sorted(by_step) == [1, 2]
    for row in rows:
        for key in ("reward_mean", "loss"):
            assert by_step[row["step"]][key] == pytest.approx(row[key])
        assert any(key.startswith("reward_time_s/") for key in by_step[row["step"]])
    table = by_step[1]["samples"]["_value"]
    samples = json.loads((run_dir / "samples/step_1.jsonl").read_text().splitlines()[0])
    texts = [c["text"] for c in samples["completions"]]
    assert [entry["completion"] for entry in table][: len(texts)] == texts


def test_no_tracker_by_default(tmp_path):
    assert load_config(None).run.report_to == []
    run_dir, rows = train(tmp_path, "[]", steps=1)
    assert len(rows) == 1 and not (run_dir / "tensorboard").exists()


@pytest.mark.parametrize(
    "value, parts",
    [
        ("[trackio]", ["run.report_to: trackio needs the 'trackio' package", "smolgrpo[trackio]"]),
        ("[mlflow]", ["'run.report_to': 'mlflow'", "tensorboard, trackio, wandb"]),
        ("tensorboard", ["'run.report_to' should be list"]),
    ],
)
def test_bad_report_to_is_one_line(value, parts, monkeypatch, capsys):
    monkeypatch.setattr(tracking, "_installed", lambda module: False)
    argv = ["train", "--set", f"run.report_to={value}", "--print-config"]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and captured.out == ""
    for part in parts:
        assert part in lines[0], (part, lines[0])


class FakeTracker:
    """Stands in for a tracker's library; the one named 'tensorboard' fails at step 2."""

    logged: dict[str, list[int]] = {}

    def __init__(self, run_dir, config, name):
        self.name = name
        FakeTracker.logged[name] = []

    def log(self, step, metrics, samples):
        if self.name == "tensorboard" and step == 2:
            raise ConnectionError("the server went away")
        FakeTracker.logged[self.name].append(step)

    def close(self):
        if self.name == "tensorboard":
            raise ConnectionError("still away")


def test_a_tracker_that_raises_is_switched_off_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    """metrics.jsonl gets every row first; the failing tracker gets one warning line naming it
    and nothing more; the other tracker and the run go on."""
    for name in ("tensorboard", "wandb"):
        monkeypatch.setitem(
            tracking._CLASSES, name, lambda d, c, name=name: FakeTracker(d, c, name)
        )
    monkeypatch.setattr(tracking, "_installed", lambda module: True)
    run_dir, rows = train(tmp_path, "[tensorboard, wandb]", steps=3)
    assert [row["step"] for row in rows] == [1, 2, 3]
    assert FakeTracker.logged == {"tensorboard": [1], "wandb": [1, 2, 3]}
    err = capsys.readouterr().err.splitlines()
    warnings = [line for line in err if line.startswith("warning: tracker")]
    assert len(warnings) == 1, warnings
    assert "tracker 'tensorboard' failed at step 2" in warnings[0]
    assert "ConnectionError: the server went away" in warnings[0]
    assert (run_dir / "final").is_dir()
