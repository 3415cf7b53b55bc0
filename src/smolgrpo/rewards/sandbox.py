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
"""

from __future__ import annotations

import atexit
import json
import math
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict, deque
from typing import NamedTuple

from smolgrpo.errors import SmolGRPOError, warn

DEFAULT_TIMEOUT_S = 1.0
DEFAULT_MEMORY_MB = 1024
STARTUP_S = 120.0  # the host's first answer includes its imports (reasoning-gym: ~2 s)
MAX_MESSAGE_BYTES = 4096  # a child's result line; anything longer is an error
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


# --------------------------------------------------------------------------- the caller's side

_BOOT = (
    "import json, sys\n"
    "hello = json.loads(sys.stdin.buffer.readline())\n"
    "sys.path[:] = hello['sys_path']\n"
    "from smolgrpo.rewards.sandbox import host_main\n"
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
            _kill_group(process.pid)
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
        if status not in ("ok", "timeout", "error") or not _is_score(score):
            raise _HostFailure("an unreadable result")
        outcomes.append(Outcome(float(score) if status == "ok" else 0.0, status))
    return outcomes


def _is_score(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _kill_group(pid: int) -> None:
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, OSError):
            pass


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


# --------------------------------------------------------------------------- the host's side


def host_main(hello: dict) -> None:
    """The host's loop: one JSON request per line on stdin, one JSON reply per request."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller decides when the host stops
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.dont_write_bytecode = True
    checks: dict[str, object] = {}
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        request = json.loads(line)
        if "prepare" in request:
            try:
                _host_check(checks, request["prepare"])
            except Exception:  # noqa: BLE001 - reported by the request that uses it
                pass
            continue
        try:
            check = _host_check(checks, request["check"])
        except Exception as error:  # noqa: BLE001 - the caller prints it as one line
            text = " ".join(str(error).split()) or type(error).__name__
            reply = {"id": request["id"], "error": f"cannot build the answer check: {text}"}
        else:
            golds = request["golds"]
            results = _check_items(
                check,
                [(answer, golds[index]) for answer, index in request["items"]],
                float(request["timeout_s"]),
                int(hello["workers"]),
                int(hello["memory_mb"]),
            )
            reply = {"id": request["id"], "results": results}
        out.write(json.dumps(reply).encode() + b"\n")
        out.flush()


def _host_check(checks: dict, spec: dict):
    key = json.dumps(spec, sort_keys=True)
    if key not in checks:
        if spec["kind"] == "gym":
            import reasoning_gym

            dataset = reasoning_gym.create_dataset(
                spec["name"], size=1, seed=0, **(spec.get("options") or {})
            )
            # A warm-up on the dataset's own answer (no model output): the lazy imports and
            # caches a check needs are then in the host, and every child starts with them.
            try:
                entry = dataset[0]
                dataset.score_answer(
                    str(entry["answer"]), json.loads(json.dumps(entry, default=str))
                )
            except Exception:  # noqa: BLE001 - only a warm-up
                pass

            def check(answer: str, gold: str, dataset=dataset) -> float:
                return dataset.score_answer(answer, json.loads(gold))

        elif spec["kind"] == "function":
            import importlib

            module, _, name = spec["target"].rpartition(":")
            check = getattr(importlib.import_module(module), name)
        else:
            raise ValueError(f"unknown check kind {spec['kind']!r}")
        checks[key] = check
    return checks[key]


class _Child:
    __slots__ = ("pid", "index", "started", "data", "fd", "status")

    def __init__(self, pid: int, index: int, fd: int):
        self.pid, self.index, self.fd = pid, index, fd  # fd: None once the pipe is closed
        self.started, self.data, self.status = time.monotonic(), b"", None


def _check_items(check, items, timeout_s, workers, memory_mb) -> list[list]:
    """[status, score] per item, each checked in a child of its own, `workers` at a time."""
    results: list[list | None] = [None] * len(items)
    pending = deque(range(len(items)))
    running: list[_Child] = []
    address_space = _address_space_bytes() + memory_mb * 2**20
    while pending or running:
        while pending and len(running) < workers:
            index = pending.popleft()
            child = _fork_child(check, items[index], timeout_s, address_space, index)
            if child is None:
                results[index] = ["error", 0.0]
            else:
                running.append(child)
        if not running:
            continue
        wait = min(child.started + timeout_s for child in running) - time.monotonic()
        if any(child.fd is None for child in running):
            wait = min(wait, 0.002)  # a child that closed its pipe: poll for its exit
        fds = [child.fd for child in running if child.fd is not None]
        if fds:
            ready = set(select.select(fds, [], [], max(wait, 0.0))[0])
        else:
            ready = set()
            time.sleep(max(wait, 0.0))
        for child in running:
            if child.fd in ready:
                chunk = os.read(child.fd, 1 << 12)
                child.data += chunk
                if not chunk or len(child.data) > MAX_MESSAGE_BYTES:
                    os.close(child.fd)
                    child.fd = None
        still_running = []
        for child in running:
            finished = _reap(child, block=False)
            if not finished and time.monotonic() >= child.started + timeout_s:
                _kill_group(child.pid)
                _reap(child, block=True)
                child.status = "timeout"
                finished = True
            if finished:
                if child.fd is not None:
                    _drain(child)
                results[child.index] = _result_of(child)
            else:
                still_running.append(child)
        running = still_running
    return results


def _drain(child: _Child) -> None:
    """Read what an ended child left in its pipe, then close it."""
    os.set_blocking(child.fd, False)
    try:
        while len(child.data) <= MAX_MESSAGE_BYTES:
            chunk = os.read(child.fd, 1 << 12)
            if not chunk:
                break
            child.data += chunk
    except BlockingIOError:  # a process it left behind still holds the pipe
        pass
    os.close(child.fd)
    child.fd = None


def _reap(child: _Child, block: bool) -> bool:
    """Whether the child has ended (reaped now); its group is killed once it has."""
    try:
        pid, status = os.waitpid(child.pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        pid, status = child.pid, 1
    if pid == 0:
        return False
    if child.status is None:
        child.status = "exit0" if os.waitstatus_to_exitcode(status) == 0 else "crashed"
    _kill_group(child.pid)  # anything it left behind in its group
    return True


def _result_of(child: _Child) -> list:
    if child.status != "exit0" or len(child.data) > MAX_MESSAGE_BYTES:
        return ["timeout" if child.status == "timeout" else "error", 0.0]
    lines = child.data.split(b"\n")
    if len(lines) != 2 or lines[1]:  # exactly one line, newline-terminated
        return ["error", 0.0]
    try:
        message = json.loads(lines[0])
        status, score = message["status"], message["score"]
    except (ValueError, KeyError, TypeError):
        return ["error", 0.0]
    if status != "ok" or not _is_score(score):
        return ["error", 0.0]
    return ["ok", float(score)]


def _fork_child(check, item, timeout_s, address_space, index) -> _Child | None:
    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        return None
    if pid == 0:  # the child: never returns
        try:
            os.close(read_end)
            _child_main(check, item, write_end, timeout_s, address_space)
        finally:
            os._exit(70)
    try:
        os.setpgid(pid, pid)  # also done by the child: whichever runs first
    except OSError:
        pass
    os.close(write_end)
    return _Child(pid, index, read_end)


def _address_space_bytes() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 1 << 30


# --------------------------------------------------------------------------- a child


class SandboxViolation(BaseException):
    """Raised by the audit hook; a BaseException, so a dataset's `except Exception` does not
    swallow it (and a bare `except:` that does still leaves the answer scored 0)."""


_BLOCKED_EVENTS = (
    "os.system",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.fork",
    "os.forkpty",
    "os.kill",
    "os.killpg",
    "os.putenv",
    "os.unsetenv",
    "os.remove",
    "os.rename",
    "os.rmdir",
    "os.mkdir",
    "os.chmod",
    "os.chown",
    "os.chflags",
    "os.lchown",
    "os.link",
    "os.symlink",
    "os.truncate",
    "os.utime",
    "os.setxattr",
    "os.removexattr",
    "os.chdir",
    "subprocess.",
    "pty.",
    "socket.",
    "ctypes.",
    "shutil.",
    "signal.pthread_kill",
    "resource.setrlimit",
    "resource.prlimit",
    "mmap.",
    "webbrowser.",
    "urllib.",
    "http.",
    "ftplib.",
    "smtplib.",
    "imaplib.",
    "poplib.",
    "nntplib.",
    "telnetlib.",
    "winreg.",
    "_winapi.",
)
_PATH_EVENTS = ("open", "os.listdir", "os.scandir", "glob.glob", "os.walk")
_PRIVATE_ROOTS = ("/proc", "/sys", "/dev")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_DUNDER = re.compile(r"\w*__\w*")


class _Guard:
    """The child's audit hook (see the module docstring)."""

    def __init__(self, answer: str):
        self.dunders = set(_DUNDER.findall(answer))
        self.tripped: str | None = None

    def __call__(self, event: str, args: tuple) -> None:
        reason = self._reason(event, args)
        if reason is not None:
            if self.tripped is None:
                self.tripped = reason
            raise SandboxViolation(reason)

    def _reason(self, event: str, args: tuple) -> str | None:
        if event.startswith(_BLOCKED_EVENTS):
            return event
        if event in _PATH_EVENTS and args:
            if event == "open" and _opens_for_writing(args):
                return "open for writing"
            if _private_path(args[0]):
                return f"{event} under /proc, /sys or /dev"
        if event == "compile" and self.dunders and args:
            if any(name in _source_names(args[0]) for name in self.dunders):
                return "code compiled from a __name__ of the answer"
        return None


def _opens_for_writing(args: tuple) -> bool:
    mode = args[1] if len(args) > 1 else None
    flags = args[2] if len(args) > 2 else 0
    if isinstance(mode, str) and any(c in mode for c in "wax+"):
        return True
    return isinstance(flags, int) and bool(flags & _WRITE_FLAGS)


def _private_path(path) -> bool:
    if isinstance(path, int) or path is None:
        return False
    try:
        text = os.fsdecode(path)
        real = os.path.realpath(os.path.abspath(text))
    except (TypeError, ValueError, OSError):
        return True
    if real in ("/dev/null", "/dev/urandom"):
        return False
    return any(real == root or real.startswith(root + "/") for root in _PRIVATE_ROOTS)


def _source_names(source) -> str:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source).decode("utf-8", "replace")
    if isinstance(source, str):
        return source
    import ast

    if isinstance(source, ast.AST):  # sympy's evaluate=False path compiles a tree
        names = []
        for node in ast.walk(source):
            for field in ("id", "attr", "name", "arg"):
                value = getattr(node, field, None)
                if isinstance(value, str):
                    names.append(value)
            if isinstance(getattr(node, "value", None), str):
                names.append(node.value)
        return " ".join(names)
    return ""


def _child_main(check, item, result_fd: int, timeout_s: float, address_space: int) -> None:
    import random
    import resource

    os.setpgid(0, 0)
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes fail instead of killing
    _die_with_parent()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    soft_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    top = min(soft_files if soft_files > 0 else 1024, 1024)
    fd = random.randrange(max(top // 2, 3), top)  # not a descriptor number to guess
    os.dup2(result_fd, fd)
    os.closerange(3, fd)
    os.closerange(fd + 1, max(top, 1024))

    cpu = math.ceil(timeout_s) + 1
    for limit, value in (
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_FSIZE, 0),
        (resource.RLIMIT_NPROC, 0),
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_AS, address_space),
    ):
        try:
            hard = value + 1 if limit == resource.RLIMIT_CPU else value
            resource.setrlimit(limit, (value, hard))
        except (ValueError, OSError):
            pass
    answer, gold = item
    guard = _Guard(answer)
    sys.addaudithook(guard)
    try:
        message = {"status": "ok", "score": float(check(answer, gold))}
        if not math.isfinite(message["score"]):
            message = {"status": "error", "score": 0.0}
    except BaseException:  # noqa: BLE001 - SystemExit, MemoryError, the hook's violation
        message = {"status": "error", "score": 0.0}
    if guard.tripped is not None:  # even if the dataset's bare `except:` swallowed it
        message = {"status": "error", "score": 0.0}
    os.write(fd, json.dumps(message).encode() + b"\n")
    os._exit(0)


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: the kernel kills this child if the host dies (Linux only)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        if os.getppid() == 1:  # the host died before prctl: nobody will read the result
            os._exit(71)
    except Exception:  # noqa: BLE001 - no libc or no prctl: the CPU limit still ends it
        pass
