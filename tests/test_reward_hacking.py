"""Reward hacking: completions built to score high without being right must not pay.

The policy is optimised against the rewards, so any completion that beats an honest wrong
answer without the right number is a direction training will find. Each hack below is scored
with the default weights against the gold "72" and compared with an honest, well-formatted
wrong answer: its correctness must be 0 (no more than the honest wrong answer's) and its total
must not exceed the honest wrong answer's total. Then every reward must stay fast on 50,000
characters of adversarial text, and nothing in a completion may ever be executed.

`python3 -m pytest -s tests/test_reward_hacking.py` prints the score table.
"""

from __future__ import annotations

import ast
import builtins
import os
import re
import time
from pathlib import Path

import pytest

from smolgrpo.rewards.builtin import DEFAULT_REWARD_WEIGHTS, REWARDS
from smolgrpo.rewards.scoring import score_completions

GOLD = "72"
SOURCE = Path(__file__).parents[1] / "src" / "smolgrpo"


def response(reasoning: str, answer: str) -> str:
    return f"<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n{answer}\n</answer>"


HONEST_RIGHT = response("12 * 6 = 72", "72")
HONEST_WRONG = response("12 * 5 = 60, 60 - 8 = 52", "52")
HACKS = {
    "several answer tags": response("12 * 5 = 60", "52") + "\n<answer>\n72\n</answer>",
    "one answer tag per guess": "<reasoning>\nx\n</reasoning>\n"
    + "".join(f"<answer>{i}</answer>" for i in range(100)),
    "nested answer tags": response("x", "<answer>72</answer>"),
    "every number listed": response("12 * 5 = 60", " ".join(str(i) for i in range(200))),
    "guesses comma-listed": response("12 * 5 = 60", "70, 71, 72, 73"),
    "gold-looking number repeated": response("72 72 72 72", "72 72 72"),
    "gold or another": response("x", "72 or 73"),
    "gold in the reasoning, wrong answer": response("The answer is 72. 72 = 72", "52"),
    "answer tags inside the reasoning": "<reasoning>\nmaybe <answer>72</answer> or\n"
    "</reasoning>\n<answer>\n52\n</answer>",
    "Arabic-Indic digits": response("x", "\u0667\u0662"),
    "mathematical bold digits": response("x", "\U0001d7d5\U0001d7d0"),
    "fullwidth digits": response("x", "\uff17\uff12"),
    "superscript digit": response("x", "7\u00b2"),
    "expression as the answer": response("x", "6*12"),
    "fraction as the answer": response("x", "144/2"),
    "scientific notation": response("x", "7.2e1"),
    "eval-looking arithmetic": response(
        "__import__('os').system('echo hacked') = 72; eval('6*12') = 72; 2**6 = 64", "52"
    ),
    "huge output (50k chars)": response("1 + 1 = 2 " * 5000, "52"),
    "huge answer block": response("x", "7" * 50_000),
    "farmed true equations": response(" ".join(f"{i} + 0 = {i}" for i in range(100)), "52"),
    "gold after the answer": HONEST_WRONG + " 72" * 100,
    "no tags, gold last": "so the answer is 72",
}


def scores(completions: list[str]):
    return score_completions(completions, [GOLD] * len(completions), DEFAULT_REWARD_WEIGHTS)


def test_honest_answers_score_as_expected():
    result = scores([HONEST_RIGHT, HONEST_WRONG])
    assert result.per_reward["correctness"] == [1.0, 0.0]
    assert result.total == [3.5, 1.5]  # everything but correctness is earned by both


@pytest.mark.parametrize("name", list(HACKS))
def test_hack_scores_no_more_than_an_honest_wrong_answer(name):
    result = scores([HONEST_WRONG, HACKS[name]])
    assert result.per_reward["correctness"][1] <= result.per_reward["correctness"][0] == 0.0
    assert result.total[1] <= result.total[0], f"{name}: {result.total[1]} > {result.total[0]}"


def test_print_the_score_table(capsys):
    names = ["honest right", "honest wrong", *HACKS]
    result = scores([HONEST_RIGHT, HONEST_WRONG, *HACKS.values()])
    with capsys.disabled():
        print(f"\n{'completion (gold 72)':38} correctness  total  (honest wrong: 0.00, 1.50)")
        for index, name in enumerate(names):
            correctness = result.per_reward["correctness"][index]
            print(f"{name:38} {correctness:11.2f} {result.total[index]:6.2f}")


# --------------------------------------------------------------------------- time per completion
ADVERSARIAL = {
    "digits": "9" * 50_000,
    "open parens": "(" * 50_000,
    "equals signs": "=" * 50_000,
    "minus signs then an equation": "-" * 49_995 + "1 = 1",
    "comma groups": "1," * 25_000,
    "answer tags": "<answer>" * 6_250,
    "closed answer blocks": "<answer>1</answer>" * 2_942,
    "true equations": "1 + 1 = 2 " * 5_000,
    "long expressions": ("1 + " * 20 + "1 = 21 ") * 600,
    "nested parens expression": ("(" * 9 + "1" + ")" * 9 + " = 1 ") * 2_100,
    "unicode digits": "\u0667" * 50_000,
    "everything": ("<reasoning>12 * (3 + 4) = 84, ٧ </answer> 1,000.5 x 2 = 2001 ") * 820,
}


def best_time(function, text: str, runs: int = 3) -> float:
    times = []
    # Rewards that read the problem get the adversarial text as the problem too.
    extra = {"questions": [text]} if function is REWARDS["grounded_arithmetic"].function else {}
    for _ in range(runs):
        started = time.perf_counter()
        function([text], [GOLD], **extra)
        times.append(time.perf_counter() - started)
    return min(times)


@pytest.mark.parametrize("kind", list(ADVERSARIAL))
def test_every_reward_is_fast_on_50k_characters(kind):
    text = ADVERSARIAL[kind]
    assert len(text) >= 50_000
    for name, function in ((name, spec.function) for name, spec in REWARDS.items()):
        for completion in (text, response(text, "72")):
            seconds = best_time(function, completion)
            assert seconds < 0.05, f"{name} took {seconds * 1000:.1f} ms on {kind}"


# --------------------------------------------------------------------------- nothing runs as code
def test_source_never_evaluates_text_as_code():
    """No call of the builtins eval/exec/compile anywhere in the package: a grep for the text
    `eval(` / `exec(` (not a method such as `model.eval()`), and the same on the parsed code."""
    text_pattern = re.compile(r"(?<![\w.])(eval|exec|compile)\(")
    found = []
    files = sorted(SOURCE.rglob("*.py"))
    for path in files:
        source = path.read_text()
        for number, line in enumerate(source.splitlines(), 1):
            if text_pattern.search(line):
                found.append(f"{path.name}:{number}: {line.strip()}")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                if node.func.id in ("eval", "exec", "compile"):
                    found.append(f"{path.name}:{node.lineno}: call of {node.func.id}")
    assert not found, found
    assert SOURCE / "rewards/builtin.py" in files and len(files) > 10


def test_the_arithmetic_reward_does_not_execute_code(tmp_path, monkeypatch):
    marker = tmp_path / "executed"
    calls = []

    def forbidden(name):
        def record(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} called while scoring")

        return record

    for name in ("eval", "exec", "compile"):
        monkeypatch.setattr(builtins, name, forbidden(name))
    monkeypatch.setattr(os, "system", forbidden("os.system"))
    payloads = [
        f"__import__('os').system('touch {marker}') = 0",
        f"eval(\"open('{marker}', 'w')\") = 1",
        "(lambda: exec('import os'))() = 2",
        "2**10 = 1024",
        "9**9**9 = 1",
        "1e308 * 1e308 = 1",
        "6 * 12 = 72",
    ]
    completions = [response(payload, "72") for payload in payloads]
    for name, function in ((name, spec.function) for name, spec in REWARDS.items()):
        values = function(completions, [GOLD] * len(completions))
        assert all(0.0 <= value <= 1.0 for value in values), name
    arithmetic = REWARDS["arithmetic_consistency"].function(completions, [GOLD] * len(payloads))
    assert arithmetic == [0.0] * 6 + [1.0]  # only the genuine equation counts
    assert not calls and not marker.exists()


# --------------------------------------------------------------------------- grounded arithmetic
QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
    "in May. How many clips did Natalia sell altogether in April and May?"
)
GROUNDED_HONEST = response("48 / 2 = 24\n48 + 24 = 72", "72")
GROUNDED_FARMS = {
    "pasted true equations": response("8 + 2 = 10, 3 * 3 = 9, 5 + 5 = 10", "72"),
    "farmed identities": response(" ".join(f"{i} + 0 = {i}" for i in range(100)), "72"),
    "constants only": response("2 * 2 = 4, 4 * 100 = 400, 1 + 1 = 2", "72"),
    "a chain from an untrue step": response("48 / 2 = 25\n48 + 25 = 73", "72"),
    "the gold restated": response("72 = 72, 72 + 0 = 72", "72"),
}


def grounded(completions: list[str]) -> list[float]:
    reward = REWARDS["grounded_arithmetic"].function
    return reward(completions, [GOLD] * len(completions), questions=[QUESTION] * len(completions))


def test_grounded_arithmetic_pays_a_chain_from_the_problem():
    assert grounded([GROUNDED_HONEST]) == [1.0]
    # the old reward is farmed by every one of these; the grounded one by none
    assert REWARDS["arithmetic_consistency"].function(
        [GROUNDED_FARMS["pasted true equations"]], [GOLD]
    ) == [1.0]


@pytest.mark.parametrize("name", list(GROUNDED_FARMS))
def test_grounded_arithmetic_cannot_be_farmed(name):
    assert grounded([GROUNDED_FARMS[name]]) == [0.0], name


def test_pasted_equations_neither_pay_nor_dilute_and_false_ones_dilute():
    padded = response("48 / 2 = 24\n48 + 24 = 72\n8 + 2 = 10\n5 * 5 = 25", "72")
    assert grounded([padded]) == [1.0]  # the pasted ones are ungrounded: they earn nothing
    slipped = response("48 / 2 = 24\n48 + 24 = 72\n8 + 2 = 11", "72")
    assert grounded([slipped]) == [pytest.approx(2 / 3)]  # 2 grounded, 1 false


def test_grounded_arithmetic_without_the_problem_scores_zero():
    reward = REWARDS["grounded_arithmetic"].function
    assert reward([GROUNDED_HONEST], [GOLD]) == [0.0]
    totals = score_completions(
        [GROUNDED_HONEST], [GOLD], {"grounded_arithmetic": 1.0}, questions=[QUESTION]
    ).total
    assert totals == [1.0]
