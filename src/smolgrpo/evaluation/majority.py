"""Self-consistency: maj@k, the majority vote over a problem's k sampled answers.

`smolgrpo eval --num-samples k` samples k completions per problem. pass@k asks whether any of
them is right (an oracle picks); maj@k (Wang et al., 2023, "Self-Consistency Improves Chain of
Thought Reasoning") asks whether the most frequent extracted answer is right, which needs no
oracle. Answers vote by value (`72`, `72.0` and `$72` are one vote), a completion without an
answer does not vote, and a tie goes to the answer that came first. The vote is right when the
first record holding the winning answer is right, so the task's own answer check decides.
"""

from __future__ import annotations

from smolgrpo.rewards.answers import parse_number


def vote_key(answer: str | None):
    """What an answer votes for: its number when it has one, else its stripped text."""
    if answer is None or not answer.strip():
        return None
    number = parse_number(answer)
    return ("number", number) if number is not None else ("text", answer.strip())


def majority_record(records: list[dict]) -> dict | None:
    """The first record holding the most frequent answer of one problem's samples (ties: the
    answer seen first), or None when no sample has an answer."""
    counts: dict = {}
    first: dict = {}
    for record in records:
        key = vote_key(record.get("extracted_answer"))
        if key is None:
            continue
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, record)
    if not counts:
        return None
    best = max(counts.values())
    # dicts keep insertion order, so the first key at the top count is the first seen
    winner = next(key for key, count in counts.items() if count == best)
    return first[winner]


def majority_correct(records: list[dict]) -> list[bool]:
    """Per problem (grouped by `problem_index`, else `origin`; samples in record order): is
    the majority answer right."""
    by_problem: dict[object, list[dict]] = {}
    for record in records:
        by_problem.setdefault(record.get("problem_index", record["origin"]), []).append(record)
    outcomes = []
    for samples in by_problem.values():
        samples = sorted(samples, key=lambda r: r.get("sample_index", 0))
        winner = majority_record(samples)
        outcomes.append(bool(winner is not None and winner["correct"]))
    return outcomes
