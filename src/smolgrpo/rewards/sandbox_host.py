"""The sandbox's host process: it builds the answer checks and forks one child per answer.

`CheckPool` (sandbox.py) starts the host as `python -I` with a clean environment and a scratch
folder. The host reads a hello line (`{"sys_path", "workers", "memory_mb"}`), then one JSON
request per line on stdin, and writes one JSON line per checking request on stdout:

* `{"prepare": spec}`: build the check now (no reply; an error shows at the first request).
* `{"id": n, "check": spec, "golds": [...], "items": [[answer, gold_index], ...],
  "timeout_s": t}`: answered with `{"id": n, "results": [[status, score], ...]}` (status "ok",
  "timeout" or "error"), or `{"id": n, "error": text}` when the check cannot be built.

The host imports the checker (a reasoning-gym dataset, built and warmed up once, or a
`package.module:function`) and never runs an answer itself: `_check_items` forks a child per
answer (sandbox_child.py locks it down), `workers` at a time, kills a child and its process
group `timeout_s` after its fork, and reads at most MAX_MESSAGE_BYTES of one JSON line from
it; a child that crashes, exits non-zero or writes anything else is an error. The host trusts
its caller's requests; its caller trusts nothing it writes (sandbox.py checks every reply).
"""

from __future__ import annotations

import json
import math
import os
import select
import signal
import sys
import time
from collections import deque

from smolgrpo.rewards.sandbox_child import child_main

MAX_MESSAGE_BYTES = 4096  # a child's result line; anything longer is an error


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
            if spec.get("warm_up"):  # our own constant input: the check's lazy imports load here
                try:
                    check(*spec["warm_up"])
                except Exception:  # noqa: BLE001 - only a warm-up
                    pass
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
        _read_children(running, timeout_s)
        running = _collect_finished(running, results, timeout_s)
    return results


def _read_children(running: list[_Child], timeout_s: float) -> None:
    """Wait for output from the running children (until the first deadline) and read it."""
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


def _collect_finished(running: list[_Child], results: list, timeout_s: float) -> list[_Child]:
    """Record the result of each child that ended or ran past its deadline (killed now);
    returns the children still running."""
    still_running = []
    for child in running:
        finished = _reap(child, block=False)
        if not finished and time.monotonic() >= child.started + timeout_s:
            kill_group(child.pid)
            _reap(child, block=True)
            child.status = "timeout"
            finished = True
        if finished:
            if child.fd is not None:
                _drain(child)
            results[child.index] = _result_of(child)
        else:
            still_running.append(child)
    return still_running


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
    kill_group(child.pid)  # anything it left behind in its group
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
    if status != "ok" or not is_score(score):
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
            child_main(check, item, write_end, timeout_s, address_space)
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


def is_score(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def kill_group(pid: int) -> None:
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, OSError):
            pass
