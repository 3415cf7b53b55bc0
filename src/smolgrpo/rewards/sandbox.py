"""Answer checks that run third-party code, kept out of the training and eval process.

Several reasoning-gym datasets call `eval` on the model's answer, or hand it to sympy's
`parse_expr` (built on `eval`, with no time limit): there, the answer is code. `CheckPool` runs
such checks in worker processes:

* One host process, started fresh (`python -I`: no torch, no state of the caller), in a session
  of its own, its working folder, HOME and TMPDIR a scratch temp folder, its environment only
  PATH, locale and time zone: no HF_TOKEN, WANDB_API_KEY or other *TOKEN*/*KEY*/*SECRET*.
  It imports the checker (reasoning-gym, its dataset built once) and never runs an answer.
* Each answer is checked in a child forked from the host, `workers` at a time (a fork costs a
  few milliseconds; no answer sees what another one did). Before the check the child limits
  its address space (RLIMIT_AS: the host's size plus `memory_mb`), CPU time, file size (0),
  core dumps and new processes; points stdin, stdout and stderr at /dev/null and closes every
  other descriptor but its result pipe; asks the kernel to kill it when the host dies; and
  installs an audit hook (PEP 578) that stops process creation, signals, network, ctypes,
  writes to the file system, reads under /proc, /sys and /dev, and code compiled from an
  answer's own `__names__` (the way out of eval's namespace: `__import__`, `__subclasses__`).
* A check still running `timeout_s` after its fork is killed with its process group; a check
  that raises, exits (`exit()`, `os._exit`), crashes (a segfault) or trips the hook scores 0.
  Each answer's outcome is `ok`, `timeout` or `error`: the rewards count the last two
  (`reward_timeouts`, `reward_errors` in metrics.jsonl and an eval's metrics.json).

The caller never waits on the host without a deadline, and reads nothing from it but JSON
lines: a host that hangs, dies or answers garbage costs that batch (scored 0, counted as errors,
one `warning:` line) and is replaced, never the run.

This is containment, not a proof: Python code inside a child can reach what the hook does not
audit (writing to a descriptor it still holds, say). What the limits guarantee is that a hostile
answer cannot outlive its deadline, take the machine's memory, start a process, touch a file or
the network, or read the user's tokens from the environment.

The code is in three parts: this module is the caller's side (`CheckPool`, which talks to the
host under deadlines and replaces it when it fails, and `SandboxedCheck`, the check the tasks
use); sandbox_host.py is the host's loop, which forks and reaps the children; sandbox_child.py
locks a child down (limits, descriptors, the audit hook) and runs one check.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from typing import NamedTuple

from smolgrpo.errors import SmolGRPOError, warn
from smolgrpo.rewards.sandbox_host import is_score, kill_group

DEFAULT_TIMEOUT_S = 1.0
DEFAULT_MEMORY_MB = 1024
STARTUP_S = 120.0  # the host's first answer includes its imports (reasoning-gym: ~2 s)
CACHE_SIZE = 4096  # (check, answer, gold) outcomes kept: eval re-checks what the reward checked

# Variables a worker keeps (and only if they also pass SECRET_NAME): what a C library needs to
# find programs and speak the user's locale. Everything else is dropped.
KEPT_VARIABLES = ("PATH", "LANG", "LANGUAGE", "TZ")
SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASS|CREDENTIAL|AUTH|COOKIE|SESSION", re.IGNORECASE)


class Outcome(NamedTuple):
    score: float
    status: str  # "ok", "timeout" or "error"


ERROR = Outcome(0.0, "error")


def clean_environment(scratch: str) -> dict[str, str]:
    """The environment of a worker: PATH, locale and time zone, HOME and TMPDIR the scratch
    folder, one thread per math library; no variable whose name looks like a secret."""
    env = {
        name: value
        for name, value in os.environ.items()
        if (name in KEPT_VARIABLES or name.startswith("LC_")) and not SECRET_NAME.search(name)
    }
    env.update(HOME=scratch, TMPDIR=scratch, PYTHONDONTWRITEBYTECODE="1")
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = "1"
    return env


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


_BOOT = (
    "import json, sys\n"
    "hello = json.loads(sys.stdin.buffer.readline())\n"
    "sys.path[:] = hello['sys_path']\n"
    "from smolgrpo.rewards.sandbox_host import host_main\n"
    "host_main(hello)\n"
)


class _HostFailure(Exception):
    pass


class CheckPool:
    """The host process and its children (see the module docstring); `run` checks a batch.

    `spec` names the check, as JSON: `{"kind": "gym", "name": ..., "options": {...}}` (a
    reasoning-gym dataset's `score_answer(answer, json.loads(gold))`) or `{"kind": "function",
    "target": "package.module:function"}` (`function(answer, gold) -> float`)."""

    def __init__(self, workers: int | None = None, memory_mb: int = DEFAULT_MEMORY_MB):
        self.workers = workers or default_workers()
        self.memory_mb = memory_mb
        self.process: subprocess.Popen | None = None
        self.scratch: str | None = None
        self.owner_pid = os.getpid()
        self.warm = False  # the host has answered once (its imports are done)
        self._lock = threading.Lock()
        self._buffer = b""
        self._next_id = 0

    # ------------------------------------------------------------------ host life
    def _alive(self) -> bool:
        return (
            self.process is not None
            and self.owner_pid == os.getpid()
            and self.process.poll() is None
        )

    def _start(self) -> None:
        self.close()
        self.owner_pid = os.getpid()
        self.scratch = tempfile.mkdtemp(prefix="smolgrpo-check-")
        log = open(os.path.join(self.scratch, "host.log"), "wb")  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-B", "-c", _BOOT],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=self.scratch,
                env=clean_environment(self.scratch),
                start_new_session=True,  # Ctrl-C at the terminal is the caller's to handle
                close_fds=True,
            )
        finally:
            log.close()
        self.warm, self._buffer = False, b""
        # '' on sys.path is the caller's folder, not the host's scratch folder
        path = [os.path.abspath(entry or os.curdir) for entry in sys.path]
        hello = {"sys_path": path, "workers": self.workers, "memory_mb": self.memory_mb}
        self._send(hello)

    def close(self) -> None:
        """Stop the host (and, through it, its children); the next `run` starts a new one."""
        process, self.process = self.process, None
        if self.owner_pid != os.getpid():  # a forked copy: host and folder are the parent's
            self.scratch = None
            return
        if process is not None:
            try:
                process.stdin.close()  # EOF: the host kills its children and exits
                process.wait(timeout=1)
            except (OSError, subprocess.TimeoutExpired):
                pass
            kill_group(process.pid)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            if process.stdout is not None:
                process.stdout.close()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    def prepare(self, spec: dict) -> None:
        """Start the host and build the check now (its imports overlap the caller's model
        loading); errors surface at the first `run`."""
        with self._lock:
            try:
                if not self._alive():
                    self._start()
                self._send({"prepare": spec})
            except OSError:
                self.close()

    # ------------------------------------------------------------------ messages
    def _send(self, message: dict, deadline: float | None = None) -> None:
        """One JSON line to the host, written without blocking past `deadline` (a host that
        stopped reading cannot hold the caller)."""
        data = memoryview(json.dumps(message).encode() + b"\n")
        fd = self.process.stdin.fileno()
        os.set_blocking(fd, False)
        deadline = deadline if deadline is not None else time.monotonic() + STARTUP_S
        while data:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _HostFailure("the check process stopped reading")
            if select.select([], [fd], [], left)[1]:
                try:
                    data = data[os.write(fd, data) :]
                except BlockingIOError:
                    pass

    def _receive(self, deadline: float) -> dict:
        fd = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _HostFailure("no answer in time")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise _HostFailure("the check process ended")
                self._buffer += chunk
                if len(self._buffer) > (1 << 26):
                    raise _HostFailure("an oversized answer")
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            message = json.loads(line)
        except ValueError:
            raise _HostFailure("an unreadable answer") from None
        if not isinstance(message, dict):
            raise _HostFailure("an unreadable answer")
        return message

    # ------------------------------------------------------------------ checking
    def run(self, spec: dict, items: list[tuple[str, str]], timeout_s: float) -> list[Outcome]:
        """One Outcome per (answer, gold). A failure of the host itself scores the batch 0
        (errors) with one warning; a check that cannot be built raises SmolGRPOError."""
        if not items:
            return []
        with self._lock:
            try:
                if not self._alive():
                    self._start()
                self._next_id += 1
                golds = list(dict.fromkeys(str(gold) for _, gold in items))  # G answers, 1 gold
                where = {gold: index for index, gold in enumerate(golds)}
                request = {
                    "id": self._next_id,
                    "check": spec,
                    "golds": golds,
                    "items": [[str(answer), where[str(gold)]] for answer, gold in items],
                    "timeout_s": float(timeout_s),
                }
                waves = math.ceil(len(items) / self.workers)
                budget = waves * (timeout_s + 2.0) + 10.0 + (0.0 if self.warm else STARTUP_S)
                deadline = time.monotonic() + budget
                self._send(request, deadline)
                reply = self._receive(deadline)
                outcomes = _read_reply(reply, request["id"], len(items))
            except (OSError, ValueError, _HostFailure) as error:
                reason = error if isinstance(error, _HostFailure) else type(error).__name__
                last_line = self._last_log_line()
                reason = f"{reason}: {last_line}" if last_line else reason
                self.close()
                warn(f"the answer-check process failed ({reason}): {len(items)} answers scored 0")
                return [ERROR] * len(items)
            except BaseException:  # KeyboardInterrupt mid-batch: the protocol is out of step
                self.close()
                raise
            self.warm = True
            return outcomes

    def _last_log_line(self) -> str:
        """The last line the host wrote on stderr (a traceback's last line), if any."""
        try:
            with open(os.path.join(self.scratch or "", "host.log"), "rb") as handle:
                lines = handle.read()[-2000:].decode("utf-8", "replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1].strip() if lines else ""


def _read_reply(reply: dict, request_id: int, count: int) -> list[Outcome]:
    if reply.get("id") != request_id:
        raise _HostFailure("an answer to another request")
    if "error" in reply:
        raise SmolGRPOError(str(reply["error"]))
    results = reply.get("results")
    if not isinstance(results, list) or len(results) != count:
        raise _HostFailure("a wrong number of results")
    outcomes = []
    for result in results:
        if not (isinstance(result, list) and len(result) == 2):
            raise _HostFailure("an unreadable result")
        status, score = result
        if status not in ("ok", "timeout", "error") or not is_score(score):
            raise _HostFailure("an unreadable result")
        outcomes.append(Outcome(float(score) if status == "ok" else 0.0, status))
    return outcomes


_POOL: CheckPool | None = None
_POOL_LOCK = threading.Lock()


def shared_pool() -> CheckPool:
    """The process's one CheckPool (started on first use, stopped at exit)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = CheckPool()
            atexit.register(_POOL.close)
        return _POOL


class SandboxedCheck:
    """An answer check (`(answer or None, gold) -> score`) run in the shared CheckPool.

    `check_batch(answers, golds)` sends a whole batch at once (what the rewards call); outcomes
    are remembered per (answer, gold), so the eval's second look at an answer costs nothing and
    a repeated hostile answer times out once."""

    def __init__(self, spec: dict, timeout_s: float = DEFAULT_TIMEOUT_S, pool=None):
        try:
            json.dumps(spec)
        except (TypeError, ValueError):
            raise SmolGRPOError(f"answer check options must be plain YAML values: {spec}") from None
        self.spec, self.timeout_s = spec, float(timeout_s)
        self._pool = pool
        self._cache: OrderedDict = OrderedDict()

    @property
    def pool(self) -> CheckPool:
        return self._pool if self._pool is not None else shared_pool()

    def prepare(self) -> None:
        self.pool.prepare(self.spec)

    def check_batch(self, answers: list[str | None], golds: list[str]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(answers)
        missing: dict[tuple[str, str], list[int]] = {}
        for index, (answer, gold) in enumerate(zip(answers, golds)):
            if answer is None:
                outcomes[index] = Outcome(0.0, "ok")  # no <answer> block: nothing to check
            elif (answer, gold) in self._cache:
                outcomes[index] = self._cache[(answer, gold)]
                self._cache.move_to_end((answer, gold))
            else:
                missing.setdefault((answer, gold), []).append(index)
        if missing:
            keys = list(missing)
            for key, outcome in zip(keys, self.pool.run(self.spec, keys, self.timeout_s)):
                for index in missing[key]:
                    outcomes[index] = outcome
                self._cache[key] = outcome
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return outcomes

    def __call__(self, answer: str | None, gold: str) -> float:
        return self.check_batch([answer], [gold])[0].score
