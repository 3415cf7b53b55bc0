"""Evals of the same problems, split further than `smolgrpo compare` does: right answers by the
test problem's reference step count, solutions holding a false equation, the paired (exact
McNemar) test on strict format of the first two, with three or more evals how many problems are
right in how many of them, and the mean example length (question + formatted reference,
tokens) of the train problems with at most N steps against all of them. Numbers for README's
"SFT on the shorter problems" and the calculator.

    python analysis/eval_breakdown.py runs/eval-cpu-grpo-c122-1319 runs/eval-cpu-grpo-s3-1319 \
        --data ../shared/data/gsm8k --max-steps 3
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from smolgrpo.errors import SmolGRPOError
from smolgrpo.evaluation.paired import format_p, mcnemar_exact, read_samples
from smolgrpo.tasks.data import read_jsonl, solution_steps


def fail(message: str) -> None:
    print(f"eval_breakdown: {message}", file=sys.stderr)
    sys.exit(2)


def samples(eval_dir: Path) -> list[dict]:
    try:
        return read_samples(eval_dir)
    except SmolGRPOError as error:
        fail(str(error))


def step_band(steps: int | None) -> str:
    return "1-2" if (steps or 0) <= 2 else "3" if steps == 3 else "4+"


def right_by_band(rows: list[dict], test_steps: list[int | None]) -> dict[str, int]:
    right = Counter({step_band(steps): 0 for steps in test_steps})
    for row in rows:
        right[step_band(test_steps[row["problem_index"]])] += bool(row["correct"])
    return dict(sorted(right.items()))


def false_equations(rows: list[dict]) -> tuple[int, int]:
    """(solutions with a false equation, right answers among them): `arithmetic_consistency`,
    the share of a solution's `a op b = c` that hold, below 1."""
    flagged = [row for row in rows if row["rewards"].get("arithmetic_consistency", 1.0) < 1.0]
    return len(flagged), sum(bool(row["correct"]) for row in flagged)


def right_in_how_many(runs: list[list[dict]]) -> dict[int, int]:
    """{k: problems right in exactly k of the evals}, for k >= 1."""
    right = Counter(row["problem_index"] for rows in runs for row in rows if row["correct"])
    return dict(sorted(Counter(right.values()).items()))


def strict_only(first: list[dict], second: list[dict]) -> tuple[int, int]:
    """Problems in strict format in one eval only: (first only, second only)."""
    a, b = (
        [row["rewards"].get("strict_format", 0) > 0 for row in rows] for rows in (first, second)
    )
    return sum(x and not y for x, y in zip(a, b)), sum(y and not x for x, y in zip(a, b))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("evals", nargs="+", type=Path, help="two or more eval folders")
    parser.add_argument("--data", type=Path, required=True, help="folder with train/test.jsonl")
    parser.add_argument("--max-steps", type=int, default=3)
    args = parser.parse_args(argv)
    if len(args.evals) < 2:
        fail("give two or more eval folders")
    for split in ("train", "test"):
        if not (args.data / f"{split}.jsonl").is_file():
            fail(f"{args.data / f'{split}.jsonl'}: no such file (--data)")
    try:
        test_steps = [solution_steps(p) for p in read_jsonl(args.data / "test.jsonl")]
        train = read_jsonl(args.data / "train.jsonl")
    except SmolGRPOError as error:  # a malformed or empty file: its own one-line message
        fail(str(error))
    print(
        "test problems by reference steps",
        dict(sorted(Counter(map(step_band, test_steps)).items())),
    )
    runs = [samples(folder) for folder in args.evals]
    for folder, rows in zip(args.evals, runs):
        print(f"{folder.name}: right by reference steps", right_by_band(rows, test_steps))
        flagged, right = false_equations(rows)
        print(
            f"{folder.name}: {flagged} of {len(rows)} solutions hold a false equation, {right} right"
        )
    if len(runs) > 2:
        print(f"problems right in k of the {len(runs)} evals", right_in_how_many(runs))
    only = strict_only(*runs[:2])
    print(
        f"strict format: only first {only[0]}, only second {only[1]}, "
        f"exact McNemar p {format_p(mcnemar_exact(*only))}"
    )
    from transformers import AutoTokenizer

    from smolgrpo.models.loading import embedded_model_dir
    from smolgrpo.tasks.prompts import format_reference_response

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    lengths = [
        (solution_steps(p), len(tokenizer(p.question + format_reference_response(p)).input_ids))
        for p in train
    ]
    short = [n for steps, n in lengths if (steps or 0) <= args.max_steps]
    print(
        f"train examples: all {len(lengths)}, mean {sum(n for _, n in lengths) / len(lengths):.1f} "
        f"tokens; at most {args.max_steps} steps {len(short)}, mean {sum(short) / len(short):.1f}"
    )


if __name__ == "__main__":
    main()
