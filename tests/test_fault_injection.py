"""Kill `smolgrpo train` at random moments, resume each time, and end where an unbroken run ends.

A tiny random Llama and a character tokenizer are saved with `save_pretrained`, so the CLI
loads them as a local model folder; the run is the real `smolgrpo train` in a subprocess
(through tests/_kill_worker.py, which only adds a toy reward and a pause inside one checkpoint
write). The interruptions, at points drawn from a seed printed with the test's output
(`SMOLGRPO_KILL_SEED=N` replays one):
  1. SIGKILL during start-up or the first step,
  2. SIGKILL after a random number of steps,
  3. SIGKILL while a checkpoint is being written (half of its files on disk, no manifest),
  4. SIGTERM after a random number of steps: must write a checkpoint and exit 0,
  5. SIGKILL after a random number of steps, then half a metrics line is appended (as a kill
     in the middle of a write leaves it) and the newest checkpoint is truncated (a torn write):
     resume must report it in one line and fall back to the previous one.
Each restart uses --resume. The final parameters must equal the uninterrupted run's bit for bit,
and metrics.jsonl must hold every step exactly once with the uninterrupted run's values.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import build_char_tokenizer, build_tiny_model, digits_reward
from safetensors.torch import load_file

from smolgrpo.cli import main as cli
from smolgrpo.rewards import builtin as rewards
from smolgrpo.runs.checkpoint import latest_good_checkpoint, list_checkpoints
from smolgrpo.runs.metrics_log import read_metrics

WORKER = Path(__file__).parent / "_kill_worker.py"
MAX_STEPS = 16
SAVE_EVERY = 2
WAIT_S = 90  # per wait; generous for a loaded 2-core machine


@pytest.fixture
def recipe(tmp_path) -> Path:
    tokenizer = build_char_tokenizer()
    model_dir = tmp_path / "tiny-model"
    build_tiny_model(len(tokenizer)).save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    data = tmp_path / "toy.jsonl"
    rows = [{"question": f"Q{i}", "answer": f"#### {i}"} for i in range(8)]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
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
            "micro_batch_size": 8,
        },
        "run": {"save_every": SAVE_EVERY, "keep_checkpoints": 2, "log_samples_every": 1},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


class Launch:
    """One `smolgrpo train` subprocess, its output in a file (a pipe could fill and block it)."""

    def __init__(self, recipe: Path, run_dir: Path, index: int, pause_at: int | None = None):
        self.output = run_dir.parent / f"launch{index}.log"
        self.marker = run_dir.parent / f"paused{index}"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        env["CUDA_VISIBLE_DEVICES"] = ""
        env.pop("PAUSE_IN_CHECKPOINT", None)
        if pause_at is not None:
            env["PAUSE_IN_CHECKPOINT"] = f"{pause_at}:{self.marker}"
        command = [sys.executable, str(WORKER), "train", "--config", str(recipe), "--no-progress"]
        command += ["--output-dir", str(run_dir)] + (["--resume"] if index > 0 else [])
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
            time.sleep(0.005)

    def wait_until_resumed(self) -> None:
        """After this, metrics.jsonl holds only this run's steps (stale rows were dropped)."""
        self.wait_until(
            lambda: "resumed from" in self.text() or "no checkpoint to resume" in self.text(),
            "the resume message",
        )

    def send(self, sig: int) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout=WAIT_S)


def steps_logged(run_dir: Path) -> int:
    rows = read_metrics(run_dir / "metrics.jsonl")
    return rows[-1]["step"] if rows else 0


def newest_good_step(run_dir: Path) -> int:
    good = latest_good_checkpoint(run_dir)
    return int(good.name.removeprefix("step_")) if good else 0


def test_random_kills_and_resume_end_where_an_uninterrupted_run_ends(
    tmp_path, recipe, monkeypatch, capsys
):
    seed = int(os.environ.get("SMOLGRPO_KILL_SEED") or random.randrange(1_000_000))
    rng = random.Random(seed)
    print(f"kill seed {seed} (replay with SMOLGRPO_KILL_SEED={seed})")

    # The reference: the same command, in this process, never interrupted.
    monkeypatch.setitem(rewards.REWARDS, "digits", rewards.RewardSpec(digits_reward))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = tmp_path / "reference"
        argv = ["train", "--config", str(recipe), "--no-progress", "--output-dir", str(reference)]
        assert cli.main(argv) == 0
    finally:
        torch.set_num_threads(threads)

    run_dir = tmp_path / "killed"
    events = []

    def record(kind: str, launch: Launch, code: int) -> None:
        events.append(
            f"{kind}: exit {code}, {steps_logged(run_dir)} steps logged, newest good "
            f"checkpoint step {newest_good_step(run_dir)}"
        )

    # 1. SIGKILL at a random moment of start-up (imports, model load) or the first step.
    launch = Launch(recipe, run_dir, 0)
    delay = rng.uniform(0.2, 6.0)
    started = time.monotonic()
    while time.monotonic() - started < delay and steps_logged(run_dir) < 1:
        assert launch.process.poll() is None, launch.text()
        time.sleep(0.005)
    record(f"SIGKILL after {time.monotonic() - started:.1f}s", launch, launch.send(signal.SIGKILL))

    # 2. SIGKILL after a random number of steps.
    launch = Launch(recipe, run_dir, 1)
    launch.wait_until_resumed()
    target = newest_good_step(run_dir) + rng.randint(1, 3)
    launch.wait_until(lambda: steps_logged(run_dir) >= target, f"step {target}")
    time.sleep(rng.uniform(0, 0.05))
    record(f"SIGKILL at step >= {target}", launch, launch.send(signal.SIGKILL))

    # 3. SIGKILL while checkpoint N is being written.
    pause_at = (newest_good_step(run_dir) // SAVE_EVERY + rng.randint(1, 2)) * SAVE_EVERY
    launch = Launch(recipe, run_dir, 2, pause_at=pause_at)
    launch.wait_until(launch.marker.exists, f"the write of checkpoint {pause_at}")
    record(f"SIGKILL inside checkpoint {pause_at}", launch, launch.send(signal.SIGKILL))
    assert (run_dir / f"checkpoints/.tmp-step_{pause_at}/model.safetensors").is_file()
    assert not (run_dir / f"checkpoints/step_{pause_at}").exists()
    assert newest_good_step(run_dir) == pause_at - SAVE_EVERY

    # 4. SIGTERM: a checkpoint of the current step, then exit status 0.
    launch = Launch(recipe, run_dir, 3)
    launch.wait_until_resumed()
    target = newest_good_step(run_dir) + rng.randint(1, 2)
    launch.wait_until(lambda: steps_logged(run_dir) >= target, f"step {target}")
    code = launch.send(signal.SIGTERM)
    record(f"SIGTERM at step >= {target}", launch, code)
    assert code == 0, launch.text()
    stopped = steps_logged(run_dir)
    assert f"stopped at step {stopped}; checkpoint written" in launch.text()
    assert newest_good_step(run_dir) == stopped

    # 5. SIGKILL, then half a metrics line and a torn newest checkpoint (once two exist).
    launch = Launch(recipe, run_dir, 4)
    launch.wait_until_resumed()
    target = newest_good_step(run_dir) + rng.randint(1, 3)
    launch.wait_until(
        lambda: steps_logged(run_dir) >= target and len(list_checkpoints(run_dir)) >= 2,
        f"step {target} and two checkpoints",
    )
    record(f"SIGKILL at step >= {target}", launch, launch.send(signal.SIGKILL))
    with open(run_dir / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 999, "loss": 0.')
    checkpoints = list_checkpoints(run_dir)
    assert len(checkpoints) >= 2, "keep_checkpoints=2 should leave a fallback"
    torn = checkpoints[-1] / "model.safetensors"
    torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])

    # Resume to the end.
    launch = Launch(recipe, run_dir, 5)
    assert launch.process.wait(timeout=WAIT_S * 2) == 0, launch.text()
    output = launch.text()
    warnings = [line for line in output.splitlines() if f"{checkpoints[-1]}:" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: "), output
    assert "checksum mismatch in model.safetensors" in warnings[0]
    assert f"resumed from {checkpoints[-2]}" in output
    events.append(
        f"final resume: reported the torn {checkpoints[-1].name} in one line, resumed from "
        f"{checkpoints[-2].name}, exit 0, {steps_logged(run_dir)} steps logged"
    )
    for index in range(1, 6):  # every restart resumed (or found nothing to resume from)
        text = (tmp_path / f"launch{index}.log").read_text()
        assert "resumed from" in text or "no checkpoint to resume" in text, text

    expected = load_file(reference / "final/model.safetensors")
    actual = load_file(run_dir / "final/model.safetensors")
    assert expected.keys() == actual.keys()
    different = [name for name in expected if not torch.equal(expected[name], actual[name])]
    assert not different, f"parameters differ from the uninterrupted run: {different}"

    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [row["step"] for row in rows] == list(range(1, MAX_STEPS + 1))  # once each, no gap
    assert (run_dir / "metrics.jsonl").read_text().endswith("}\n")  # the half line is gone
    for row, expected_row in zip(rows, read_metrics(reference / "metrics.jsonl")):
        for key in ("reward_mean", "loss", "grad_norm", "learning_rate", "bad_steps"):
            assert row[key] == expected_row[key], (row["step"], key)
    assert len(list_checkpoints(run_dir)) == 2

    with capsys.disabled():
        print(f"\nfault injection (seed {seed}): {len(events) - 1} interruptions, all resumed")
        for event in events:
            print(f"  {event}")
        print(f"  final parameters identical to the uninterrupted run ({len(expected)} tensors)")
