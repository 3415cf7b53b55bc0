"""Signals in the middle of a step: a bounded stop, a verified checkpoint, a bit-identical resume.

The interrupted runs are the real `smolgrpo train` in a subprocess (tests/_interrupt_worker.py,
which makes every forward of the tiny model sleep, so a step lasts seconds and the signal lands
inside a chosen phase of it). After SIGTERM or SIGUSR1 the run must exit 0 within
`run.stop_grace_s`, leave a checkpoint of the last finished step that verifies, and `--resume`
must end with the parameters of an uninterrupted run, bit for bit. A second signal, or a step that
cannot reach a check point before the grace runs out, must exit at once in one line, leaving the
newest checkpoint as it was.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import build_char_tokenizer, build_tiny_model, digits_reward
from safetensors.torch import load_file

from smolgrpo.cli import main as cli
from smolgrpo.config.loading import load_config
from smolgrpo.errors import SmolGRPOError
from smolgrpo.generation.rollout import generate
from smolgrpo.rewards import builtin as rewards
from smolgrpo.runs.checkpoint import latest_good_checkpoint, list_checkpoints, verify_checkpoint
from smolgrpo.runs.interrupts import StopRequested, StopSignal
from smolgrpo.runs.metrics_log import read_metrics

WORKER = Path(__file__).parent / "_interrupt_worker.py"
MAX_STEPS = 6
GRACE_S = 20.0  # run.stop_grace_s, the default
WAIT_S = 120  # per wait; generous for a loaded 2-core machine
SLOW_S = 0.15  # each forward of the interrupted runs sleeps this long


# ----------------------------------------------------------------------------- the run
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny model folder, toy data, a recipe and the uninterrupted reference run."""
    root = tmp_path_factory.mktemp("interrupts")
    tokenizer = build_char_tokenizer()
    model_dir = root / "tiny-model"
    build_tiny_model(len(tokenizer)).save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    data = root / "data"
    data.mkdir()
    for split, count in (("train", 8), ("test", 2)):
        rows = [{"question": f"Q{i}", "answer": f"#### {i}"} for i in range(count)]
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {
        "model": {"name": str(model_dir), "device": "cpu"},
        "data": {"source": str(data)},
        "prompt": {"system_prompt": "S", "prefill": ""},
        "rewards": {"weights": {"digits": 1.0}},
        "sampling": {"num_generations": 4, "max_completion_length": 6},
        "optim": {
            "learning_rate": 1e-2,
            "warmup_steps": 2,
            "max_steps": MAX_STEPS,
            "prompts_per_step": 2,
            "micro_batch_size": 2,  # 4 micro-batches a step: signals can land between them
        },
        "run": {
            "save_every": 4,  # a stop at step 2 or 3 must write its own checkpoint
            "keep_checkpoints": 2,
            "log_samples_every": 1,
            "eval_every": 2,
            "eval_limit": 2,
            "eval_batch_size": 1,
            "stop_grace_s": GRACE_S,
        },
    }
    recipe = root / "recipe.yaml"
    recipe.write_text(json.dumps(config))  # JSON is YAML
    reference = root / "reference"
    assert train_in_process(recipe, reference) == 0
    return recipe, reference


def train_in_process(recipe: Path, run_dir: Path, *extra: str) -> int:
    """`smolgrpo train` in this process, with one thread as in the subprocesses."""
    argv = ["train", "--config", str(recipe), "--no-progress", "--output-dir", str(run_dir)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    previous = rewards.REWARDS.get("digits")
    rewards.REWARDS["digits"] = rewards.RewardSpec(digits_reward)
    try:
        return cli.main(argv + list(extra))
    finally:
        torch.set_num_threads(threads)
        if previous is None:
            rewards.REWARDS.pop("digits", None)


class SlowRun:
    """`smolgrpo train` in a subprocess whose forwards sleep; output in a file."""

    def __init__(self, recipe: Path, run_dir: Path, *overrides: str):
        self.run_dir = run_dir
        self.markers = run_dir.parent / f"{run_dir.name}-markers"
        self.markers.mkdir(parents=True)
        self.output = run_dir.parent / f"{run_dir.name}.log"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        env["CUDA_VISIBLE_DEVICES"] = ""
        env["SLOW_FORWARD"] = f"{SLOW_S}:{self.markers}"
        command = [sys.executable, str(WORKER), "train", "--config", str(recipe)]
        command += ["--no-progress", "--output-dir", str(run_dir)]
        for override in overrides:
            command += ["--set", override]
        with open(self.output, "w") as handle:
            self.process = subprocess.Popen(command, env=env, stdout=handle, stderr=handle)

    def text(self) -> str:
        return self.output.read_text()

    def wait_until(self, ready, what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while not ready():
            if self.process.poll() is not None:
                pytest.fail(f"run exited ({self.process.returncode}) before {what}:\n{self.text()}")
            if time.monotonic() > deadline:
                self.process.kill()
                pytest.fail(f"timed out waiting for {what}:\n{self.text()}")
            time.sleep(0.01)

    def wait_for_phase(self, after_step: int, phase: str) -> None:
        """Until step `after_step` is logged and then a forward of `phase` has started."""
        self.wait_until(lambda: steps_logged(self.run_dir) >= after_step, f"step {after_step}")
        (self.markers / phase).unlink(missing_ok=True)
        self.wait_until((self.markers / phase).exists, f"a {phase} forward")

    def signal_and_wait(self, sig: int) -> tuple[int, float]:
        """(exit status, seconds from the signal to the exit, seen from outside)."""
        sent = time.monotonic()
        self.process.send_signal(sig)
        code = self.process.wait(timeout=WAIT_S)
        return code, time.monotonic() - sent


def steps_logged(run_dir: Path) -> int:
    rows = read_metrics(run_dir / "metrics.jsonl")
    return rows[-1]["step"] if rows else 0


def stop_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("stopped at step")]
    assert len(lines) == 1, output
    return lines[0]


def assert_resume_matches_reference(recipe: Path, run_dir: Path, reference: Path) -> None:
    assert train_in_process(recipe, run_dir, "--resume") == 0
    expected = load_file(reference / "final/model.safetensors")
    actual = load_file(run_dir / "final/model.safetensors")
    assert expected.keys() == actual.keys()
    different = [name for name in expected if not torch.equal(expected[name], actual[name])]
    assert not different, f"parameters differ from the uninterrupted run: {different}"
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [row["step"] for row in rows] == list(range(1, MAX_STEPS + 1))
    for row, expected_row in zip(rows, read_metrics(reference / "metrics.jsonl")):
        for key in ("reward_mean", "loss", "grad_norm", "learning_rate"):
            assert row[key] == expected_row[key], (row["step"], key)


@pytest.mark.parametrize(
    ("sig", "phase"),
    [(signal.SIGTERM, "decode"), (signal.SIGUSR1, "train")],
    ids=["SIGTERM-in-decode", "SIGUSR1-between-micro-batches"],
)
def test_signal_mid_step_checkpoints_the_last_step_and_resumes_bit_identically(
    setup, tmp_path, sig, phase, capsys
):
    recipe, reference = setup
    run = SlowRun(recipe, tmp_path / "run")
    run.wait_for_phase(after_step=2, phase=phase)  # inside step 3 (or later)
    code, elapsed = run.signal_and_wait(sig)
    output = run.text()
    assert code == 0, output
    assert elapsed < GRACE_S, f"took {elapsed:.1f} s to exit:\n{output}"
    line = stop_line(output)
    saved = steps_logged(run.run_dir)  # the cut step logged nothing
    assert line.startswith(f"stopped at step {saved}; checkpoint written"), line
    assert f"step {saved + 1} cut short and dropped" in line, line
    assert f"{sig.name}, " in line and " s from signal to exit" in line, line
    newest = latest_good_checkpoint(run.run_dir)
    assert newest is not None and newest.name == f"step_{saved}"
    assert verify_checkpoint(newest) is None
    assert not (run.run_dir / "final").exists()

    assert_resume_matches_reference(recipe, run.run_dir, reference)
    with capsys.disabled():
        print(f"\n  {sig.name} in {phase}: exit 0 after {elapsed:.2f} s (outside view); {line}")


def test_signal_in_periodic_eval_keeps_the_step_and_drops_its_eval(setup, tmp_path, capsys):
    recipe, reference = setup
    run = SlowRun(recipe, tmp_path / "run")
    run.wait_until(lambda: (run.markers / "eval").exists(), "the periodic eval of step 2")
    code, elapsed = run.signal_and_wait(signal.SIGINT)
    output = run.text()
    assert code == 0 and elapsed < GRACE_S, output
    line = stop_line(output)
    assert line.startswith("stopped at step 2; checkpoint written"), line
    assert "the periodic eval of step 2 cut short" in line, line
    rows = read_metrics(run.run_dir / "metrics.jsonl")
    assert [row["step"] for row in rows] == [1, 2]
    assert not any(key.startswith("eval/") for key in rows[1])  # the cut eval is not logged
    assert latest_good_checkpoint(run.run_dir).name == "step_2"

    assert_resume_matches_reference(recipe, run.run_dir, reference)
    with capsys.disabled():
        print(f"\n  SIGINT in periodic eval: exit 0 after {elapsed:.2f} s; {line}")


def test_second_signal_exits_at_once_and_keeps_the_newest_checkpoint(setup, tmp_path, capsys):
    recipe, _ = setup
    run = SlowRun(recipe, tmp_path / "run", "run.save_every=1")
    run.wait_until(lambda: len(list_checkpoints(run.run_dir)) >= 1, "a first checkpoint")
    (run.markers / "stall").touch()  # the next forward never reaches a check point
    run.wait_until((run.markers / "stalled").exists, "a stalled forward")
    newest = list_checkpoints(run.run_dir)[-1]
    run.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    code, elapsed = run.signal_and_wait(signal.SIGINT)
    output = run.text()
    assert code == 128 + signal.SIGINT, output
    assert elapsed < GRACE_S, output
    lines = [line for line in output.splitlines() if "exiting at once" in line]
    assert lines == [
        f"second SIGINT: exiting at once without a new checkpoint; "
        f"the newest checkpoint is {newest}"
    ], output
    assert list_checkpoints(run.run_dir)[-1] == newest
    assert verify_checkpoint(newest) is None
    with capsys.disabled():
        print(f"\n  second signal: exit {code} after {elapsed:.2f} s; {lines[0]}")


def test_a_step_stuck_past_the_grace_exits_without_a_new_checkpoint(setup, tmp_path, capsys):
    recipe, _ = setup
    grace = 1.0
    run = SlowRun(recipe, tmp_path / "run", "run.save_every=1", f"run.stop_grace_s={grace}")
    run.wait_until(lambda: len(list_checkpoints(run.run_dir)) >= 1, "a first checkpoint")
    (run.markers / "stall").touch()
    run.wait_until((run.markers / "stalled").exists, "a stalled forward")
    newest = list_checkpoints(run.run_dir)[-1]
    code, elapsed = run.signal_and_wait(signal.SIGTERM)
    output = run.text()
    assert code == 128 + signal.SIGTERM, output
    assert elapsed < 60, output  # the stalled forward alone would take 120 s
    lines = [line for line in output.splitlines() if "has not stopped" in line]
    assert len(lines) == 1 and lines[0].endswith(f"the newest checkpoint is {newest}"), output
    assert "(run.stop_grace_s)" in lines[0]
    assert list_checkpoints(run.run_dir)[-1] == newest
    with capsys.disabled():
        print(f"\n  grace {grace:g} s ran out: exit {code} after {elapsed:.2f} s; {lines[0]}")


# ----------------------------------------------------------------------------- the parts
def test_stop_signal_handlers_second_signal_and_grace(capsys):
    exits = []
    previous = signal.getsignal(signal.SIGUSR1)
    with StopSignal(grace_s=60, describe=lambda: "newest: step 3", exit_process=exits.append) as s:
        assert not s.requested and not s()
        s.check()  # no stop asked for: nothing happens
        signal.raise_signal(signal.SIGUSR1)
        assert s.requested and s() and s.signal_name == "SIGUSR1"
        with pytest.raises(StopRequested):
            s.check()
        assert "SIGUSR1, " in s.summary() and s.summary().endswith("s from signal to exit")
        signal.raise_signal(signal.SIGTERM)
        assert exits == [128 + signal.SIGTERM]
    assert signal.getsignal(signal.SIGUSR1) is previous
    err = capsys.readouterr().err
    assert "second SIGTERM: exiting at once without a new checkpoint; newest: step 3" in err

    expired = threading.Event()
    with StopSignal(grace_s=0.05, exit_process=lambda status: expired.set()) as s:
        signal.raise_signal(signal.SIGTERM)
        assert expired.wait(timeout=30), "the grace watchdog did not fire"
    assert "SIGTERM 0.05 s ago and the run has not stopped" in capsys.readouterr().err

    s = StopSignal()
    s.request()  # no signal: a stop, but no watchdog and no timing
    assert s.requested and s.summary() == "stop requested"


def test_decode_stops_between_steps_when_asked(tiny_model, char_tokenizer):
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) > 3

    was_training = tiny_model.training
    with pytest.raises(StopRequested):
        generate(
            tiny_model,
            char_tokenizer,
            ["ab", "c"],
            max_new_tokens=20,
            ignore_eos=True,
            should_stop=should_stop,
        )
    assert len(calls) == 4  # three decode steps ran, the fourth was not started
    assert tiny_model.training == was_training  # the model's mode is put back


def test_stop_grace_must_be_positive(tmp_path):
    assert load_config(None).run.stop_grace_s == 20.0
    for value in ("0", "-1", ".nan"):
        with pytest.raises(SmolGRPOError, match=r"run\.stop_grace_s.*\(must be > 0\)"):
            load_config(None, [f"run.stop_grace_s={value}"])
