"""The `reasoning_gym` task: procedural problems from the `reasoning-gym` package.

`pip install 'smolgrpo[gym]'`. `data.gym_dataset` names a dataset (`countdown`,
`gsm_symbolic`, ...), `data.gym_size` how many problems a split has and `data.gym_seed` the
generator seed, so a run is reproducible. The train split is generated with `gym_seed`; every
other split (eval) with a seed derived from it and the split name, minus any question that is
also in the train split, so train and eval never overlap.

The gold a reward sees is the whole dataset entry as JSON (question, answer, metadata): the
correctness check is the dataset's own `score_answer(extracted <answer> text, entry)`, which
needs more than the answer (countdown checks the numbers used and the target). A completion
without a single `<answer>` block scores 0, not the dataset's small format credit.
"""

from __future__ import annotations

import json
import random
import zlib

from smolgrpo.data import Problem
from smolgrpo.errors import SmolGRPOError

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


def check_gym_config(name: str, size: int) -> None:
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


def split_seed(seed: int, split: str, train_split: str) -> int:
    """The train split uses the configured seed; any other split a stable seed of its own."""
    if split == train_split:
        return seed
    return seed + 1 + zlib.crc32(split.encode()) % 1_000_003


def _generate(name: str, size: int, seed: int) -> list[dict]:
    dataset = _reasoning_gym().create_dataset(name, size=size, seed=seed)
    return [dataset[index] for index in range(size)]


def _problem(entry: dict, name: str, seed: int, index: int) -> Problem:
    gold = json.dumps(entry, sort_keys=True, default=str)
    return Problem(entry["question"], str(entry["answer"]), gold, f"{name}[seed={seed}]:{index}")


def make_answer_check(name: str):
    """`(extracted answer, gold JSON) -> score` through the dataset's own `score_answer`."""
    dataset = _reasoning_gym().create_dataset(name, size=1, seed=0)  # only for score_answer

    def check(predicted: str | None, gold: str) -> float:
        if predicted is None:
            return 0.0
        return float(dataset.score_answer(predicted, json.loads(gold)))

    return check


def build_gym_task(data):
    from smolgrpo.tasks import Task, task_title

    name, size = data.gym_dataset, data.gym_size

    def load(split, limit=None, seed=0, shuffle=False) -> list[Problem]:
        own_seed = split_seed(data.gym_seed, split, data.train_split)
        entries = _generate(name, size, own_seed)
        if own_seed != data.gym_seed:  # drop eval questions that the train split also holds
            train = {entry["question"] for entry in _generate(name, size, data.gym_seed)}
            entries = [entry for entry in entries if entry["question"] not in train]
        problems = [_problem(entry, name, own_seed, i) for i, entry in enumerate(entries)]
        if shuffle:
            random.Random(seed).shuffle(problems)
        if limit is not None:
            if limit < 1:
                raise SmolGRPOError(f"--limit must be at least 1, got {limit}")
            problems = problems[:limit]
        return problems

    return Task("reasoning_gym", task_title(vars(data)), load, make_answer_check(name))
