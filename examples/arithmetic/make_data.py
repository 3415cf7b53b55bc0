"""Write a small arithmetic task as JSONL: `train.jsonl` and `test.jsonl` in OUT_DIR.

    python examples/arithmetic/make_data.py runs/data/arithmetic

Each row is `{"problem": "What is 47 + 38?", "result": "85", "steps": "40 + 30 = 70 ..."}`:
two-digit sums and differences and two-digit by one-digit products, drawn with a fixed seed, so
every run of this script writes the same files. `steps` splits the sum into tens and units, the
worked solution a few-shot example shows (`data.solution_field: steps`). No test problem is also a train problem. The data is generated, never
downloaded; it is the example of README "Train on your own task".
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def worked_steps(a: int, op: str, b: int) -> str:
    """Tens and units apart: '47 + 38' -> '40 + 30 = 70', '7 + 8 = 15', '70 + 15 = 85'."""
    tens, units = a - a % 10, a % 10
    if op == "*":
        parts = [f"{tens} * {b} = {tens * b}", f"{units} * {b} = {units * b}"]
        return "\n".join(parts + [f"{tens * b} + {units * b} = {a * b}"])
    other_tens, other_units = b - b % 10, b % 10
    if op == "+":
        parts = [f"{tens} + {other_tens} = {tens + other_tens}", f"{units} + {other_units} = "
                 f"{units + other_units}"]  # fmt: skip
        return "\n".join(parts + [f"{tens + other_tens} + {units + other_units} = {a + b}"])
    first = a - other_tens
    return "\n".join([f"{a} - {other_tens} = {first}", f"{first} - {other_units} = {a - b}"])


def make_problem(rng: random.Random) -> dict:
    op = rng.choice("+-*")
    if op == "*":
        a, b = rng.randint(11, 99), rng.randint(2, 9)
        result = a * b
    else:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        result = a + b if op == "+" else a - b
    return {
        "problem": f"What is {a} {op} {b}?",
        "result": str(result),
        "steps": worked_steps(a, op, b),
    }


def make_splits(train_size: int, test_size: int, seed: int) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    seen: set[str] = set()
    splits: dict[str, list[dict]] = {"test": [], "train": []}
    for split, size in (("test", test_size), ("train", train_size)):
        while len(splits[split]) < size:
            row = make_problem(rng)
            if row["problem"] not in seen:
                seen.add(row["problem"])
                splits[split].append(row)
    return splits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder for train.jsonl and test.jsonl")
    parser.add_argument("--train-size", type=int, default=2000, help="train problems (2000)")
    parser.add_argument("--test-size", type=int, default=300, help="test problems (300)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (0)")
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for split, rows in make_splits(args.train_size, args.test_size, args.seed).items():
        path = args.out_dir / f"{split}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        print(f"wrote {len(rows)} problems to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
