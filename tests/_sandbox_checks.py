"""Answer checks for tests/test_sandbox.py, imported by the sandbox's worker processes
(`{"kind": "function", "target": "_sandbox_checks:<name>"}`): each does one thing a hostile
answer might make a third-party check do."""

import os
import time


def number(answer, gold):
    """The answer read as the score: an honest check."""
    return float(answer)


def spin(answer, gold):
    while True:
        pass


def sleep(answer, gold):
    time.sleep(float(answer))
    return 1.0


def hard_exit(answer, gold):
    os._exit(3)


def raise_exit(answer, gold):
    exit()


def segfault(answer, gold):
    import faulthandler

    faulthandler._sigsegv()


def memory(answer, gold):
    return float(len("a" * 10**10))


def shell(answer, gold):
    os.system(answer)
    return 1.0


def shell_swallowed(answer, gold):
    """A bare `except:` (as two reasoning-gym datasets write) must not hide the hook's stop."""
    try:
        os.system(answer)
    except:  # noqa: E722
        pass
    return 1.0


def write_file(answer, gold):
    with open(answer, "w") as handle:
        handle.write("x")
    return 1.0


def read_parent_environment(answer, gold):
    with open(f"/proc/{os.getppid()}/environ", "rb") as handle:
        return 1.0 if b"TOKEN" in handle.read() else 0.5


def evaluate(answer, gold):
    """reasoning-gym's way: the answer evaluated as Python."""
    return 1.0 if eval(answer) == eval(gold) else 0.0


def clean_environment(answer, gold):
    """1.0 when no variable of the worker looks like a secret and it works in a scratch folder."""
    names = [
        name for name in os.environ if any(w in name.upper() for w in ("TOKEN", "KEY", "SECRET"))
    ]
    scratch = os.path.basename(os.getcwd()).startswith("smolgrpo-check-")
    home = os.path.realpath(os.environ.get("HOME", ""))
    return 1.0 if not names and scratch and home == os.path.realpath(os.getcwd()) else 0.0
