"""Stop a training loop on the signals that schedulers and people send, within a bounded time.

SIGINT (Ctrl-C), SIGTERM (what `kill`, SLURM and Kubernetes send before SIGKILL), SIGHUP (the
terminal went away: an ssh disconnect) and SIGUSR1 (what SLURM's `--signal=USR1@SECONDS` sends
before a requeue) all mean the same thing: the loop stops at its next check point (between
micro-batches, between decode steps, between evaluation batches), drops the step in progress,
writes a checkpoint of the last finished step and exits 0. A SIGHUP that was ignored when the run
started (`nohup smolgrpo train ...`) stays ignored. The handlers' lines never raise: on a closed
or broken stderr (`2>&1 | tee log` with tee killed by the same Ctrl-C) they are dropped
(safe_output.py).

Two safety nets bound the time from the signal to the exit:
- a second signal exits at once, with one line saying which checkpoint is the newest on disk;
- `grace_s` after the first signal, a watchdog thread exits the same way if the loop has not
  finished by then (a scheduler sends SIGKILL soon after SIGTERM anyway: SLURM 30 s later by
  default). Exiting in the middle of a checkpoint write is safe: checkpoints are written to a
  staging folder and renamed into place (checkpoint.py), so the previous one stays the newest.
Both forced exits use status 128 + the signal's number, as a process killed by it would.

Under torchrun (several processes): the launcher catches SIGINT, SIGTERM, SIGHUP and SIGQUIT and
sends the same signal on to every worker, then SIGKILLs those still running 30 s later (the
default shutdown timeout: keep run.stop_grace_s below it). So signal the launcher with SIGTERM
(or SIGINT), or signal the workers themselves; all ranks stop together at the end of the step in
progress. SIGUSR1 is not among the launcher's signals: sent to the launcher, it kills it at once
and leaves the workers running on their own. Either make the launcher forward it, `torchrun
--signals-to-handle SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1 ...` (torch >= 2.9), or send it to the
workers (`pkill -USR1 -P LAUNCHER_PID`; SLURM's `--signal=USR1@SECONDS` without `B:` signals
every process of the step). Should the launcher die all the same, each worker notices within
`LAUNCHER_POLL_S` (its parent process changed) and stops as on SIGHUP, writing the checkpoint.
Ctrl-C in a terminal reaches every worker twice, from the terminal and forwarded by the launcher:
under torchrun a repeat of the same signal within `ECHO_WINDOW_S` of the first is taken for that
echo, not for a second signal.

Usage (trainer.py; sft.py inherits it):

    with StopSignal(grace_s=20, describe=lambda: "the newest checkpoint is step 6") as stop:
        for step in ...:
            stop.check()  # raises StopRequested once a stop was asked for
            ...

`StopSignal` is also a `should_stop` callback (`stop()` is `stop.requested`), which is how
`rollout.decode` and `evaluate.evaluate` take it.
"""

from __future__ import annotations

import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable

import torch

from smolgrpo.runs.safe_output import write_line

# SIGHUP and SIGUSR1 do not exist on Windows.
STOP_SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1")
    if hasattr(signal, name)
)
ECHO_WINDOW_S = 2.0  # under torchrun: the launcher's forwarded copy of a signal arrives within it
LAUNCHER_POLL_S = 1.0  # under torchrun: how often a worker checks that its launcher still runs


def launched_by_torchrun() -> bool:
    """True in a worker process started by torchrun (torch.distributed.elastic)."""
    return "TORCHELASTIC_RUN_ID" in os.environ


class StopRequested(Exception):
    """Raised at a check point once a stop was asked for: the work in progress is dropped."""


def rng_snapshot() -> dict:
    """Every RNG a step draws from (torch CPU, every CUDA device, Python's `random`), taken at
    the step's start so that a dropped step can be undone."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return {"torch_cpu": torch.get_rng_state(), "torch_cuda": cuda, "python": random.getstate()}


def restore_rng(snapshot: dict) -> None:
    torch.set_rng_state(snapshot["torch_cpu"])
    if snapshot["torch_cuda"] is not None:
        torch.cuda.set_rng_state_all(snapshot["torch_cuda"])
    random.setstate(snapshot["python"])


def _say(line: str) -> None:
    """One line on stderr, from a signal handler or a watchdog thread; never raises (a closed or
    broken stderr drops it, a handler that interrupted a write to stderr writes to fd 2)."""
    write_line(line, sys.stderr)


class StopSignal:
    """Installs handlers for STOP_SIGNALS while entered; `requested` turns True on the first.

    `describe()` names the newest checkpoint, for the line printed on a forced exit.
    `announce` prints one line when the first signal arrives (rank 0 only, under torchrun).
    `exit_process(status)` ends the process on a forced exit (default `os._exit`: no clean-up
    that could hang).
    `torchrun` (default: `launched_by_torchrun()`) takes a repeat of the first signal within
    ECHO_WINDOW_S for the launcher's forwarded copy, and watches the launcher (the parent
    process): when it is gone, the run stops as on SIGHUP.
    """

    def __init__(
        self,
        grace_s: float = 20.0,
        describe: Callable[[], str] | None = None,
        announce: bool = True,
        exit_process: Callable[[int], None] | None = None,
        torchrun: bool | None = None,
    ):
        self.grace_s = grace_s
        self.describe = describe
        self.announce = announce
        self._exit = exit_process or os._exit
        self.torchrun = launched_by_torchrun() if torchrun is None else torchrun
        self.requested = False
        self.signal_name: str | None = None  # the first signal received, None if not a signal
        self.received_at: float | None = None  # time.monotonic() of that signal
        self._previous: dict[int, object] = {}
        self._watchdog: threading.Timer | None = None
        self._left = threading.Event()  # set on __exit__: ends the launcher watch

    # ------------------------------------------------------------------ handlers
    def __enter__(self) -> StopSignal:
        # Only the main thread may set handlers (a loop run in another thread stops on
        # request() alone).
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                if sig == getattr(signal, "SIGHUP", None) and (
                    signal.getsignal(sig) == signal.SIG_IGN
                ):
                    continue  # `nohup`: the user asked for the run to outlive the terminal
                self._previous[sig] = signal.signal(sig, self._handle)
        self._left.clear()
        if self.torchrun and os.getppid() != 1:
            watch = threading.Thread(target=self._watch_launcher, args=(os.getppid(),))
            watch.daemon = True
            watch.start()
        return self

    def __exit__(self, *_) -> bool:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        self._left.set()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        return False

    def _handle(self, signum: int, _frame) -> None:
        name = signal.Signals(signum).name
        if self.signal_name is not None:  # the second signal: no more waiting
            if self._is_echo(name):
                return
            self._force_exit(f"second {name}: exiting at once without a new checkpoint", signum)
            return
        self._begin_stop(name, signum, f"{name}: stopping", "send it again to exit at once")

    def _is_echo(self, name: str) -> bool:
        """Under torchrun, the launcher's forwarded copy of the signal that also reached us."""
        return (
            self.torchrun
            and name == self.signal_name
            and self.received_at is not None
            and time.monotonic() - self.received_at < ECHO_WINDOW_S
        )

    def _begin_stop(self, name: str, signum: int, what: str, hint: str) -> None:
        self.signal_name, self.received_at = name, time.monotonic()
        self.requested = True
        if self.announce:
            _say(
                f"{what} at the next check point and writing a checkpoint (at most "
                f"{self.grace_s:g} s; {hint})"
            )
        if math.isfinite(self.grace_s):
            self._watchdog = threading.Timer(self.grace_s, self._grace_expired, args=(signum,))
            self._watchdog.daemon = True
            self._watchdog.start()

    def _watch_launcher(self, launcher_pid: int) -> None:
        """Under torchrun: stop as on SIGHUP once the launcher is gone (its workers are then
        re-parented), e.g. killed by a SIGUSR1 it does not forward."""
        while not self._left.wait(LAUNCHER_POLL_S):
            if os.getppid() != launcher_pid:
                if self.signal_name is None:
                    self._begin_stop(
                        "SIGHUP",
                        getattr(signal, "SIGHUP", signal.SIGTERM),
                        f"the torchrun launcher (pid {launcher_pid}) is gone: stopping",
                        "a signal exits at once",
                    )
                return

    def _grace_expired(self, signum: int) -> None:
        self._force_exit(
            f"{self.signal_name} {self.grace_s:g} s ago and the run has not stopped "
            "(run.stop_grace_s): exiting without a new checkpoint",
            signum,
        )

    def _force_exit(self, reason: str, signum: int) -> None:
        """Never returns, even on a closed or broken stdout/stderr."""
        try:
            where = ""
            if self.describe is not None:
                try:
                    where = f"; {self.describe()}"
                except Exception:  # the exit must happen even if the description fails
                    where = ""
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            _say(f"{reason}{where}")
        finally:
            self._exit(128 + signum)

    # ------------------------------------------------------------------ the loop's side
    def request(self) -> None:
        """Ask for a stop without a signal (no watchdog: the caller chose the moment)."""
        self.requested = True

    def __call__(self) -> bool:
        return self.requested

    def check(self) -> None:
        if self.requested:
            raise StopRequested(self.signal_name or "stop requested")

    def seconds_since_signal(self) -> float | None:
        return None if self.received_at is None else time.monotonic() - self.received_at

    def summary(self) -> str:
        """'SIGTERM, 1.3 s from signal to exit', or 'stop requested' when no signal came."""
        elapsed = self.seconds_since_signal()
        if elapsed is None:
            return "stop requested"
        return f"{self.signal_name}, {elapsed:.1f} s from signal to exit"
