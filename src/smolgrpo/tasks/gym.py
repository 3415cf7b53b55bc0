"""The `reasoning_gym` task: procedural problems from the `reasoning-gym` package.

`pip install 'smolgrpo[gym]'`. `data.gym_dataset` names a dataset (`countdown`,
`gsm_symbolic`, ...), `data.gym_size` how many problems a split has, `data.gym_seed` the
generator seed, so a run is reproducible, and `data.gym_config` the dataset's own options (its
config class's fields: `{min_numbers: 3, max_numbers: 3, max_target: 100}` makes countdown
easier). The train split is generated with `gym_seed`; every
other split (eval) with a seed derived from it and the split name, minus any question that is
also in the train split, so train and eval never overlap.

The gold a reward sees is the whole dataset entry as JSON (question, answer, metadata): the
correctness check is the dataset's own `score_answer(extracted <answer> text, entry)`, which
needs more than the answer (countdown checks the numbers used and the target). A completion
without a single `<answer>` block scores 0, not the dataset's small format credit.

`score_answer` is third-party code, and several datasets `eval` the answer (or parse it with
sympy's `parse_expr`, which does): it never runs in the training or eval process. It runs in the
sandbox's worker processes (sandbox.py), each answer within `data.gym_check_timeout_s` (1 s) and
a memory limit; a check that times out, crashes or exits scores 0 and is counted
(`reward_timeouts`, `reward_errors`). The arithmetic games, countdown and puzzle24, are checked
in-process by the project's own parser instead (gym_arithmetic.py), with the dataset's scores.
"""

from __future__ import annotations

import json
import zlib

from smolgrpo.errors import SmolGRPOError
from smolgrpo.rewards.sandbox import DEFAULT_TIMEOUT_S, SandboxedCheck
from smolgrpo.tasks.base import Task, TaskKind
from smolgrpo.tasks.data import Problem
from smolgrpo.tasks.gym_arithmetic import ARITHMETIC_GAMES, arithmetic_check

GYM_EXTRA_HINT = "pip install 'smolgrpo[gym]'"


def _reasoning_gym():
    try:
        import reasoning_gym
    except ImportError:
        raise SmolGRPOError(
            f"data.task 'reasoning_gym' needs the reasoning-gym package: {GYM_EXTRA_HINT}"
        ) from None
    return reasoning_gym


def gym_dataset_names() -> list[str]:
    from reasoning_gym.factory import DATASETS

    return sorted(DATASETS)


def check_gym_config(name: str, size: int, options: dict | None = None) -> None:
    _reasoning_gym()
    names = gym_dataset_names()
    if name not in names:
        examples = ", ".join(
            n for n in ("countdown", "gsm_symbolic", "basic_arithmetic") if n in names
        )
        raise SmolGRPOError(
            f"config: unknown reasoning-gym dataset '{name}' for 'data.gym_dataset' "
            f"(e.g. {examples}; {len(names)} in all, see reasoning_gym.factory.DATASETS)"
        )
    if not isinstance(size, int) or size < 1:
        raise SmolGRPOError(f"config: invalid value for 'data.gym_size': {size!r} (must be >= 1)")
    _check_options(name, options or {})


def _check_options(name: str, options: dict) -> None:
    """Unknown or invalid dataset options: one line naming the key (the dataset validates)."""
    import dataclasses

    from reasoning_gym.factory import DATASETS

    if not isinstance(options, dict):
        raise SmolGRPOError(f"config: 'data.gym_config' must be a mapping, got {options!r}")
    config_class = DATASETS[name][1]
    fields = {f.name for f in dataclasses.fields(config_class)} - {"seed", "size"}
    for key in options:
        if key not in fields:
            raise SmolGRPOError(
                f"config: unknown option 'data.gym_config.{key}' for reasoning-gym dataset "
                f"'{name}' (valid: {', '.join(sorted(fields))})"
            )
    try:
        _reasoning_gym().create_dataset(name, size=1, seed=0, **options)
    except Exception as error:  # the dataset's own validation (AssertionError, ValueError, ...)
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SmolGRPOError(
            f"config: invalid 'data.gym_config' for reasoning-gym dataset '{name}': {message}"
        ) from None


def split_seed(seed: int, split: str, train_split: str) -> int:
    """The train split uses the configured seed; any other split a stable seed of its own."""
    if split == train_split:
        return seed
    return seed + 1 + zlib.crc32(split.encode()) % 1_000_003


def _generate(name: str, size: int, seed: int, options: dict) -> list[dict]:
    dataset = _reasoning_gym().create_dataset(name, size=size, seed=seed, **options)
    return [dataset[index] for index in range(size)]


def _problem(entry: dict, name: str, seed: int, index: int) -> Problem:
    gold = json.dumps(entry, sort_keys=True, default=str)
    return Problem(entry["question"], str(entry["answer"]), gold, f"{name}[seed={seed}]:{index}")


def make_answer_check(name: str, options: dict | None = None, timeout_s: float = DEFAULT_TIMEOUT_S):
    """`(extracted answer, gold JSON) -> score`: the dataset's own `score_answer` in the
    sandbox (a `SandboxedCheck`, which also checks a batch at once), or for countdown and
    puzzle24 the in-process equivalent of gym_arithmetic.py."""
    options = options or {}
    if name in ARITHMETIC_GAMES:
        dataset = _reasoning_gym().create_dataset(name, size=1, seed=0, **options)  # its config
        return arithmetic_check(name, dataset)
    return SandboxedCheck({"kind": "gym", "name": name, "options": options}, timeout_s)


def build_gym_task(data, kind: TaskKind) -> Task:
    name, size = data.gym_dataset, data.gym_size
    options = dict(data.gym_config or {})

    def load(split) -> list[Problem]:
        own_seed = split_seed(data.gym_seed, split, data.train_split)
        entries = _generate(name, size, own_seed, options)
        if own_seed != data.gym_seed:  # drop eval questions that the train split also holds
            train = {entry["question"] for entry in _generate(name, size, data.gym_seed, options)}
            entries = [entry for entry in entries if entry["question"] not in train]
        return [_problem(entry, name, own_seed, i) for i, entry in enumerate(entries)]

    check = make_answer_check(name, options, data.gym_check_timeout_s)
    if isinstance(check, SandboxedCheck):
        check.prepare()  # the worker's imports overlap the model's loading
    return Task(kind, kind.title(vars(data)), load, check)
