"""Paired comparison of two evals on the same problems: which problems each got right, and the
exact McNemar test of whether the two models differ.

Two accuracies on the same 1,319 problems are not independent samples: most problems are wrong
(or right) for both models, and only the problems where they disagree carry evidence. Two
Wilson intervals that overlap can hide a clear difference; the paired test counts the
discordant problems (right for one model only) and asks how likely so lopsided a split would be
if each were equally likely to go either way (a two-sided exact binomial test at p = 1/2).

    GPU chain, SFT -> SFT + GRPO: 28 both right, 19 only SFT, 36 only GRPO -> p = 0.030
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from smolgrpo.errors import SmolGRPOError

SAMPLES_FILE = "samples.jsonl"  # an eval folder's records, one per completion


@dataclass
class PairedResult:
    first: str
    second: str
    problems: int  # problems both evals scored
    both_right: int
    only_first: int
    only_second: int
    neither: int
    p_value: float  # exact two-sided McNemar

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"{self.first} → {self.second}, {self.problems} shared problems: "
            f"{self.both_right} both right, {self.only_first} only {self.first}, "
            f"{self.only_second} only {self.second}, {self.neither} neither; "
            f"exact McNemar p {format_p(self.p_value)}"
        )


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """Two-sided exact McNemar p-value: 2 * P(X <= min(b, c)) for X ~ Binomial(b + c, 1/2),
    capped at 1 (1.0 when the models never disagree)."""
    discordant = only_first + only_second
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, k) for k in range(min(only_first, only_second) + 1))
    return min(1.0, 2 * tail / 2**discordant)


def format_p(p: float) -> str:
    """`= 0.03`, `= 1`, `< 0.001`: the relation and the value, as written after `p`."""
    return f"= {p:.2g}" if p >= 0.001 else "< 0.001"


def problem_key(record: dict) -> str:
    """An eval record's problem: its origin file name and line (`test.jsonl:17`), so that evals
    of the same file from different folders or machines pair up; the problem index where there
    is none."""
    origin = record.get("origin")
    return Path(str(origin)).name if origin else f"#{record.get('problem_index')}"


def read_samples(eval_dir: Path | str) -> list[dict]:
    """The records of an eval folder's samples.jsonl; a missing file or a line that is not JSON
    raises SmolGRPOError naming the file (and line)."""
    path = Path(eval_dir) / SAMPLES_FILE
    if not path.is_file():
        raise SmolGRPOError(f"{path}: no such file (not a `smolgrpo eval` output folder)")
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise SmolGRPOError(f"{path}:{number}: not JSON ({error.msg})") from None
    return records


def first_sample_correct(records: list[dict]) -> dict[str, bool]:
    """Problem key (`problem_key`'s) -> whether the first sample of it was right (a greedy eval
    has one sample a problem); records without a `correct` field are skipped."""
    return {
        problem_key(r): bool(r["correct"])
        for r in records
        if r.get("sample_index", 0) == 0 and "correct" in r
    }


def correct_by_problem(eval_dir: Path | str) -> dict[str, bool] | None:
    """`first_sample_correct` of an eval folder; None without samples, or when the file is
    damaged (no paired figures rather than wrong ones)."""
    try:
        return first_sample_correct(read_samples(eval_dir)) or None
    except SmolGRPOError:
        return None


def paired_comparison(first: tuple[str, Path], second: tuple[str, Path]) -> PairedResult | None:
    """The paired counts and p-value of two eval folders, or None when either has no samples
    or they share no problem."""
    (first_name, first_dir), (second_name, second_dir) = first, second
    a, b = correct_by_problem(first_dir), correct_by_problem(second_dir)
    if a is None or b is None:
        return None
    shared = sorted(a.keys() & b.keys())
    if not shared:
        return None
    both = sum(a[k] and b[k] for k in shared)
    only_first = sum(a[k] and not b[k] for k in shared)
    only_second = sum(b[k] and not a[k] for k in shared)
    return PairedResult(
        first_name,
        second_name,
        len(shared),
        both,
        only_first,
        only_second,
        len(shared) - both - only_first - only_second,
        mcnemar_exact(only_first, only_second),
    )
