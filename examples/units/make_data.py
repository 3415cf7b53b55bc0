"""Write the unit-conversion task of docs/tools.md: `train.jsonl` and `test.jsonl` in OUT_DIR.

    python examples/units/make_data.py examples/units

Each row is `{"problem": "How many snibs are in 6 quibs?", "result": "18", "steps":
"convert(6 quib to snib) = 18"}`: the units are made up (unit_tools.py), so the answer needs the
tool, and `steps`, the worked solution a few-shot example shows, is the call. Drawn with a
fixed seed (every run writes the same files, the ones committed beside this script), only
whole-number answers, no test problem also a train problem.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location(
    "unit_tools", Path(__file__).with_name("unit_tools.py")
)
unit_tools = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(unit_tools)


def all_problems() -> list[dict]:
    """Every question with a whole answer up to 1,000: amount 1-40, two different units."""
    rows = []
    for source, source_zorbs in unit_tools.ZORBS_PER_UNIT.items():
        for target, target_zorbs in unit_tools.ZORBS_PER_UNIT.items():
            for amount in range(1, 41):
                if source == target or (amount * source_zorbs) % target_zorbs:
                    continue
                result = amount * source_zorbs // target_zorbs
                if result > 1000:
                    continue
                noun = source if amount == 1 else source + "s"
                rows.append(
                    {
                        "problem": f"How many {target}s are in {amount} {noun}?",
                        "result": str(result),
                        "steps": f"convert({amount} {source} to {target}) = {result}",
                    }
                )
    return rows


def make_splits(test_size: int, seed: int) -> dict[str, list[dict]]:
    rows = all_problems()
    random.Random(seed).shuffle(rows)
    return {"test": rows[:test_size], "train": rows[test_size:]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--test-size", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for split, rows in make_splits(args.test_size, args.seed).items():
        with open(args.out_dir / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
        print(f"wrote {len(rows)} problems to {args.out_dir / f'{split}.jsonl'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
