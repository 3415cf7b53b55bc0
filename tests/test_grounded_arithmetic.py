"""grounded_arithmetic pays a chain of true equations rooted in the problem that ends at the
answer, and nothing for identities, restatements, pasted or ungrounded equations (the farms).

`python3 -m pytest -s tests/test_grounded_arithmetic.py` prints the farm table.
"""

from __future__ import annotations

import pytest

from smolgrpo.rewards.arithmetic import unit_equations
from smolgrpo.rewards.builtin import REWARDS
from smolgrpo.rewards.grounding import GROUNDING_CONSTANTS, grounded_steps, question_numbers
from smolgrpo.rewards.scoring import score_completions

NATALIA = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
    "in May. How many clips did Natalia sell altogether in April and May?"
)
WENG = (
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
    "How much did she earn?"
)


def response(reasoning: str, answer: str) -> str:
    return f"<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n{answer}\n</answer>"


def grounded(completion: str, question: str = NATALIA) -> float:
    reward = REWARDS["grounded_arithmetic"].function
    return reward([completion], ["72"], questions=[question])[0]


HONEST_RIGHT = response("48 / 2 = 24\n48 + 24 = 72", "72")
# An honest wrong attempt with one slip: the weakest honest attempt, and the bar for the farms.
HONEST_WRONG = response("48 / 2 = 24\n48 + 24 = 62", "62")
# (question, completion) of each farm; each must score no more than HONEST_WRONG.
FARMS = {
    "times one": (NATALIA, response("48 * 1 = 48", "72")),
    "times one, answer restated": (NATALIA, response("48 * 1 = 48", "48")),
    "minus itself": (NATALIA, response("48 - 48 = 0", "0")),
    "divided by itself": (NATALIA, response("48 / 48 = 1", "1")),
    "plus zero in units": (NATALIA, response("48 clips + 0 clips = 48 clips", "48")),
    "one true step, not to the answer": (NATALIA, response("48 / 2 = 24", "72")),
    "Weng: times one": (WENG, response("12 * 1 = 12", "12")),
    "pasted true equations": (NATALIA, response("8 + 2 = 10, 3 * 3 = 9, 5 + 5 = 10", "10")),
    "a chain from an untrue step": (NATALIA, response("48 / 2 = 25\n48 + 25 = 73", "73")),
    "the gold restated": (NATALIA, response("72 = 72, 72 + 0 = 72", "72")),
    "the gold from numbers not in the problem": (NATALIA, response("70 + 2 = 72", "72")),
    "the gold as a quotient of unknowns": (NATALIA, response("144 / 2 = 72", "72")),
    "long run of identities": (
        NATALIA,
        response(" ".join(f"{i} + 0 = {i}" for i in range(100)), "72"),
    ),
    "long run of trivial steps on the problem": (
        NATALIA,
        response("\n".join(["48 * 1 = 48", "48 / 1 = 48", "48 - 0 = 48"] * 20), "48"),
    ),
    "constants only": (NATALIA, response("2 * 2 = 4, 4 * 100 = 400, 1 + 1 = 2", "400")),
    "an unknown operand beside a grounded one": (NATALIA, response("48 + 25 = 73", "73")),
    "a true chain, another answer": (NATALIA, response("48 / 2 = 24\n48 + 24 = 72", "96")),
    "the chain after the answer": (NATALIA, response("", "72") + "\n48 / 2 = 24\n48 + 24 = 72"),
    "algebra that proves nothing": (NATALIA, response("x = 72\nx * 1 = 72", "72")),
}


def test_honest_chains_score_the_maximum():
    assert grounded(HONEST_RIGHT) == 1.0
    weng = response("Weng earns 12/60 = $0.2 per minute.\nShe earned 0.2 x 50 = $10.", "10")
    assert grounded(weng, WENG) == 1.0  # 60 minutes an hour is a unit constant
    misread = response("48 * 2 = 96\n48 + 96 = 144", "144")  # wrong, but a true chain
    assert grounded(misread) == 1.0
    assert grounded(HONEST_WRONG) == 0.0  # the slip breaks the chain to its answer


@pytest.mark.parametrize("name", list(FARMS))
def test_farm_scores_no_more_than_an_honest_wrong_attempt(name):
    question, completion = FARMS[name]
    assert grounded(completion, question) <= grounded(HONEST_WRONG) == 0.0, name


def test_print_the_farm_table(capsys):
    with capsys.disabled():
        print(f"\n{'completion':44} grounded_arithmetic")
        print(f"{'honest right (Natalia)':44} {grounded(HONEST_RIGHT):.2f}")
        print(f"{'honest wrong, one slip (the bar)':44} {grounded(HONEST_WRONG):.2f}")
        for name, (question, completion) in FARMS.items():
            print(f"{name:44} {grounded(completion, question):.2f}")


def test_the_issue_example_no_longer_pays_the_identity_over_the_reference():
    weights = {"correctness": 2.0, "strict_format": 0.5, "grounded_arithmetic": 0.25}
    reference = response("Weng earns 12/60 = $0.2 per minute.\n0.2 x 50 = $10.", "10")
    identity = response("12 * 1 = 12", "10")
    totals = score_completions([reference, identity], ["10", "10"], weights, [WENG, WENG]).total
    assert totals == [2.75, 2.5]  # was 2.5 and 2.75


def test_a_false_step_beside_the_chain_dilutes_and_pasted_ones_do_not():
    false_beside = response("48 / 2 = 24\n48 + 24 = 72\n48 * 3 = 140", "72")
    assert grounded(false_beside) == pytest.approx(2 / 3)  # 2 grounded, 1 false
    pasted_beside = response("48 / 2 = 24\n48 + 24 = 72\n8 + 2 = 10\n5 * 5 = 25", "72")
    assert grounded(pasted_beside) == 1.0  # ungrounded: earns nothing, costs nothing


def test_a_trivial_step_may_end_a_chain_built_on_earlier_results():
    question = "Andy has 4 times as many white socks as black socks. He loses half his white "
    question += "socks. How many more white socks than black socks does he have, with 6 black?"
    steps = "6 x 4 = 24 white socks.\nHe loses 24/2 = 12.\nHe has 12 - 6 = 6 more."
    assert grounded(response(steps, "6"), question) == 1.0
    # the same trivial step straight from the problem's numbers proves nothing
    assert grounded(response("12 - 6 = 6", "6"), "He has 12 and 6. " + question) == 0.0


def test_question_numbers_read_digits_percents_and_number_words():
    numbers = question_numbers("Half of 1,200 apples, 20% more, twice a dozen and seven eggs")
    assert numbers == {1200.0, 12.0, 20.0, 0.2, 7.0}
    # "half", "twice", "a dozen" ground through the constants, only beside such a number
    assert {2.0, 0.5, 12.0} <= GROUNDING_CONSTANTS


def test_grounded_step_verdicts():
    text = "48 / 2 = 24\n48 * 1 = 48\n48 + 24 = 73\n8 + 2 = 10\n24 * 60 = 1440\n2 * 60 = 120"
    verdicts = [(step.verdict, step.value) for step in grounded_steps(text, NATALIA)]
    assert verdicts == [
        ("grounded", 24.0),
        ("trivial", 48.0),
        ("false", 73.0),
        ("ungrounded", 10.0),  # neither 8 nor 10 is the problem's or a constant
        ("grounded", 1440.0),  # 60: a unit constant beside a grounded 24
        ("ungrounded", 120.0),  # "half" and 60 are both constants: nothing of the problem
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("16 feet/side * 3 sides = 48 feet", [(48.0, True)]),
        ("4 weeks * 1 extra mile/week = 4 extra miles", [(4.0, True)]),
        ("She earned 0.2 x 50 = $10.", [(10.0, True)]),
        ("Day 1: 70(.30) = 21 crickets", [(21.0, True)]),
        ("20% * 50 = 10", [(10.0, True)]),  # a percent read as a fraction
        ("100% - 20% = 80%", [(80.0, True)]),  # or as written
        ("1/2 * 1/2 = 1/4", [(0.25, True)]),  # a stated fraction
        ("6 times 1/4 equals 1.5", [(1.5, True)]),
        ("Samuel is 78 \u2013 30 = 48 minutes faster", [(48.0, True)]),
        ("(X-2)*9/2 = 63", []),  # algebra: 9/2 is not what was stated equal to 63
        ("X*3/4 = $24", []),
        ("6x+12=108", []),
        ("1*2*2*2*2*2*2*2*2*2*2*2*2 = 4,096", []),  # longer than an expression may be
        ("80% there because (8 / 10) x 100 = 80", [(80.0, True)]),  # units end a product
    ],
)
def test_unit_equations_read_solutions_as_written(text, expected):
    assert [(stated, holds) for _, _, stated, holds in unit_equations(text)] == expected
