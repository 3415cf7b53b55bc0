"""The task kinds, one per `data.task` value, registered in `TASK_KINDS`.

A kind knows everything that differs between tasks: its config checks, how its `Task` is
built, whether its problems carry worked solutions, its default reward weights, and how it
names itself and its data for humans (model cards, reports, eval metrics). Code elsewhere looks
a kind up (`task_kind(data.task)`, or `saved_task_kind(data)` for a saved config's mapping) and
calls its methods: no other module compares task names.
"""

from __future__ import annotations

from pathlib import Path

from smolgrpo.errors import SmolGRPOError
from smolgrpo.tasks.base import TEXT_REWARD_WEIGHTS, Task, TaskKind, check_answer_type
from smolgrpo.tasks.data import HUB_DATASET_ID, load_problems, resolve_source


class GSM8KKind(TaskKind):
    """`gsm8k` (the default): GSM8K JSONL or hub rows, the gold number after `####`."""

    name = "gsm8k"
    named_in_eval_metrics = False
    CARD_SUBJECTS = {
        "heading": "grade-school math (GSM8K)",
        "problems": "GSM8K",
        "limitations": "GSM8K-style English word",
    }

    def build(self, data) -> Task:
        # answer check None: the numeric `answers_match` of rewards/answers.py, bit for bit.
        return Task(
            self, self.title(vars(data)), lambda split: load_problems(data.source, split), None
        )

    def has_worked_solutions(self, data) -> bool:
        return True

    def title(self, data: dict) -> str:
        return "GSM8K"

    def source_text(self, data: dict) -> str:
        """`source: null` is resolved as loading resolves it: $SMOLGRPO_DATA_DIR, else the hub."""
        source = resolve_source(data.get("source"))
        split = data.get("train_split", "train")
        path = Path(source).expanduser()
        if source.endswith(".jsonl") or path.is_file():
            return f"local JSONL file `{source}`"
        if path.is_dir() or source.startswith((".", "/", "~")):
            return f"local JSONL `{(Path(source) / f'{split}.jsonl').as_posix()}` (`{split}` split)"
        name = "GSM8K" if source == HUB_DATASET_ID else "hub dataset"
        return f"{name} `{split}` split from the hub (`{source}`)"

    def card_tags(self, data: dict) -> list[str]:
        return ["gsm8k", "math"]

    def card_datasets(self, data: dict) -> list[str]:
        return ["openai/gsm8k"]

    def card_subject(self, data: dict, wording: str = "heading") -> str:
        return self.CARD_SUBJECTS[wording]

    def local_source(self, data: dict) -> str | None:
        return resolve_source(data.get("source"))


class FieldMappedKind(TaskKind):
    """Questions and answers from columns named by the field mapping, checked as
    `data.answer_type` (files.py)."""

    field_mapped = True
    label = ""  # how titles name the data: "JSONL", "CSV", "hub dataset"
    where = ""  # how the model card's data line names it: "local JSONL", "hub dataset"

    def check(self, data) -> None:
        from smolgrpo.tasks.files import answer_check_for

        check_answer_type(data)
        answer_check_for(data.answer_type)  # math without math-verify: one line naming the extra
        self.check_solution_steps(data)

    def has_worked_solutions(self, data) -> bool:
        return bool(data.solution_field)

    def default_reward_weights(self, data) -> dict:
        if data.answer_type != "number":
            return dict(TEXT_REWARD_WEIGHTS)
        return super().default_reward_weights(data)

    def title(self, data: dict) -> str:
        return f"{self.label} `{data.get('source')}` ({data.get('answer_type', 'number')} answers)"

    def source_text(self, data: dict) -> str:
        return (
            f"{self.where} `{data.get('source')}` (question `{data.get('question_field')}`"
            f", answer `{data.get('answer_field')}`, {data.get('answer_type')} answers)"
        )


class FileKind(FieldMappedKind):
    """`jsonl` / `csv`: a local file, or a folder holding `<split>.jsonl` (`<split>.csv`)."""

    def __init__(self, name: str):
        self.name = name
        self.label = name.upper()
        self.where = f"local {name.upper()}"

    def build(self, data) -> Task:
        from smolgrpo.tasks.files import build_file_task, read_file_split

        return build_file_task(data, self, read_file_split)

    def local_source(self, data: dict) -> str | None:
        return data.get("source")


class HubKind(FieldMappedKind):
    """`hub`: a dataset on the Hugging Face hub (`data.source` its id)."""

    name = "hub"
    label = where = "hub dataset"

    def build(self, data) -> Task:
        from smolgrpo.tasks.files import build_file_task, read_hub_rows

        return build_file_task(data, self, read_hub_rows)


class ReasoningGymKind(TaskKind):
    """`reasoning_gym`: procedural problems of the `reasoning-gym` package (gym.py)."""

    name = "reasoning_gym"

    def check(self, data) -> None:
        from smolgrpo.tasks.gym import check_gym_config

        super().check(data)
        check_gym_config(data.gym_dataset, data.gym_size, data.gym_config)

    def build(self, data) -> Task:
        from smolgrpo.tasks.gym import build_gym_task

        return build_gym_task(data, self)

    def default_reward_weights(self, data) -> dict:
        return dict(TEXT_REWARD_WEIGHTS)

    def title(self, data: dict) -> str:
        options = data.get("gym_config") or {}
        shown = ", ".join(f"{key}={value}" for key, value in options.items())
        return f"{data.get('gym_dataset', '?')} (reasoning-gym{'; ' + shown if shown else ''})"

    def source_text(self, data: dict) -> str:
        return (
            f"reasoning-gym `{data.get('gym_dataset')}`, {data.get('gym_size')} generated "
            f"problems (seed {data.get('gym_seed')})"
        )

    def card_tags(self, data: dict) -> list[str]:
        return [f"reasoning-gym-{data.get('gym_dataset')}"]


GSM8K = GSM8KKind()
TASK_KINDS: dict[str, TaskKind] = {
    kind.name: kind
    for kind in (GSM8K, FileKind("jsonl"), FileKind("csv"), HubKind(), ReasoningGymKind())
}


def task_kind(name: str) -> TaskKind:
    """The kind a `data.task` value names; a one-line error for any other."""
    kind = TASK_KINDS.get(name)
    if kind is None:
        raise SmolGRPOError(
            f"config: unknown task '{name}' for 'data.task' (valid: {', '.join(TASK_KINDS)})"
        )
    return kind


def saved_task_kind(data: dict) -> TaskKind:
    """The kind of a saved config's `data` mapping; GSM8K for configs saved before there were
    tasks (no `task` key)."""
    return TASK_KINDS.get(data.get("task", "gsm8k"), GSM8K)
