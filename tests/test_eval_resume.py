"""`smolgrpo eval` keeps its work: samples appended per batch, a stop signal writes the metrics
of the problems done (partial) and exits 0, and `--resume` ends with the metrics and samples of
an uninterrupted eval (a sampled eval, so the random draws must continue where they stopped)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import build_char_tokenizer, build_tiny_model

from smolgrpo.cli import main as cli
from smolgrpo.evaluation import output_folder as eval_output
from smolgrpo.runs.interrupts import STOP_SIGNALS

pytestmark = pytest.mark.usefixtures("one_thread")

NUM_PROBLEMS, BATCH = 8, 2
# Every stop signal smolgrpo handles among these (SIGHUP where interrupts.py lists it).
SIGNALS = [
    name for name in ("SIGINT", "SIGTERM", "SIGHUP") if getattr(signal, name, None) in STOP_SIGNALS
]
# What differs between two runs of the same eval: the clock.
NOT_COMPARED = {"time_s"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-resume")
    tokenizer = build_char_tokenizer()
    build_tiny_model(len(tokenizer)).save_pretrained(root / "model", safe_serialization=True)
    tokenizer.save_pretrained(root / "model")
    (root / "data").mkdir()
    rows = [{"question": f"What is {i}+1?", "answer": f"#### {i + 1}"} for i in range(12)]
    (root / "data/test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def eval_argv(setup: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "eval", "--model", str(setup / "model"), "--data", str(setup / "data"),
        "--limit", str(NUM_PROBLEMS), "--batch-size", str(BATCH), "--max-new-tokens", "6",
        "--num-samples", "2", "--temperature", "1.0", "--device", "cpu", "--no-progress",
        "--output-dir", str(output_dir), *extra,
    ]  # fmt: skip


def read(folder: Path) -> tuple[dict, str]:
    metrics = json.loads((folder / "metrics.json").read_text())
    return metrics, (folder / "samples.jsonl").read_text()


@pytest.fixture(scope="module")
def uninterrupted(setup):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the tests run (one_thread): the same arithmetic
    try:
        assert cli.main(eval_argv(setup, setup / "full")) == 0
    finally:
        torch.set_num_threads(threads)
    return read(setup / "full")


def assert_same_eval(folder: Path, uninterrupted) -> None:
    metrics, samples = read(folder)
    expected, expected_samples = uninterrupted
    assert "partial" not in metrics and metrics["num_problems"] == NUM_PROBLEMS
    assert set(metrics) == set(expected)
    for key in set(expected) - NOT_COMPARED:
        assert metrics[key] == expected[key], key
    assert samples == expected_samples


def stop_after_batches(monkeypatch, count: int, signum: int) -> None:
    """Send `signum` to this process once `count` batches are on disk (as a user would)."""
    append = eval_output.append_samples
    seen = []

    def append_then_signal(output_dir, records):
        append(output_dir, records)
        seen.append(len(records))
        if len(seen) == count:
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(eval_output, "append_samples", append_then_signal)


@pytest.mark.parametrize("name", SIGNALS)
def test_a_signal_writes_partial_metrics_and_resume_finishes_the_same_eval(
    name, setup, uninterrupted, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "eval"
    stop_after_batches(monkeypatch, 2, getattr(signal, name))
    assert cli.main(eval_argv(setup, out)) == 0
    err = capsys.readouterr().err
    assert f"{name}: 4 of {NUM_PROBLEMS} problems done; wrote the partial" in err
    metrics, samples = read(out)
    assert metrics["partial"] is True and metrics["num_problems"] == 2 * BATCH
    assert metrics["num_problems_planned"] == NUM_PROBLEMS
    assert len(samples.splitlines()) == 2 * BATCH * 2  # two samples per problem
    # The partial numbers are those of the problems done (the uninterrupted eval's first ones).
    done = [json.loads(line) for line in samples.splitlines()]
    assert metrics["accuracy"] == sum(r["correct"] for r in done) / len(done)
    monkeypatch.undo()
    assert cli.main(eval_argv(setup, out, "--resume")) == 0
    assert f"resuming {out}: 4 of {NUM_PROBLEMS} problems done" in capsys.readouterr().err
    assert_same_eval(out, uninterrupted)


def test_resume_after_a_kill_drops_the_batch_cut_short(setup, uninterrupted, tmp_path, monkeypatch):
    # SIGKILL gives no chance to clean up: a half-written line, and a batch appended whose
    # state was never saved. Resume keeps what eval_state.json counts and redoes the rest.
    out = tmp_path / "eval"
    stop_after_batches(monkeypatch, 1, signal.SIGTERM)
    assert cli.main(eval_argv(setup, out)) == 0
    full_lines = uninterrupted[1].splitlines(keepends=True)
    with open(out / "samples.jsonl", "a") as handle:
        handle.writelines(full_lines[4:8])  # batch 2, on disk but not in the state
        handle.write(full_lines[8][:30])  # and a line cut short
    monkeypatch.undo()
    assert cli.main(eval_argv(setup, out, "--resume")) == 0
    assert_same_eval(out, uninterrupted)


def test_resume_of_a_finished_eval_changes_nothing(setup, uninterrupted, tmp_path):
    out = tmp_path / "eval"
    assert cli.main(eval_argv(setup, out)) == 0
    assert cli.main(eval_argv(setup, out, "--resume")) == 0
    assert_same_eval(out, uninterrupted)


def test_overwrite_replaces_an_earlier_eval(setup, uninterrupted, tmp_path, capsys):
    out = tmp_path / "eval"
    assert cli.main([*eval_argv(setup, out), "--limit", "2"]) == 0
    assert cli.main(eval_argv(setup, out)) == 2
    assert "already holds an eval" in capsys.readouterr().err
    assert cli.main(eval_argv(setup, out, "--overwrite")) == 0
    assert_same_eval(out, uninterrupted)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (["--temperature", "0.5"], "'temperature' was 1.0, now 0.5"),
        (["--limit", "4"], "'limit' was 8, now 4"),
        (["--prefill", "x"], "'prompt' was"),
        (["--batch-size", "4"], "'batch_size' was 2, now 4"),
    ],
)
def test_resume_with_other_settings_is_one_line(setup, tmp_path, monkeypatch, capsys, change, key):
    out = tmp_path / "eval"
    stop_after_batches(monkeypatch, 1, signal.SIGTERM)
    assert cli.main(eval_argv(setup, out)) == 0
    monkeypatch.undo()
    samples = (out / "samples.jsonl").read_text()
    capsys.readouterr()
    assert cli.main([*eval_argv(setup, out, "--resume"), *change]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {out}: cannot resume: {key}")
    assert (out / "samples.jsonl").read_text() == samples


def test_resume_of_an_eval_from_before_resume_is_one_line(setup, tmp_path, capsys):
    out = tmp_path / "old-eval"  # what eval wrote before it had eval_config.json
    out.mkdir()
    (out / "metrics.json").write_text('{"accuracy": 0.5}')
    (out / "samples.jsonl").write_text("")
    assert cli.main(eval_argv(setup, out, "--resume")) == 2
    line = capsys.readouterr().err.strip()
    assert "cannot be continued; --overwrite replaces it" in line
    assert cli.main(eval_argv(setup, out, "--overwrite")) == 0  # an old eval may be replaced


def test_sigterm_to_a_real_eval_process(setup, uninterrupted, tmp_path):
    out = tmp_path / "eval"
    argv = eval_argv(setup, out)
    argv[argv.index("--limit") + 1] = str(NUM_PROBLEMS)
    argv[argv.index("--max-new-tokens") + 1] = "40"  # slow enough to be signalled mid-way
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "smolgrpo.cli.main", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 120
    samples = out / "samples.jsonl"
    while time.monotonic() < deadline and process.poll() is None:
        if samples.is_file() and samples.stat().st_size > 0:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "Traceback" not in err
    metrics = json.loads((out / "metrics.json").read_text())
    if metrics.get("partial"):  # the usual case; a very fast machine may have finished first
        assert "SIGTERM:" in err and metrics["num_problems"] < NUM_PROBLEMS
    resumed = eval_argv(setup, out, "--resume")
    resumed[resumed.index("--max-new-tokens") + 1] = "40"
    assert cli.main(resumed) == 0
    reference = tmp_path / "reference"
    full = eval_argv(setup, reference)
    full[full.index("--max-new-tokens") + 1] = "40"
    assert cli.main(full) == 0
    assert_same_eval(out, read(reference))
