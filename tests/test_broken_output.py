"""A closed or broken stdout/stderr never ends a run: `smolgrpo train ... | head -n 2`, output to
a pipe whose reader is gone (`2>&1 | tee log` with tee killed by the same Ctrl-C), closed
descriptors (`>&- 2>&-`). The run finishes (final/ written, exit 0), a signal still writes its
checkpoint, and the signal handlers' lines and the progress lines are dropped, never raised."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import build_char_tokenizer, build_tiny_model

from smolgrpo.runs.checkpoint import latest_good_checkpoint, verify_checkpoint
from smolgrpo.runs.interrupts import StopSignal
from smolgrpo.runs.metrics_log import read_metrics
from smolgrpo.runs.progress import TrainProgress
from smolgrpo.runs.safe_output import GuardedStream, guard_standard_streams, write_line

WORKER = Path(__file__).parent / "_interrupt_worker.py"  # `smolgrpo` + the toy digits reward
WAIT_S = 120  # generous for a loaded 2-core machine


# ----------------------------------------------------------------------------- a tiny run
def write_tiny_run_files(root: Path, max_steps: int) -> Path:
    """A tiny model folder, toy data and a recipe of `max_steps` steps; returns the recipe."""
    tokenizer = build_char_tokenizer()
    model_dir = root / "tiny-model"
    build_tiny_model(len(tokenizer)).save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    data = root / "data"
    data.mkdir()
    rows = [{"question": f"Q{i}", "answer": f"#### {i}"} for i in range(8)]
    (data / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    recipe = {
        "model": {"name": str(model_dir), "device": "cpu"},
        "data": {"source": str(data)},
        "prompt": {"system_prompt": "S", "prefill": ""},
        "rewards": {"weights": {"digits": 1.0}},
        "sampling": {"num_generations": 4, "max_completion_length": 6},
        "optim": {"learning_rate": 1e-2, "max_steps": max_steps, "prompts_per_step": 2},
        "run": {"save_every": 100, "log_samples_every": 1},
    }
    path = root / "recipe.yaml"
    path.write_text(json.dumps(recipe))  # JSON is YAML
    return path


def worker_env(slow_s: float = 0.0, markers: Path | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    if slow_s:
        env["SLOW_FORWARD"] = f"{slow_s}:{markers}"
    return env


def train_command(recipe: Path, run_dir: Path, *extra: str) -> list[str]:
    """`smolgrpo train` (progress lines on: stdout is no terminal), as a subprocess argv."""
    command = [sys.executable, str(WORKER), "train", "--config", str(recipe)]
    return command + ["--output-dir", str(run_dir), *extra]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    return write_tiny_run_files(tmp_path_factory.mktemp("broken-output"), max_steps=4)


def assert_finished(run_dir: Path, steps: int) -> None:
    assert (run_dir / "final/model.safetensors").is_file()
    assert [row["step"] for row in read_metrics(run_dir / "metrics.jsonl")] == list(
        range(1, steps + 1)
    )


# ----------------------------------------------------------------------------- whole runs
def test_train_into_head_finishes_the_run(recipe, tmp_path):
    """`smolgrpo train ... 2>&1 | head -n 2`: before, the third progress line raised
    BrokenPipeError and the run ended with exit 1 and no final/."""
    run_dir = tmp_path / "run"
    command = " ".join(train_command(recipe, run_dir))
    script = f'{command} 2>&1 | head -n 2; echo "smolgrpo exit ${{PIPESTATUS[0]}}"'
    result = subprocess.run(
        ["bash", "-c", script],
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    lines = result.stdout.splitlines()
    assert lines[:2] == [line for line in lines[:2] if line.startswith("train step ")], lines
    assert lines[2:] == ["smolgrpo exit 0"], result.stdout + result.stderr
    assert_finished(run_dir, 4)


@pytest.mark.parametrize("how", ["pipe reader gone", "descriptors closed"])
def test_train_with_no_one_reading_its_output_finishes_the_run(recipe, tmp_path, how):
    run_dir = tmp_path / "run"
    command = train_command(recipe, run_dir)
    if how == "descriptors closed":  # `>&- 2>&-`: Python starts with sys.stdout = None
        process = subprocess.Popen(
            ["bash", "-c", 'exec "$@" >&- 2>&-', "bash", *command], env=worker_env()
        )
    else:
        read_end, write_end = os.pipe()
        os.close(read_end)  # every write the run makes fails with EPIPE
        process = subprocess.Popen(command, env=worker_env(), stdout=write_end, stderr=write_end)
        os.close(write_end)
    assert process.wait(timeout=WAIT_S) == 0
    assert_finished(run_dir, 4)


def test_sighup_with_the_terminal_gone_still_writes_the_checkpoint(tmp_path):
    """An ssh disconnect: SIGHUP, and every write to the old terminal fails. Before, SIGHUP
    killed the run outright; and any stop line on a broken stderr raised in the handler."""
    recipe = write_tiny_run_files(tmp_path, max_steps=200)
    run_dir, markers = tmp_path / "run", tmp_path / "markers"
    markers.mkdir()
    command = train_command(recipe, run_dir, "--set", "run.stop_grace_s=60")
    process = subprocess.Popen(
        command,
        env=worker_env(slow_s=0.02, markers=markers),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    first = process.stdout.readline().decode()
    assert first.startswith("train step 1/200"), first
    process.stdout.close()  # the terminal is gone: the next progress line fails
    deadline = time.monotonic() + WAIT_S
    while len(read_metrics(run_dir / "metrics.jsonl")) < 3:
        assert process.poll() is None, "the run died on its broken output"
        assert time.monotonic() < deadline, "no step 3"
        time.sleep(0.05)
    process.send_signal(signal.SIGHUP)
    assert process.wait(timeout=WAIT_S) == 0
    newest = latest_good_checkpoint(run_dir)
    assert newest is not None and verify_checkpoint(newest) is None
    assert newest.name == f"step_{read_metrics(run_dir / 'metrics.jsonl')[-1]['step']}"
    assert not (run_dir / "final").exists()


# ----------------------------------------------------------------------------- the parts
class BrokenPipe(io.StringIO):
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")


def dead_stream(kind: str):
    if kind == "None":  # what Python sets when the descriptor was closed at start
        return None
    stream = BrokenPipe() if kind == "broken pipe" else io.StringIO()
    if kind == "closed file":
        stream.close()
    return stream


@pytest.mark.parametrize("kind", ["broken pipe", "closed file", "None"])
def test_signal_handlers_on_a_dead_stderr_still_stop_and_exit(monkeypatch, kind):
    # Set in the test itself: pytest's output capture replaces sys.stderr between a fixture's
    # set-up and the test.
    monkeypatch.setattr(sys, "stderr", dead_stream(kind))
    monkeypatch.setattr(sys, "stdout", dead_stream(kind))
    exits = []
    with StopSignal(grace_s=60, describe=lambda: "newest: step 3", exit_process=exits.append) as s:
        signal.raise_signal(signal.SIGTERM)  # before: BrokenPipeError out of the handler
        assert s.requested and s.signal_name == "SIGTERM"
        signal.raise_signal(signal.SIGINT)  # the second signal still exits
        assert exits == [128 + signal.SIGINT]

    expired = threading.Event()
    with StopSignal(grace_s=0.05, exit_process=lambda status: expired.set()):
        signal.raise_signal(signal.SIGUSR1)
        assert expired.wait(timeout=30), "the grace watchdog did not exit"


def test_force_exit_happens_even_when_describing_and_writing_fail(monkeypatch):
    exits = []
    monkeypatch.setattr(sys, "stderr", BrokenPipe())

    def describe():
        raise OSError("checkpoints folder gone")

    stop = StopSignal(describe=describe, exit_process=exits.append)
    stop._force_exit("second SIGTERM", signal.SIGTERM)
    assert exits == [128 + signal.SIGTERM]


def test_progress_lines_stop_on_a_broken_stream_and_never_raise():
    broken = BrokenPipe()
    progress = TrainProgress(total_steps=3, start_step=0, stream=broken)
    with progress:
        progress.phase("generating")
        progress.update({"step": 1, "reward_mean": 0.5})  # before: BrokenPipeError
        assert not progress.enabled
        progress.update({"step": 2, "reward_mean": 0.5})


class DeadTerminal(io.StringIO):
    """A terminal that hung up: isatty, and every write fails with EIO."""

    def isatty(self):
        return True

    def write(self, text):
        raise OSError(5, "Input/output error")


def test_the_progress_bar_on_a_hung_up_terminal_never_raises():
    progress = TrainProgress(total_steps=3, start_step=0, stream=DeadTerminal())
    assert progress.progress is not None  # the rich bar
    with progress:
        progress.phase("generating")
        progress.update({"step": 1, "reward_mean": 0.5})
    assert progress.progress is None and not progress.enabled


def test_guarded_stream_drops_writes_once_broken():
    guarded = GuardedStream(BrokenPipe())
    assert guarded.write("a line\n") == len("a line\n")
    assert guarded.broken
    guarded.flush()
    print("more", file=guarded)
    assert not guarded.isatty()
    assert write_line("x", guarded) is False
    assert write_line("x", None) is False
    healthy = io.StringIO()
    assert write_line("x", GuardedStream(healthy)) and healthy.getvalue() == "x\n"


def test_guard_standard_streams_puts_the_streams_back(capsys):
    before = sys.stdout, sys.stderr
    with guard_standard_streams():
        assert isinstance(sys.stdout, GuardedStream) and isinstance(sys.stderr, GuardedStream)
        print("to stdout")
        print("to stderr", file=sys.stderr)
    assert (sys.stdout, sys.stderr) == before
    captured = capsys.readouterr()
    assert captured.out == "to stdout\n" and captured.err == "to stderr\n"
