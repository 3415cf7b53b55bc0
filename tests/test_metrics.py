"""Training progress: one plain line per step off a terminal, a rich bar with the phase on one."""

from __future__ import annotations

import io

from smolgrpo.runs.progress import TrainProgress, format_duration

GRPO_ROW = {
    "reward_mean": 0.125,
    "accuracy": 0.25,
    "strict_format_rate": 0.5,
    "loss": 0.0123,
    "learning_rate": 2e-5,
    "tokens_per_s": 52.4,
}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_one_plain_line_per_step_when_not_a_terminal():
    stream = io.StringIO()
    with TrainProgress(total_steps=4, start_step=1, stream=stream) as progress:
        for step in (2, 3, 4):
            progress.phase("generating")  # shown in a terminal's bar only
            progress.update({"step": step, **GRPO_ROW})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    for step, line in zip((2, 3, 4), lines):
        assert line.startswith(
            f"train step {step}/4  reward 0.125  acc 25%  strict 50%  loss 0.0123  lr 2.00e-05  "
            "tok/s 52  step "
        ), line
        assert "  eta " in line and "generating" not in line
    assert lines[-1].endswith("eta 0.0s")  # resumed at step 1: the ETA counts steps 2-4 only


def test_keys_a_loop_does_not_log_are_left_out():
    stream = io.StringIO()
    with TrainProgress(2, 0, stream=stream, label="sft") as progress:  # the SFT loop's keys
        progress.update({"step": 1, "loss": 1.25, "learning_rate": 1e-5, "tokens_per_s": 300.0})
    (line,) = stream.getvalue().splitlines()
    assert line.startswith("sft step 1/2  loss 1.25  lr 1.00e-05  tok/s 300  step ")
    assert "reward" not in line and "acc" not in line


def test_disabled_progress_prints_nothing():
    stream = io.StringIO()
    with TrainProgress(2, 0, enabled=False, stream=stream) as progress:
        progress.phase("scoring")
        progress.update({"step": 1, **GRPO_ROW})
    assert stream.getvalue() == ""


def test_terminal_gets_a_bar_with_elapsed_time_and_the_phase():
    from rich.progress import TimeElapsedColumn

    stream = Terminal()
    with TrainProgress(3, 0, stream=stream) as progress:
        assert any(isinstance(c, TimeElapsedColumn) for c in progress.progress.columns)
        progress.phase("scoring")
        assert progress.progress.tasks[0].fields["phase"] == "scoring"
        progress.update({"step": 1, **GRPO_ROW})
        task = progress.progress.tasks[0]
        assert task.completed == 1 and task.fields["phase"] == ""
        assert task.fields["values"].startswith("reward 0.125  acc 25%")
    assert "train step" not in stream.getvalue()  # no plain lines in a terminal


def test_format_duration():
    assert format_duration(42.04) == "42.0s"
    assert format_duration(273.6) == "4m34s"
    assert format_duration(3725) == "1h02m"


def test_a_step_with_a_periodic_eval_shows_the_training_accuracy_once():
    stream = io.StringIO()
    with TrainProgress(2, 0, stream=stream) as progress:
        progress.update({"step": 1, **GRPO_ROW, "eval/accuracy": 0.047})
    (line,) = stream.getvalue().splitlines()
    assert line.count(" acc ") == 1 and "acc 25%" in line and "4.7%" not in line
