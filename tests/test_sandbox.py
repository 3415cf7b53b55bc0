"""Model output never runs in the training or eval process (sandbox.py, tasks/gym_arithmetic.py).

Through the command line: for every reasoning-gym dataset whose `score_answer` source holds
`eval(` or `parse_expr` (found here, so a new reasoning-gym version is covered), five hostile
answers leave no marker file, end in bounded time, exit 0 and score 0; a training run whose
answers time out or exit goes on and counts them in metrics.jsonl. The pool itself: a check that
hangs, exits, crashes or runs out of memory scores 0 and is counted, and the pool goes on; the
workers see no token. Countdown's and 24's in-process checks give reasoning-gym's scores.
"""

from __future__ import annotations

import inspect
import json
import random
import threading
import time
from pathlib import Path

import pytest
from conftest import build_char_tokenizer, build_tiny_model

from smolgrpo.cli import main as cli
from smolgrpo.errors import SmolGRPOError
from smolgrpo.rewards.answers import check_answers
from smolgrpo.rewards.sandbox import CheckPool, SandboxedCheck, clean_environment
from smolgrpo.runs.metrics_log import read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

TESTS = Path(__file__).parent


def hostile_answers(marker: Path) -> list[str]:
    return [
        f"__import__('os').system('touch {marker}')",
        "9**9**9**9",
        "exit()",
        "'a'*10**10",
        "().__class__.__base__.__subclasses__()",
    ]


def evaluating_datasets() -> list[str]:
    """The reasoning-gym datasets whose own answer check evaluates text as Python."""
    pytest.importorskip("reasoning_gym")
    from reasoning_gym.factory import DATASETS

    found = []
    for name, (dataset_class, _) in sorted(DATASETS.items()):
        source = inspect.getsource(dataset_class.score_answer)
        if "eval(" in source or "parse_expr" in source:
            found.append(name)
    return found


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-model")
    tokenizer = build_char_tokenizer()
    build_tiny_model(len(tokenizer)).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def pool(monkeypatch):
    """A pool of its own (the tests' checks live in tests/_sandbox_checks.py)."""
    monkeypatch.syspath_prepend(str(TESTS))
    pool = CheckPool(workers=2)
    yield pool
    pool.close()


def check(pool, name: str, timeout_s: float = 2.0) -> SandboxedCheck:
    return SandboxedCheck(
        {"kind": "function", "target": f"_sandbox_checks:{name}"}, timeout_s, pool
    )


# --------------------------------------------------------------------------- the CLI


def test_hostile_answers_through_eval_score_zero_and_run_nothing(
    tiny_model_dir, tmp_path, monkeypatch, capsys
):
    """The issue's reproduction (`eval --prefill "...<answer>HOSTILE</answer>"`), on a tiny
    model, for each evaluating dataset and each hostile answer."""
    datasets = evaluating_datasets()
    assert {"countdown", "string_insertion", "puzzle24"} <= set(datasets), datasets
    monkeypatch.chdir(tmp_path)  # a relative marker would land here
    marker = tmp_path / "MARKER"
    answers = hostile_answers(marker)
    for name in datasets:
        for answer in answers:
            out = tmp_path / f"{name}-{answers.index(answer)}"
            # the train split: one problem generated, none to leave out of it
            argv = ["eval", "--model", str(tiny_model_dir), "--task", "reasoning_gym",
                    "--gym-dataset", name, "--gym-size", "1", "--split", "train",
                    "--max-new-tokens", "1", "--gym-check-timeout-s", "0.3",
                    "--prefill", f"<reasoning>x</reasoning><answer>{answer}</answer>",
                    "--output-dir", str(out), "--no-progress"]  # fmt: skip
            started = time.monotonic()
            assert cli.main(argv) == 0, (name, answer)
            assert time.monotonic() - started < 30, (name, answer)
            metrics = json.loads((out / "metrics.json").read_text())
            (record,) = [json.loads(line) for line in (out / "samples.jsonl").open()]
            assert record["extracted_answer"] == answer, (name, record["completion"])
            assert record["rewards"]["correctness"] == 0.0, (name, answer)
            assert metrics["accuracy"] == 0.0 and metrics["reward/correctness"] == 0.0
            assert metrics["reward_timeouts"] + metrics["reward_errors"] <= 1
            assert not marker.exists() and not (tmp_path / "MARKER").exists(), (name, answer)
    capsys.readouterr()


def test_a_hanging_check_and_an_exit_are_counted_in_training(tiny_model_dir, tmp_path, capsys):
    """`train` on a sandboxed dataset whose answers hang (`9**9**9**9`) or exit (`exit()`,
    which used to end the process with status 0 and no metrics): the run finishes, and each
    step's row counts them."""
    cases = (("9**9**9**9", "reward_timeouts", 0.3), ("exit()", "reward_errors", 5.0))
    for answer, key, timeout_s in cases:
        run_dir = tmp_path / key
        argv = ["train", "--no-progress", "--output-dir", str(run_dir)]
        for item in (
            f"model.name={tiny_model_dir}",
            "model.device=cpu",
            "data.task=reasoning_gym",
            "data.gym_dataset=string_insertion",
            "data.gym_size=4",
            f"data.gym_check_timeout_s={timeout_s}",
            f"prompt.prefill=<reasoning>x</reasoning><answer>{answer}</answer>",
            "sampling.num_generations=2",
            "sampling.max_completion_length=2",
            "optim.prompts_per_step=1",
            "optim.max_steps=2",
            "optim.warmup_steps=0",
        ):
            argv += ["--set", item]
        assert cli.main(argv) == 0, answer
        rows = read_metrics(run_dir / "metrics.jsonl")
        assert [row["step"] for row in rows] == [1, 2]
        for row in rows:
            assert row[key] == 2 and row["reward/correctness"] == 0.0, row  # both samples
            other = "reward_errors" if key == "reward_timeouts" else "reward_timeouts"
            assert row[other] == 0
        assert (run_dir / "final").is_dir()
    capsys.readouterr()


def test_a_countdown_step_counts_nothing(tiny_model_dir, tmp_path, capsys):
    """Countdown is checked in-process: no sandbox, and an honest answer is correct."""
    pytest.importorskip("reasoning_gym")
    from smolgrpo.config.schema import DataConfig
    from smolgrpo.tasks import build_task

    task = build_task(DataConfig(task="reasoning_gym", gym_dataset="countdown", gym_size=5))
    assert not isinstance(task.answer_check, SandboxedCheck)
    problem = task.load("train")[0]
    entry = json.loads(problem.gold)
    result = task.score([f"<answer>{entry['answer']}</answer>"], [problem.gold], {"correctness": 1})
    assert result.total == [1.0] and (result.timeouts, result.errors) == (0, 0)


# --------------------------------------------------------------------------- the pool


def test_a_check_past_its_time_scores_zero_is_counted_and_the_pool_goes_on(pool):
    started = time.monotonic()
    result = check_answers(check(pool, "spin", timeout_s=0.3), ["1", "2"], ["g", "g"])
    assert result.scores == [0.0, 0.0] and (result.timeouts, result.errors) == (2, 0)
    assert time.monotonic() - started < 20
    sleeping = check_answers(check(pool, "sleep", timeout_s=1.0), ["60", "0"], ["g", "g"])
    assert sleeping.scores == [0.0, 1.0] and sleeping.timeouts == 1
    honest = check_answers(check(pool, "number"), ["0.25", "1", "0.5"], ["g"] * 3)
    assert honest.scores == [0.25, 1.0, 0.5] and (honest.timeouts, honest.errors) == (0, 0)


@pytest.mark.parametrize("name", ["hard_exit", "raise_exit", "segfault", "memory"])
def test_a_check_that_exits_or_crashes_scores_zero_is_counted_and_the_pool_goes_on(pool, name):
    result = check_answers(check(pool, name), ["1"], ["g"])
    assert result.scores == [0.0] and (result.timeouts, result.errors) == (0, 1)
    assert check(pool, "number")("0.75", "g") == 0.75


@pytest.mark.parametrize("name", ["shell", "shell_swallowed", "write_file"])
def test_a_check_cannot_run_a_program_or_write_a_file(pool, tmp_path, name):
    marker = tmp_path / "MARKER"
    answer = str(marker) if name == "write_file" else f"touch {marker}"
    result = check_answers(check(pool, name), [answer], ["g"])
    assert result.scores == [0.0] and result.errors == 1
    assert not marker.exists()


def test_the_workers_see_no_token_and_work_in_a_scratch_folder(pool, monkeypatch):
    for name in ("HF_TOKEN", "WANDB_API_KEY", "MY_SECRET", "GITHUB_TOKEN", "AWS_ACCESS_KEY_ID"):
        monkeypatch.setenv(name, "do-not-read")
    pool.close()  # the next run starts a host with this environment
    assert check(pool, "clean_environment")("1", "g") == 1.0
    # nor through the caller's /proc/<pid>/environ
    result = check_answers(check(pool, "read_parent_environment"), ["1"], ["g"])
    assert result.scores == [0.0] and result.errors == 1
    env = clean_environment("/scratch")
    assert "PATH" in env and not any("TOKEN" in k or "KEY" in k or "SECRET" in k for k in env)


def test_answers_evaluated_as_python_are_stopped(pool, tmp_path):
    marker = tmp_path / "MARKER"
    hostile = hostile_answers(marker)
    result = check_answers(check(pool, "evaluate", timeout_s=1.0), hostile + ["2"], ["2"] * 6)
    assert result.scores == [0.0] * 5 + [1.0]
    assert result.timeouts == 1 and result.errors == 4  # 9**9**9**9 runs until killed
    assert not marker.exists()


def test_a_dead_host_is_replaced(pool):
    assert check(pool, "number")("0.5", "g") == 0.5
    pool.process.kill()
    pool.process.wait()
    assert check(pool, "number")("0.5", "other gold") == 0.5


def test_a_host_that_dies_mid_batch_costs_that_batch_only(pool, capsys):
    """The batch in flight is scored 0 (errors) with one warning; its child, whose host is
    gone, is killed by the kernel; the next batch starts a new host."""
    assert check(pool, "number")("0.5", "g") == 0.5
    killer = threading.Timer(0.5, pool.process.kill)
    killer.start()
    started = time.monotonic()
    result = check_answers(check(pool, "sleep", timeout_s=30), ["20"], ["g"])
    killer.join()
    assert result.scores == [0.0] and (result.timeouts, result.errors) == (0, 1)
    assert time.monotonic() - started < 15
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("warning: the answer-check process")
    assert check(pool, "number")("0.25", "g") == 0.25


def test_a_check_that_cannot_be_built_is_one_line(pool):
    broken = SandboxedCheck({"kind": "gym", "name": "no_such_dataset", "options": {}}, 1.0, pool)
    with pytest.raises(SmolGRPOError, match="cannot build the answer check"):
        broken("1", "{}")


# --------------------------------------------------------------------------- countdown, 24


def _rgym(name: str, size: int = 10, **options):
    reasoning_gym = pytest.importorskip("reasoning_gym")
    return reasoning_gym.create_dataset(name, size=size, seed=3, **options)


def _variants(rng: random.Random, entry: dict) -> list[str]:
    """The reference answer and honest mistakes: other numbers, spacing, decimals, x/0."""
    numbers = [str(n) for n in entry["metadata"]["numbers"]]
    reference = str(entry["answer"])
    shuffled = numbers[:]
    rng.shuffle(shuffled)
    variants = [
        reference,
        reference.replace(" ", ""),
        f"({reference})",
        " + ".join(numbers),
        " * ".join(shuffled),
        f"{reference} + 1",
        f"{reference} - 0",
        f"{reference} / 0",
        f"({numbers[0]} - {numbers[0]}) / 0",
        f"{reference} =",
        f"{reference})",
        f"{numbers[0]}.5 * 2 + {' + '.join(numbers[1:])}",
        f"{numbers[0]}({numbers[1]})",
        f"0{numbers[0]} + 1",
        " - ".join(numbers) + " + 0.0",
        "-(" + " / ".join(shuffled) + ")",
    ]
    for _ in range(6):  # random expressions over the given numbers
        rng.shuffle(shuffled)
        text = shuffled[0]
        for number in shuffled[1:]:
            text = f"({text} {rng.choice('+-*/')} {number})" if rng.random() < 0.5 else (
                f"{text} {rng.choice('+-*/')} {number}")  # fmt: skip
        variants.append(text)
    return variants


@pytest.mark.parametrize(
    "name, options",
    [
        ("countdown", {"min_numbers": 3, "max_numbers": 3, "min_target": 10, "max_target": 100}),
        ("countdown", {}),
        ("puzzle24", {}),
    ],
)
def test_the_arithmetic_games_score_as_reasoning_gym_does(name, options):
    """On honest answers (numbers, + - * /, parentheses) the in-process check gives exactly
    reasoning-gym's score; anything else is not a Countdown answer and scores 0."""
    from smolgrpo.tasks.gym import make_answer_check

    dataset = _rgym(name, size=5 if name == "puzzle24" else 10, **options)
    ours = make_answer_check(name, options)
    rng = random.Random(0)
    compared = 0
    for index in range(len(dataset)):
        entry = dataset[index]
        gold = json.dumps(entry, sort_keys=True, default=str)
        for answer in _variants(rng, entry):
            assert ours(answer, gold) == dataset.score_answer(answer, entry), answer
            compared += 1
        assert ours(str(entry["answer"]), gold) == 1.0
        for hostile in hostile_answers(Path("/nonexistent/MARKER")) + ["2**3", "7 * * 2"]:
            assert ours(hostile, gold) == 0.0, hostile
    assert compared > 100
