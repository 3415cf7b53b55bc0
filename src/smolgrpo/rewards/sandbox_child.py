"""One answer's check, inside a child forked from the sandbox's host (sandbox_host.py).

`child_main` locks the child down before it calls the check: its own process group; SIGINT,
SIGTERM and SIGHUP back to their defaults; killed by the kernel when the host dies
(PR_SET_PDEATHSIG); stdin, stdout and stderr on /dev/null and every other descriptor closed but
its result pipe (moved to a random number); limits on address space (the host's size plus
`memory_mb`), CPU time, file size (0), core dumps and new processes; and an audit hook (PEP 578,
`_Guard`) that stops process creation, signals, network, ctypes, writes to the file system,
reads under /proc, /sys and /dev, and code compiled from the answer's own `__names__` (the way
out of eval's namespace: `__import__`, `__subclasses__`). It writes one JSON line,
`{"status": "ok" | "error", "score": ...}`, and exits with `os._exit(0)`.

Any check that raises, exits or trips the hook (even if the check's own `except:` swallowed
the violation) scores 0 as an error. The hook sees only audited events: code in the child can
still reach what no event covers (writing to a descriptor it holds, say); the rlimits, the
process group and the host's deadline are what bound it.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sys


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


def child_main(check, item, result_fd: int, timeout_s: float, address_space: int) -> None:
    """Lock this forked child down, run `check(answer, gold)`, write its result, exit."""
    os.setpgid(0, 0)
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes fail instead of killing
    _die_with_parent()
    fd = _keep_only_result_pipe(result_fd)
    _set_limits(timeout_s, address_space)
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


def _keep_only_result_pipe(result_fd: int) -> int:
    """stdin, stdout and stderr on /dev/null; the result pipe moved to a random descriptor
    (not a number to guess) and every other descriptor closed. Returns the pipe's number."""
    import random
    import resource

    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    soft_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    top = min(soft_files if soft_files > 0 else 1024, 1024)
    fd = random.randrange(max(top // 2, 3), top)
    os.dup2(result_fd, fd)
    os.closerange(3, fd)
    os.closerange(fd + 1, max(top, 1024))
    return fd


def _set_limits(timeout_s: float, address_space: int) -> None:
    """No core dumps, files or processes; CPU time and address space capped."""
    import resource

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
