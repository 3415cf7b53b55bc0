"""SIGHUP (an ssh disconnect) stops a run like SIGTERM, unless it was ignored at start (`nohup`);
under torchrun the launcher's forwarded copy of a signal is not a second signal, and workers
whose launcher died (SIGUSR1 kills torchrun, which does not forward it) stop with a checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_broken_output import WORKER, worker_env, write_tiny_run_files

from smolgrpo.runs import interrupts
from smolgrpo.runs.checkpoint import latest_good_checkpoint, verify_checkpoint
from smolgrpo.runs.interrupts import STOP_SIGNALS, StopSignal
from smolgrpo.runs.metrics_log import read_metrics

WAIT_S = 120


def test_sighup_stops_like_sigterm():
    assert signal.SIGHUP in STOP_SIGNALS
    exits = []
    with StopSignal(grace_s=60, exit_process=exits.append, torchrun=False) as stop:
        signal.raise_signal(signal.SIGHUP)
        assert stop.requested and stop.signal_name == "SIGHUP" and exits == []
        signal.raise_signal(signal.SIGHUP)
        assert exits == [128 + signal.SIGHUP]


def test_an_ignored_sighup_stays_ignored():
    """`nohup smolgrpo train ...`: the user asked for the run to outlive the terminal."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with StopSignal(grace_s=60, torchrun=False) as stop:
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            signal.raise_signal(signal.SIGHUP)
            assert not stop.requested
            assert signal.getsignal(signal.SIGTERM) == stop._handle
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_under_torchrun_the_forwarded_copy_is_not_a_second_signal(monkeypatch, capsys):
    """Ctrl-C reaches a worker from the terminal and again from the launcher."""
    exits = []
    with StopSignal(grace_s=60, exit_process=exits.append, torchrun=True) as stop:
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)  # the echo
        assert stop.requested and exits == []
        signal.raise_signal(signal.SIGTERM)  # another signal is a second signal
        assert exits == [128 + signal.SIGTERM]
    monkeypatch.setattr(interrupts, "ECHO_WINDOW_S", 0.05)
    with StopSignal(grace_s=60, exit_process=exits.append, torchrun=True):
        signal.raise_signal(signal.SIGINT)
        time.sleep(0.1)
        signal.raise_signal(signal.SIGINT)  # past the window: the user's second Ctrl-C
        assert exits[-1] == 128 + signal.SIGINT
    with StopSignal(grace_s=60, exit_process=exits.append, torchrun=False):
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)  # no launcher: a second signal at once
        assert exits[-1] == 128 + signal.SIGINT and len(exits) == 3


def test_a_worker_whose_launcher_is_gone_stops(monkeypatch, capsys):
    monkeypatch.setattr(interrupts, "LAUNCHER_POLL_S", 0.01)
    # A made-up launcher pid: the test process may itself be orphaned already (parent pid 1,
    # started in the background by a shell that has exited), where no launcher is watched.
    launcher = 4242
    monkeypatch.setattr(os, "getppid", lambda: launcher)
    with StopSignal(grace_s=60, torchrun=True) as stop:
        time.sleep(0.05)
        assert not stop.requested  # the launcher is still there
        monkeypatch.setattr(os, "getppid", lambda: 1)  # re-parented: the launcher died
        deadline = time.monotonic() + 10
        while not stop.requested and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stop.requested and stop.signal_name == "SIGHUP"
    err = capsys.readouterr().err
    assert f"the torchrun launcher (pid {launcher}) is gone: stopping at the next check" in err


# ----------------------------------------------------------------------------- real torchrun
def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc")
def test_sigusr1_to_the_torchrun_launcher_leaves_workers_that_checkpoint_and_exit(tmp_path):
    """2 gloo ranks on CPU under the real torchrun. SIGUSR1 kills the launcher at once (it does
    not forward it); before, its workers trained on unwatched to max_steps."""
    recipe = write_tiny_run_files(tmp_path, max_steps=200)
    run_dir, markers, log = tmp_path / "run", tmp_path / "markers", tmp_path / "log"
    markers.mkdir()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", str(WORKER), "train", "--config", str(recipe)]
    command += ["--no-progress", "--output-dir", str(run_dir)]
    with open(log, "w") as handle:
        launcher = subprocess.Popen(
            command,
            env=worker_env(slow_s=0.05, markers=markers),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + WAIT_S
        while not read_metrics(run_dir / "metrics.jsonl"):
            assert launcher.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        workers = _children(launcher.pid)
        assert len(workers) == 2, workers
        launcher.send_signal(signal.SIGUSR1)
        assert launcher.wait(timeout=WAIT_S) == -signal.SIGUSR1
        while any(_running(pid) for pid in workers):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    finally:
        for pid in workers:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
    output = log.read_text()
    assert f"the torchrun launcher (pid {launcher.pid}) is gone" in output, output
    saved = read_metrics(run_dir / "metrics.jsonl")[-1]["step"]
    assert f"stopped at step {saved}; checkpoint written" in output, output
    newest = latest_good_checkpoint(run_dir)
    assert newest is not None and newest.name == f"step_{saved}"
    assert verify_checkpoint(newest) is None
    assert saved < 200 and not (run_dir / "final").exists()
