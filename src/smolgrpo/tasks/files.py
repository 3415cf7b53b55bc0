"""The `jsonl`, `csv` and `hub` tasks: questions and answers from any file or hub dataset,
with a field mapping.

`data.source` is a file, or a folder holding `<split>.jsonl` (`<split>.csv`); for `hub`, a
dataset id on the Hugging Face hub (`data.hub_config` names its configuration, if it has
several), loaded with `datasets` (a cached copy loads offline). Each row gives its
question in `data.question_field` and its gold answer in `data.answer_field` (used as written,
stripped; no `####` needed). `data.answer_type` picks the comparison with the model's
`<answer>` text:

* `number`: the numeric `answers_match` of rewards/answers.py (GSM8K's check).
* `exact`: equal after stripping, casefolding and collapsing runs of whitespace.
* `math`: symbolic equivalence with `math-verify` (`pip install 'smolgrpo[math]'`), so
  `\\frac{1}{2}`, `1/2` and `0.5` all match. A bare answer is read as inline LaTeX (`$...$`).
  math-verify parses the answer with sympy (built on `eval`), so the check runs in the sandbox
  (rewards/sandbox.py, `data.gym_check_timeout_s` per answer), never in this process.

A column the mapping names but a row lacks is a one-line error naming file, line and column
(for a hub dataset: `id[split]:row`).
"""

from __future__ import annotations

import csv
from pathlib import Path

from smolgrpo.errors import SmolGRPOError
from smolgrpo.rewards.answers import answers_match, parse_number
from smolgrpo.rewards.sandbox import DEFAULT_TIMEOUT_S, SandboxedCheck
from smolgrpo.tasks.base import Task, TaskKind
from smolgrpo.tasks.data import Problem, jsonl_rows

MATH_EXTRA_HINT = "pip install 'smolgrpo[math]'"
MATH_CHECK = "smolgrpo.rewards.math_answers:check_math"


def normalize_exact(text: str) -> str:
    """`exact` answers compare as stripped, casefolded text with single spaces."""
    return " ".join(text.split()).casefold()


def check_number(predicted: str | None, gold: str) -> float:
    return 1.0 if answers_match(predicted, gold) else 0.0


def check_exact(predicted: str | None, gold: str) -> float:
    if predicted is None:
        return 0.0
    return 1.0 if normalize_exact(predicted) == normalize_exact(gold) else 0.0


def answer_check_for(answer_type: str, timeout_s: float = DEFAULT_TIMEOUT_S):
    if answer_type == "math":
        try:
            import math_verify  # noqa: F401
        except ImportError:
            raise SmolGRPOError(
                f"data.answer_type 'math' needs the math-verify package: {MATH_EXTRA_HINT}"
            ) from None
        # math-verify runs sympy on the answer: never in this process (math_answers.py)
        return SandboxedCheck(
            {"kind": "function", "target": MATH_CHECK, "warm_up": ["1/2", "\\frac{1}{2}"]},
            timeout_s,
        )
    return {"number": check_number, "exact": check_exact}[answer_type]


def _jsonl_rows(path: Path):
    """(line number, row) for each non-blank line; one-line errors for bad lines."""
    for line_number, row in jsonl_rows(path):
        if not isinstance(row, dict):
            raise SmolGRPOError(
                f"{path}:{line_number}: expected a JSON object, got {type(row).__name__}"
            )
        yield line_number, row


def _csv_rows(path: Path):
    """(line number, row) per CSV record; the first line is the header."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            for row in reader:
                yield reader.line_num, row
    except OSError as error:
        raise SmolGRPOError(f"{path}: cannot read ({error.strerror})") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise SmolGRPOError(f"{path}: not a readable CSV file ({error})") from None


_ROW_READERS = {"jsonl": _jsonl_rows, "csv": _csv_rows}


def read_rows(
    path: Path, file_format: str, question_field: str, answer_field: str, solution_field=None
) -> list[Problem]:
    """Problems of a JSONL or CSV file (`file_format`) through the field mapping. With
    `solution_field`, a problem's solution is `<steps>\n#### <answer>`, GSM8K's shape, so a
    few-shot example shows the steps as its reasoning (prompts.format_reference_response)."""
    rows = _ROW_READERS[file_format](path)
    numbered = ((f"{path}:{line_number}", row) for line_number, row in rows)
    problems = map_rows(numbered, question_field, answer_field, solution_field)
    if not problems:
        raise SmolGRPOError(f"{path}: no problems found (empty file)")
    return problems


def map_rows(rows, question_field: str, answer_field: str, solution_field=None) -> list[Problem]:
    """Problems of `(origin, row mapping)` pairs through the field mapping."""
    problems = []
    for origin, row in rows:
        fields = {}
        roles = [("question", question_field), ("answer", answer_field)]
        if solution_field:
            roles.append(("solution", solution_field))
        for role, column in roles:
            value = row.get(column)
            if column not in row or value is None:
                columns = ", ".join(str(key) for key in row if key is not None)
                raise SmolGRPOError(
                    f"{origin}: no column '{column}' (data.{role}_field; columns: {columns})"
                )
            if isinstance(value, int | float) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str) or not value.strip():
                raise SmolGRPOError(f"{origin}: column '{column}' must be a non-empty string")
            fields[role] = value.strip()
        solution = fields["answer"]
        if solution_field:
            solution = f"{fields['solution']}\n#### {fields['answer']}"
        problems.append(Problem(fields["question"], solution, fields["answer"], origin))
    return problems


def read_hub_rows(data, split: str) -> list[Problem]:
    """Problems of one split of a hub dataset through the field mapping."""
    from smolgrpo.tasks.data import load_hub_rows

    if not data.source:
        raise SmolGRPOError("data.task 'hub' needs data.source (a hub dataset id)")
    rows = load_hub_rows(data.source, split, data.hub_config)
    numbered = ((f"{data.source}[{split}]:{index}", dict(row)) for index, row in enumerate(rows))
    problems = map_rows(
        numbered,
        data.question_field,
        data.answer_field,
        data.solution_field,
    )
    if not problems:
        raise SmolGRPOError(f"{data.source}[{split}]: no problems found (empty split)")
    return problems


def resolve_file(source: str | None, split: str, kind: str) -> Path:
    if not source:
        raise SmolGRPOError(f"data.task '{kind}' needs data.source (a .{kind} file or a folder)")
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / f"{split}.{kind}"
        if not path.is_file():
            raise SmolGRPOError(f"{source}: no '{split}.{kind}' in this folder")
    elif not path.is_file():
        raise SmolGRPOError(f"{source}: no such file or folder")
    return path


def read_file_split(data, split: str) -> list[Problem]:
    """Problems of one split of a `jsonl` or `csv` task (`data.task` is the file format)."""
    path = resolve_file(data.source, split, data.task)
    return read_rows(
        path,
        data.task,
        data.question_field,
        data.answer_field,
        data.solution_field,
    )


def build_file_task(data, kind: TaskKind, read_split) -> Task:
    """A field-mapped task whose `read_split(data, split)` gives a split's problems
    (`read_file_split`, `read_hub_rows`)."""
    answer_check = answer_check_for(data.answer_type, data.gym_check_timeout_s)

    def load(split) -> list[Problem]:
        problems = read_split(data, split)
        if data.answer_type == "number":  # a gold that is no number could never be matched
            for problem in problems:
                if parse_number(problem.gold) is None:
                    raise SmolGRPOError(
                        f"{problem.origin}: answer {problem.gold[:40]!r} is not a number "
                        "(data.answer_type: number)"
                    )
        return problems

    return Task(kind, kind.title(vars(data)), load, answer_check)
