"""Tests for smolgrpo.rewards.builtin: extraction, number parsing, each reward, and the known hacks."""

import math

import pytest

from smolgrpo.rewards.answers import (
    answers_match,
    extract_answer,
    extract_last_number,
    parse_number,
)
from smolgrpo.rewards.builtin import (
    DEFAULT_REWARD_WEIGHTS,
    REWARDS,
    arithmetic_consistency_reward,
    correctness_reward,
    default_reward_weights,
    integer_answer_reward,
    soft_format_reward,
    strict_format_reward,
    xml_count_reward,
)
from smolgrpo.rewards.scoring import RewardResult, score_completions

GOOD = "<reasoning>\n12 * 5 = 60\n60 - 8 = 52\n</reasoning>\n<answer>\n52\n</answer>"


def completion_with_answer(answer: str) -> str:
    return f"<reasoning>\nthinking\n</reasoning>\n<answer>\n{answer}\n</answer>"


# --------------------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD, "52"),
        ("<answer> 72 </answer>", "72"),
        ("blah <answer>\n$1,234.50\n</answer> trailing", "$1,234.50"),
        ("no tags at all 72", None),
        ("<answer></answer>", None),
        ("<answer>   \n </answer>", None),
        ("<answer>72</answer><answer>73</answer>", None),
        ("<answer><answer>72</answer></answer>", None),
        ("<answer>72", None),
        ("72</answer>", None),
        ("</answer>72<answer>", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 72.", "72"),
        ("first 5 then 10 then 1,000 people", "1,000"),
        ("she lost -3 points", "-3"),
        ("10-3", "3"),
        ("costs $1,234.50 in total", "1,234.50"),
        ("no numbers here", None),
        ("unicode ٧٢ only", None),
        ("", None),
    ],
)
def test_extract_last_number(text, expected):
    assert extract_last_number(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("72", 72.0),
        ("72.0", 72.0),
        ("$72", 72.0),
        ("72 dollars", 72.0),
        ("1,000", 1000.0),
        ("1,000,000", 1_000_000.0),
        ("-3", -3.0),
        ("0.5", 0.5),
        (".5", 0.5),
        ("72.", 72.0),
        ("$1,234.50", 1234.5),
        ("-$5", -5.0),
        ("50%", 50.0),
        ("  72\n", 72.0),
    ],
)
def test_parse_number_accepts(text, expected):
    assert parse_number(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "no number",
        "72, 73",
        "72 or 73",
        "1 2 3",
        "3/4",
        "72,73",
        "1e3",
        "٧٢",  # Arabic-Indic digits
        "𝟕𝟐",  # mathematical bold digits
        "７２",  # fullwidth digits
        "72²",
        "9" * 400,  # overflows to inf
    ],
)
def test_parse_number_rejects(text):
    assert parse_number(text) is None


@pytest.mark.parametrize(
    ("predicted", "gold", "expected"),
    [
        ("72", "72", True),
        ("72.0", "72", True),
        ("$72", "72", True),
        ("72 dollars", "72", True),
        ("1,000", "1000", True),
        ("1000", "1,000", True),
        ("-3", "-3", True),
        ("0.5", "0.5", True),
        ("7.2", "72", False),
        ("72.001", "72", False),
        ("3", "-3", False),
        (None, "72", False),
        ("72", "not a number", False),
        ("72, 73", "72", False),
    ],
)
def test_answers_match(predicted, gold, expected):
    assert answers_match(predicted, gold) is expected


# --------------------------------------------------------------------------- correctness and hacks


@pytest.mark.parametrize(
    ("answer", "gold", "expected"),
    [
        ("72", "72", 1.0),
        ("72.0", "72", 1.0),
        ("$72", "72", 1.0),
        ("72 dollars", "72", 1.0),
        ("1,000", "1000", 1.0),
        ("7.2", "72", 0.0),
        ("72, 73", "72", 0.0),
        ("72 or 73", "72", 0.0),
        ("", "72", 0.0),
        ("٧٢", "72", 0.0),
        ("𝟕𝟐", "72", 0.0),
    ],
)
def test_correctness_reward(answer, gold, expected):
    assert correctness_reward([completion_with_answer(answer)], [gold]) == [expected]


@pytest.mark.parametrize(
    "completion",
    [
        "<reasoning>x</reasoning><answer>71</answer><answer>72</answer>",
        "<reasoning>x</reasoning><answer>72</answer><answer>72</answer>",
        "<reasoning>x</reasoning><answer><answer>72</answer></answer>",
        "<reasoning>x</reasoning><answer>72",
        "72",
    ],
)
def test_correctness_rejects_answer_hacks(completion):
    assert correctness_reward([completion], ["72"]) == [0.0]


def test_rewards_survive_garbage_and_non_strings():
    garbage = "\x00\x01\xff\ufffd<answer>\x00</answer>\udc80 = ) ( * / 0 = 5 / 0"
    for reward in (spec.function for spec in REWARDS.values()):
        scores = reward([garbage, None, 42, ""], ["72", "72", "72", "72"])  # type: ignore[list-item]
        assert len(scores) == 4
        assert all(0.0 <= s <= 1.0 for s in scores)
        assert scores[1:3] == [0.0, 0.0]


def test_rewards_tolerate_missing_gold_answers():
    assert correctness_reward([GOOD, GOOD], ["52"]) == [1.0, 0.0]
    assert strict_format_reward([GOOD], []) == [1.0]


def test_long_completion_is_scored():
    reasoning = "1 + 1 = 2 " * 5000
    long_completion = f"<reasoning>{reasoning}</reasoning>\n<answer>\n2\n</answer>"
    assert len(long_completion) > 50_000
    result = score_completions([long_completion], ["2"], DEFAULT_REWARD_WEIGHTS)
    assert result.per_reward["correctness"] == [1.0]
    assert result.per_reward["strict_format"] == [1.0]
    assert result.per_reward["arithmetic_consistency"] == [1.0]
    adversarial = ["(" * 50_000, "-" * 50_000 + "1 = 1", "=" * 50_000, "1," * 25_000, "9" * 50_000]
    for reward in (spec.function for spec in REWARDS.values()):
        scores = reward(adversarial, ["1"] * len(adversarial))
        assert all(isinstance(s, float) for s in scores)


# --------------------------------------------------------------------------- format rewards


@pytest.mark.parametrize(
    ("completion", "strict", "soft"),
    [
        (GOOD, 1.0, 1.0),
        ("  \n" + GOOD + "\n\n", 1.0, 1.0),
        ("<reasoning>a</reasoning><answer>5</answer>", 1.0, 1.0),
        ("Sure! " + GOOD, 0.0, 1.0),
        (GOOD + " extra text", 0.0, 1.0),
        ("<reasoning>a</reasoning> and so <answer>5</answer>", 0.0, 1.0),
        ("<reasoning>a</reasoning><answer> </answer>", 0.0, 1.0),
        ("<reasoning>a</reasoning><answer>5</answer><answer>6</answer>", 0.0, 1.0),
        ("<reasoning>a<reasoning>b</reasoning><answer>5</answer>", 0.0, 1.0),
        ("<answer>5</answer><reasoning>a</reasoning>", 0.0, 0.0),
        ("<reasoning>a<answer>5</answer></reasoning>", 0.0, 0.0),
        ("<reasoning>a</reasoning>", 0.0, 0.0),
        ("<answer>5</answer>", 0.0, 0.0),
        ("", 0.0, 0.0),
    ],
)
def test_strict_and_soft_format(completion, strict, soft):
    assert strict_format_reward([completion], ["5"]) == [strict]
    assert soft_format_reward([completion], ["5"]) == [soft]


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (GOOD, 1.0),
        (GOOD + "\n  \n", 1.0),
        (GOOD + "abc", 1.0 - 0.003),  # 3 trailing characters
        (GOOD + " a b c d e ", 1.0 - 0.005),  # whitespace is not penalised
        (GOOD + "x" * 1000, 0.75),  # penalty capped at 0.25
        ("<reasoning>a</reasoning>", 0.5),
        ("<answer>5</answer>" + "x" * 1000, 0.25),
        ("<answer>5</answer>tail" * 2, 0.0),  # answer tags twice, no reasoning: floored at 0
        ("no tags", 0.0),
        ("<reasoning>a</reasoning><answer>5</answer>zz", 0.998),
    ],
)
def test_xml_count_reward(completion, expected):
    assert xml_count_reward([completion], ["5"])[0] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("72", 1.0),
        ("-12", 1.0),
        ("1,000", 1.0),
        ("0", 1.0),
        ("72.0", 0.0),
        ("0.5", 0.0),
        ("$72", 0.0),
        ("72 dollars", 0.0),
        ("1,00", 0.0),
        ("72, 73", 0.0),
        ("٧٢", 0.0),
        ("", 0.0),
    ],
)
def test_integer_answer_reward(answer, expected):
    assert integer_answer_reward([completion_with_answer(answer)], ["72"]) == [expected]


# --------------------------------------------------------------------------- arithmetic


def reasoning(text: str) -> str:
    return f"<reasoning>\n{text}\n</reasoning>\n<answer>\n1\n</answer>"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12 * 5 = 60\n60 - 8 = 52", 1.0),
        ("12 * 5 = 60\n60 - 8 = 51", 0.5),
        ("2 = 2", 0.0),
        ("no equations here", 0.0),
        ("12 * 5 = 60. Again 12 * 5 = 60. And 60 - 8 = 50.", 0.5),  # repeat counted once
        ("48/2 = 24", 1.0),
        ("0.2 x 50 = 10", 1.0),
        ("(3 + 4) * 2 = 14", 1.0),
        ("2(3 + 4) = 14", 1.0),
        ("$12 * 5 = $60", 1.0),
        ("1,000 + 5 = 1,005", 1.0),
        ("12 × 5 = 60 and 60 ÷ 2 = 30", 1.0),
        ("5 - 7 = -2", 1.0),
        ("10/3 = 3.33", 1.0),
        ("10/3 = 3.5", 0.0),
        ("5 / 0 = 3", 0.0),
        ("2 + 3 = 5 + 1 = 6", 1.0),  # chain: 2 + 3 = 5, then 5 + 1 = 6
        ("2 + 3 = 5 + 1 = 7", 0.5),
        ("He has 3 apples + 4 = 7", 0.0),  # "+ 4" alone is trivial
        ("Step 1) 3 + 4 = 7", 1.0),  # leading junk dropped
        ("box = 3 and x = 4", 0.0),
        ("__import__('os').system('x') = 0", 0.0),
        ("__import__('os').system('x') = 0 but 1 + 1 = 2", 1.0),
        ("123456789012345678 + 1 = 123456789012345679", 0.0),  # numbers too long are ignored
    ],
)
def test_arithmetic_consistency(text, expected):
    assert arithmetic_consistency_reward([reasoning(text)], ["1"]) == [pytest.approx(expected)]


def test_arithmetic_uses_reasoning_block_only():
    completion = "<reasoning>1 + 1 = 2</reasoning><answer>2</answer> 1 + 1 = 3 2 + 2 = 5"
    assert arithmetic_consistency_reward([completion], ["2"]) == [1.0]
    # Without a reasoning block the whole text is scanned.
    assert arithmetic_consistency_reward(["1 + 1 = 2 and 2 + 2 = 5"], ["2"]) == [0.5]


def test_arithmetic_many_distinct_wrong_equations():
    text = " ".join(f"{i} + 1 = {i + 2}" for i in range(500))  # all wrong
    assert arithmetic_consistency_reward([reasoning(text)], ["1"]) == [0.0]


# --------------------------------------------------------------------------- weighting


def test_default_weights_name_registered_rewards():
    # grounded_arithmetic needs the problem text, so it is opt-in (the recipes turn it on)
    opt_in = {"grounded_arithmetic", "overlong_penalty"}  # overlong: needs a buffer too
    assert set(DEFAULT_REWARD_WEIGHTS) == set(REWARDS) - opt_in
    assert set(REWARDS) == {
        "correctness",
        "strict_format",
        "soft_format",
        "xml_count",
        "integer_answer",
        "arithmetic_consistency",
        "grounded_arithmetic",
        "overlong_penalty",
    }
    assert max(DEFAULT_REWARD_WEIGHTS, key=DEFAULT_REWARD_WEIGHTS.get) == "correctness"


def test_score_completions_weighted_totals():
    wrong_answer = "Sure! <reasoning>1 + 1 = 3</reasoning><answer>7.5</answer>"
    result = score_completions([GOOD, wrong_answer, "no tags"], ["52"] * 3, DEFAULT_REWARD_WEIGHTS)
    assert isinstance(result, RewardResult)
    # GOOD: every reward is 1.0, so total is the sum of the weights.
    assert result.total[0] == pytest.approx(2.0 + 0.5 + 0.25 + 0.25 + 0.25 + 0.25)
    # wrong_answer: soft 1, xml 4 * 0.25 = 1, everything else 0.
    assert result.per_reward["soft_format"][1] == 1.0
    assert result.per_reward["strict_format"][1] == 0.0
    assert result.per_reward["arithmetic_consistency"][1] == 0.0
    assert result.total[1] == pytest.approx(0.25 * 1.0 + 0.25 * 1.0)
    assert result.total[2] == 0.0


def test_score_completions_reports_zero_weight_rewards_unweighted():
    weights = {"correctness": 3.0, "strict_format": 0.0}
    result = score_completions([GOOD], ["52"], weights)
    assert result.per_reward == {"correctness": [1.0], "strict_format": [1.0]}
    assert result.total == [3.0]


def test_score_completions_rejects_unknown_reward_name():
    with pytest.raises(ValueError, match="corectness") as error:
        score_completions([GOOD], ["52"], {"corectness": 1.0})
    assert "correctness" in str(error.value).replace("corectness", "")


def test_score_completions_rejects_length_mismatch():
    with pytest.raises(ValueError, match="gold"):
        score_completions([GOOD, GOOD], ["52"], DEFAULT_REWARD_WEIGHTS)


def test_score_completions_empty_batch():
    result = score_completions([], [], DEFAULT_REWARD_WEIGHTS)
    assert result.total == []
    assert all(values == [] for values in result.per_reward.values())
    assert not math.isnan(sum(result.total))


def test_the_registry_holds_the_default_weights_once():
    assert DEFAULT_REWARD_WEIGHTS == {
        "correctness": 2.0,
        "strict_format": 0.5,
        "soft_format": 0.25,
        "xml_count": 0.25,
        "integer_answer": 0.25,
        "arithmetic_consistency": 0.25,
    }
    assert default_reward_weights(numeric_answers=False) == {
        "correctness": 2.0,
        "strict_format": 0.5,
        "soft_format": 0.25,
        "xml_count": 0.25,
    }


def test_every_reward_takes_completions_and_fields_by_keyword():
    fields = {"answers": ["52", "7"], "questions": ["q", "q"], "answer_check": None}
    for name, spec in REWARDS.items():
        scores = spec.function([GOOD, "no tags"], **fields)
        assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores), name
    assert REWARDS["correctness"].function([GOOD], answers=["52"]) == [1.0]


def test_a_task_check_goes_through_the_correctness_reward_with_its_outcomes():
    def check(answer, gold):
        if answer == "boom":
            raise SystemExit(1)
        return 1.0 if answer == gold else 0.0

    completions = [f"<reasoning>r</reasoning><answer>{a}</answer>" for a in ("yes", "no", "boom")]
    result = score_completions(completions, ["yes"] * 3, {"correctness": 1.0}, answer_check=check)
    assert result.per_reward["correctness"] == [1.0, 0.0, 0.0]
    assert (result.timeouts, result.errors) == (0, 1)
