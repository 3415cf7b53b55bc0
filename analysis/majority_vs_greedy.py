"""Self-consistency against greedy decoding on the same problems: the majority vote of a sampled
eval (`smolgrpo eval --num-samples k --temperature T`) against a greedy eval of the same model,
on the problems both hold (paired by the problem's file and line), with 95% Wilson intervals
and the exact McNemar test of the paired difference. maj@k is test-time compute (k decodes a
problem), so it is reported apart from greedy accuracy.

    python analysis/majority_vs_greedy.py runs/chain-seed1/eval-maj8-400 runs/chain-seed1/eval-1319
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter
from pathlib import Path

from smolgrpo.errors import SmolGRPOError
from smolgrpo.evaluation import paired
from smolgrpo.evaluation.evaluate import format_rate_with_interval, wilson_interval
from smolgrpo.evaluation.majority import majority_record, vote_key
from smolgrpo.evaluation.paired import format_p, mcnemar_exact, problem_key


def fail(message: str) -> None:
    print(f"majority_vs_greedy: {message}", file=sys.stderr)
    sys.exit(2)


def read_samples(eval_dir: Path) -> list[dict]:
    try:
        return paired.read_samples(eval_dir)
    except SmolGRPOError as error:
        fail(str(error))


def by_problem(records: list[dict]) -> dict[str, list[dict]]:
    """Problem key -> its samples, in record order."""
    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(problem_key(record), []).append(record)
    return groups


def majority_by_problem(groups: dict[str, list[dict]]) -> dict[str, bool]:
    """Problem key -> is the majority answer of its samples (`by_problem`'s groups) right (no
    answer at all: wrong)."""
    outcome = {}
    for key, samples in groups.items():
        winner = majority_record(sorted(samples, key=lambda r: r.get("sample_index", 0)))
        outcome[key] = bool(winner is not None and winner["correct"])
    return outcome


def spread(groups: dict[str, list[dict]]) -> tuple[dict[int, int], float, float]:
    """How the samples of a problem (`by_problem`'s groups) spread: {right samples: problems}
    over the problems with at least one right sample, and the mean and median count of
    different answers a problem (by value, as they vote)."""
    right = Counter(sum(r["correct"] for r in g) for g in groups.values())
    right.pop(0, None)
    distinct = [
        len({vote_key(r.get("extracted_answer")) for r in g} - {None}) for g in groups.values()
    ]
    return dict(sorted(right.items())), statistics.mean(distinct), statistics.median(distinct)


def paired_counts(first: dict[str, bool], second: dict[str, bool]) -> dict[str, int]:
    shared = first.keys() & second.keys()
    return {
        "problems": len(shared),
        "first_right": sum(first[k] for k in shared),
        "second_right": sum(second[k] for k in shared),
        "both": sum(first[k] and second[k] for k in shared),
        "only_first": sum(first[k] and not second[k] for k in shared),
        "only_second": sum(second[k] and not first[k] for k in shared),
    }


def rate(right: int, n: int) -> str:
    return f"{right} right, " + format_rate_with_interval(right / n, wilson_interval(right, n))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sampled", type=Path, help="eval folder with k samples a problem")
    parser.add_argument("greedy", type=Path, help="greedy eval folder of the same model")
    args = parser.parse_args(argv)
    sampled = read_samples(args.sampled)
    groups = by_problem(sampled)
    counts = paired_counts(
        majority_by_problem(groups), paired.first_sample_correct(read_samples(args.greedy))
    )
    n = counts["problems"]
    if n == 0:
        fail(f"{args.sampled} and {args.greedy} share no problem")
    k = max(r.get("sample_index", 0) for r in sampled) + 1
    p = mcnemar_exact(counts["only_first"], counts["only_second"])
    print(f"{n} problems held by both evals")
    print(f"maj@{k}:  {rate(counts['first_right'], n)}")
    print(f"greedy: {rate(counts['second_right'], n)}")
    print(
        f"paired: {counts['both']} both, {counts['only_first']} only maj@{k}, "
        f"{counts['only_second']} only greedy, McNemar p {format_p(p)}"
    )
    right, mean, median = spread(groups)
    print(f"problems by right samples (of {k}), where any is right: {right}")
    print(f"different answers a problem: mean {mean:.1f}, median {median:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
