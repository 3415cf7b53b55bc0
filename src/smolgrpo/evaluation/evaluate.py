"""Evaluation: accuracy, format compliance and pass@k of a model on a task's split (GSM8K).

Correctness is the training reward's own decision, `extract_answer` + `is_correct` (answers.py,
with the task's check, see tasks/), so a number reported here means what the reward optimised.
A second extractor, the last number in the text, measures a model that ignores the tag format
(the untrained base model) fairly.

pass@k uses the unbiased estimator of Chen et al. (2021), "Evaluating Large Language Models
Trained on Code": with n samples of which c are correct, pass@k = 1 - C(n-c, k) / C(n, k).

Every rate comes with its 95% Wilson score interval (`<rate>_ci95`), which stays inside [0, 1]
and is honest at the small counts a 135M model scores: 6/200 is 3.0% [1.4%, 6.4%], so it is not
told apart from 1/200 = 0.5% [0.1%, 2.8%].
"""

from __future__ import annotations

import math
import time

import torch

from smolgrpo.evaluation.majority import majority_correct
from smolgrpo.evaluation.settings import EvalSettings
from smolgrpo.generation.rollout import generate
from smolgrpo.rewards.answers import (
    counts_as_correct,
    extract_answer,
    extract_last_number,
    score_answers,
)
from smolgrpo.rewards.scoring import score_completions
from smolgrpo.runs.interrupts import StopRequested
from smolgrpo.runs.progress import EVAL_PROGRESS_FIELDS, TrainProgress
from smolgrpo.tasks.data import Problem
from smolgrpo.tasks.prompts import render_prompt


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Unbiased pass@k for one problem, computed as a stable product instead of binomials."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if k > num_samples:
        raise ValueError(f"k={k} is larger than the number of samples n={num_samples}")
    if not 0 <= num_correct <= num_samples:
        raise ValueError(f"num_correct={num_correct} is outside [0, n={num_samples}]")
    if num_samples - num_correct < k:
        return 1.0
    failure = 1.0
    for i in range(num_samples - num_correct + 1, num_samples + 1):
        failure *= 1.0 - k / i
    return 1.0 - failure


# The rates that get a confidence interval in metrics.json, eval tables and compare.
INTERVAL_KEYS = (
    "accuracy",
    "accuracy_last_number",
    "strict_format_rate",
    "soft_format_rate",
    "truncation_rate",
)


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial rate (95% for z = 1.96)."""
    if trials <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= trials:
        raise ValueError(f"successes={successes} is outside [0, trials={trials}]")
    p = successes / trials
    z2 = z * z
    denominator = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def format_rate_with_interval(rate: float, interval) -> str:
    """`3.0% [1.4, 6.4]`: a rate and its 95% interval, both in percent."""
    if not interval:
        return f"{rate:.1%}"
    low, high = interval
    return f"{rate:.1%} [{low * 100:.1f}, {high * 100:.1f}]"


def _pass_k_values(num_samples: int) -> list[int]:
    values = [k for k in (1, 2, 4, 8, 16, 32, 64) if k <= num_samples]
    return values if num_samples in values else values + [num_samples]


def evaluate(
    model,
    tokenizer,
    problems: list[Problem],
    settings: EvalSettings | None = None,
    *,
    show_progress: bool = True,
    should_stop=None,
    done: list[dict] | None = None,
    on_batch=None,
    keep_partial: bool = False,
) -> tuple[dict, list[dict]]:
    """(metrics, one sample record per completion) for `settings.num_samples` completions per
    problem (EvalSettings, settings.py; None: the defaults).

    `should_stop()`, checked before each decode step of every batch: True raises
    `interrupts.StopRequested` (the periodic eval of a stopping run is dropped).
    `done`: the records of an interrupted eval (`eval --resume`), which covered the first
    `len(done) // num_samples` problems; evaluation goes on from the next one.
    `on_batch(records)`: called with each finished batch's records (eval appends them to disk).
    `keep_partial`: a stop ends the loop instead of raising; the metrics of the problems done
    then carry `partial: True` and `num_problems_planned`."""
    settings = settings or EvalSettings()
    records: list[dict] = list(done or [])
    first = len(records) // settings.num_samples
    start = time.perf_counter()
    progress = TrainProgress(
        len(problems),
        first,
        show_progress,
        label="eval",
        unit="problem",
        fields=EVAL_PROGRESS_FIELDS,
    )
    with progress, _StopGuard(keep_partial) as stop_guard:
        for offset in range(first, len(problems), settings.batch_size):
            batch = problems[offset : offset + settings.batch_size]
            finished = evaluate_batch(model, tokenizer, batch, offset, settings, should_stop)
            records += finished
            if on_batch is not None:
                on_batch(finished)
            accuracy = sum(r["correct"] for r in records) / len(records)
            progress.update({"step": offset + len(batch), "accuracy": accuracy})
    metrics = summarize(records, settings.num_samples)
    metrics["time_s"] = round(time.perf_counter() - start, 2)
    metrics.update(
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
    )
    if settings.calculator is not None:
        metrics.update(tool_summary(settings.calculator, records))
    if stop_guard.stopped:
        metrics.update(partial=True, num_problems_planned=len(problems))
    return metrics, records


def evaluate_batch(
    model, tokenizer, batch: list[Problem], offset: int, settings: EvalSettings, should_stop=None
) -> list[dict]:
    """The records of one batch of problems, the first of which is problem number `offset`."""
    template = settings.template
    prompts = [render_prompt(tokenizer, p.question, template, settings.few_shot) for p in batch]
    rollout = generate(
        model,
        tokenizer,
        prompts,
        num_generations=settings.num_samples,
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        prefill=template.prefill,
        synced=settings.synced,
        should_stop=should_stop,
        calculator=settings.calculator,
    )
    return score_batch(batch, offset, prompts, rollout, settings)


def score_batch(
    batch: list[Problem], offset: int, prompts: list[str], rollout, settings: EvalSettings
) -> list[dict]:
    """One record per completion of `rollout` (prompts in order, `num_samples` each): its
    answers, whether they are right, and every reward of `settings.reward_weights`."""
    num_samples, answer_check = settings.num_samples, settings.answer_check
    responses = rollout.responses
    golds = [p.gold for p in batch for _ in range(num_samples)]
    questions = [p.question for p in batch for _ in range(num_samples)]
    extra = {
        "completion_tokens": rollout.completion_lengths.tolist(),
        "max_completion_length": settings.max_new_tokens,
        "overlong_buffer": settings.overlong_buffer,
    }
    scored = score_completions(
        responses, golds, settings.reward_weights, questions, None, answer_check, extra
    )
    answers = [extract_answer(response) for response in responses]
    last_numbers = [extract_last_number(response) for response in responses]
    answer_checks = score_answers(answers, golds, answer_check)  # the reward's, remembered
    last_checks = score_answers(last_numbers, golds, answer_check)
    records = []
    for index, response in enumerate(responses):
        problem = batch[index // num_samples]
        record = {
            "problem_index": offset + index // num_samples,
            "origin": problem.origin,
            "sample_index": index % num_samples,
            "prompt": prompts[index // num_samples],
            "completion": response,
            "gold": problem.gold,
            "extracted_answer": answers[index],
            "extracted_last_number": last_numbers[index],
            "correct": counts_as_correct(answer_checks.scores[index]),
            "correct_last_number": counts_as_correct(last_checks.scores[index]),
            # how the answer's check ended: ok, timeout or error (sandbox.py)
            "answer_check": answer_checks.statuses[index],
            "completion_tokens": int(rollout.completion_lengths[index]),
            "truncated": bool(rollout.truncated[index]),
            "rewards": {name: values[index] for name, values in scored.per_reward.items()},
            "total_reward": scored.total[index],
        }
        if rollout.forced_mask is not None:
            record[calls_key(settings.calculator)] = calculator_calls(rollout.forced_mask[index])
        records.append(record)
    return records


class _StopGuard:
    """Ends the batch loop quietly on `StopRequested` when `keep` (eval keeps what it did)."""

    def __init__(self, keep: bool):
        self.keep, self.stopped = keep, False

    def __enter__(self) -> _StopGuard:
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        self.stopped = self.keep and kind is not None and issubclass(kind, StopRequested)
        return self.stopped


def calculator_calls(forced_row) -> int:
    """How many results the calculator wrote into one completion: runs of forced tokens."""
    values = forced_row.tolist()
    return sum(1 for i, forced in enumerate(values) if forced and (i == 0 or not values[i - 1]))


def tool_names(tools) -> list[str]:
    """The names of a tools.ToolBox's tools; a bare calculator.Calculator is the calculator."""
    return list(getattr(tools, "names", ["calculator"]))


def calls_key(tools) -> str:
    """A record's count of tool results: `calculator_calls` when the calculator is the only
    tool (its name from before there were others), else `tool_calls`."""
    return "calculator_calls" if tool_names(tools) == ["calculator"] else "tool_calls"


def tool_summary(tools, records: list[dict]) -> dict:
    """The eval's tools and its mean results written per completion."""
    key = calls_key(tools)
    mean = sum(r.get(key, 0) for r in records) / max(len(records), 1)
    if key == "calculator_calls":
        return {"calculator": True, "mean_calculator_calls": mean, "tools": ["calculator"]}
    return {"tools": list(getattr(tools, "specs", tool_names(tools))), "mean_tool_calls": mean}


def summarize(records: list[dict], num_samples: int) -> dict:
    """Aggregate sample records into the metrics reported by `smolgrpo eval` (and training)."""
    count = max(len(records), 1)

    def rate(key) -> float:
        return sum(bool(key(r)) for r in records) / count

    metrics = {
        "num_problems": len(records) // max(num_samples, 1),
        "num_samples": num_samples,
        "accuracy": rate(lambda r: r["correct"]),
        "accuracy_last_number": rate(lambda r: r["correct_last_number"]),
        "strict_format_rate": rate(lambda r: r["rewards"].get("strict_format", 0) == 1.0),
        "soft_format_rate": rate(lambda r: r["rewards"].get("soft_format", 0) == 1.0),
        "mean_completion_tokens": sum(r["completion_tokens"] for r in records) / count,
        "truncation_rate": rate(lambda r: r["truncated"]),
        "mean_total_reward": sum(r["total_reward"] for r in records) / count,
        # answer checks stopped at their time limit, or that failed (sandbox.py): scored 0
        "reward_timeouts": sum(r.get("answer_check") == "timeout" for r in records),
        "reward_errors": sum(r.get("answer_check") == "error" for r in records),
    }
    for key in INTERVAL_KEYS:  # successes are whole counts of the records behind each rate
        successes = round(metrics[key] * len(records))
        metrics[f"{key}_ci95"] = list(wilson_interval(successes, len(records)))
    for name in records[0]["rewards"] if records else []:
        metrics[f"reward/{name}"] = sum(r["rewards"][name] for r in records) / count
    if num_samples > 1:
        # Group by problem index: two problems may share an origin (e.g. duplicated rows).
        by_problem: dict[object, list[bool]] = {}
        for record in records:
            key = record.get("problem_index", record["origin"])
            by_problem.setdefault(key, []).append(record["correct"])
        for k in _pass_k_values(num_samples):
            values = [pass_at_k(len(c), sum(c), k) for c in by_problem.values() if len(c) >= k]
            metrics[f"pass@{k}"] = sum(values) / len(values) if values else 0.0
            # a count of problems for k = num_samples; for smaller k an average of unbiased
            # estimates, whose interval is read on its rounded count (an approximation)
            passed = round(metrics[f"pass@{k}"] * len(values))
            metrics[f"pass@{k}_ci95"] = list(wilson_interval(passed, len(values)))
        metrics.update(majority_metrics(records, num_samples))
    return metrics


def majority_metrics(records: list[dict], num_samples: int) -> dict:
    """maj@k over the k samples of each problem (majority.py), with its 95% Wilson interval."""
    votes = majority_correct(records)  # (problems,) is the majority answer right
    return {
        f"maj@{num_samples}": sum(votes) / len(votes) if votes else 0.0,
        f"maj@{num_samples}_ci95": list(wilson_interval(sum(votes), len(votes))),
    }


def describe_device(model) -> str:
    device = next(model.parameters()).device
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"
