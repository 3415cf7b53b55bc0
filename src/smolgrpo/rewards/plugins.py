"""Your own reward functions, named in `rewards.weights` beside the built-in ones.

A name with a colon is a plug-in: `package.module:function` (imported from the Python path) or
`path/to/file.py:function` (loaded from that file; a relative path is taken from the current
folder)::

    rewards:
      weights:
        correctness: 1.0
        my_rewards.py:brevity: 0.2

The contract is the one the built-in rewards follow::

    def brevity(completions: list[str], answers: list[str], **fields) -> list[float]: ...

`fields` holds `questions` (one per completion) and the task's `answer_check` (None for
GSM8K), and may grow, hence `**fields`. Unlike the
built-ins, a plug-in is trusted to score but not to be right: the import and the callable are
checked when the config loads, and every call must return exactly one finite number per
completion (a bool, a string, None, NaN or a wrong length is refused). Any failure is a
SmolGRPOError, one line naming the reward (and the step), raised while the step is scored, so
it stops the run before a checkpoint of that step can replace the last good one. That holds for
any exception the plug-in raises, `SystemExit` (`exit()`, `sys.exit`) included: only
KeyboardInterrupt goes through.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import numbers
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

from smolgrpo.errors import SmolGRPOError

_LOADED: dict[tuple[str, str], Callable] = {}  # (kind, name) -> function


def is_plugin(name: str) -> bool:
    """True for `module:function` / `file.py:function` names (built-in names have no colon)."""
    return isinstance(name, str) and ":" in name


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _import_module(name: str, module_part: str, key: str, kind: str):
    if module_part.endswith(".py") or "/" in module_part or "\\" in module_part:
        path = Path(module_part).expanduser().resolve()
        if not path.is_file():
            raise SmolGRPOError(f"{key}: {kind} '{name}': no such file {module_part}")
        module_name = f"smolgrpo_{kind}_{path.stem}_{zlib.crc32(str(path).encode()):08x}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise SmolGRPOError(f"{key}: {kind} '{name}': cannot load {module_part}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses and pickling look the module up
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(module_name, None)
            raise
        return module
    return importlib.import_module(module_part)


def load_reward(name: str) -> Callable:
    """The function a plug-in name points at (imported once per process)."""
    return load_plugin(name, "rewards.weights", "reward")


def load_plugin(name: str, key: str, kind: str) -> Callable:
    """The function `name` (`module:function` / `file.py:function`) points at, imported once
    per process; any failure is one SmolGRPOError line naming `key` and the `kind` of plug-in
    ("reward", "tool")."""
    if (kind, name) in _LOADED:
        return _LOADED[kind, name]
    module_part, _, function_part = name.rpartition(":")
    if not module_part or not function_part:
        raise SmolGRPOError(
            f"{key}: {kind} '{name}' should be package.module:function or path/to/file.py:function"
        )
    try:
        module = _import_module(name, module_part, key, kind)
    except (SmolGRPOError, KeyboardInterrupt):
        raise
    except BaseException as error:  # noqa: BLE001 - whatever the module raises (SystemExit too)
        raise SmolGRPOError(
            f"{key}: {kind} '{name}' does not import ({_one_line(error)})"
        ) from None
    function = getattr(module, function_part, None)
    if function is None:
        raise SmolGRPOError(f"{key}: {kind} '{name}': {module_part} has no '{function_part}'")
    if not callable(function):
        raise SmolGRPOError(f"{key}: {kind} '{name}' is not callable")
    _LOADED[kind, name] = function
    return function


def check_scores(name: str, values, expected: int, where: str = "") -> list[float]:
    """`values` as floats, or a one-line SmolGRPOError saying what is wrong with them."""
    prefix = f"{where}reward '{name}'"
    if isinstance(values, str | bytes | dict) or not hasattr(values, "__len__"):
        raise SmolGRPOError(
            f"{prefix} returned {type(values).__name__}, expected a list of {expected} floats"
        )
    if len(values) != expected:
        raise SmolGRPOError(
            f"{prefix} returned {len(values)} values for {expected} completions "
            "(must be one float per completion)"
        )
    scores = []
    for index, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise SmolGRPOError(
                f"{prefix} returned {value!r} ({type(value).__name__}) for completion {index} "
                "(must be a float)"
            )
        value = float(value)
        if not math.isfinite(value):
            raise SmolGRPOError(
                f"{prefix} returned {value} for completion {index} (must be finite)"
            )
        scores.append(value)
    return scores


def score_plugin(
    name: str, completions: list[str], fields: dict, step: int | None = None
) -> list[float]:
    """Call the plug-in `name` as every reward is called, `(completions, **fields)`, and check
    what it returns (see the module docstring)."""
    where = f"step {step}: " if step is not None else ""
    function = load_reward(name)
    try:
        values = function(list(completions), **fields)
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # noqa: BLE001 - a user's bug (SystemExit too): one line
        raise SmolGRPOError(f"{where}reward '{name}' raised {_one_line(error)}") from None
    return check_scores(name, values, len(completions), where)
