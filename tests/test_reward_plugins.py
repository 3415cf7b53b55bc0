"""User reward functions (`file.py:function`, `module:function`) through the real command line.

A good plug-in trains a step on a tiny model and logs its mean and its time; every bad one
(does not import, wrong length, NaN, a string, an exception inside) is one `error:` line, exit
2, and a failure during a step leaves the last checkpoint as it was.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from conftest import build_char_tokenizer, build_tiny_model

from smolgrpo.cli import main as cli
from smolgrpo.errors import SmolGRPOError
from smolgrpo.rewards.plugins import check_scores
from smolgrpo.rewards.scoring import score_completions
from smolgrpo.runs.checkpoint import list_checkpoints
from smolgrpo.runs.metrics_log import read_metrics

REWARDS_PY = textwrap.dedent(
    """
    import math

    def brevity(completions, answers, **fields):
        assert len(fields["questions"]) == len(completions)
        return [1.0 / (1 + len(text)) for text in completions]

    def too_short(completions, answers, **fields):
        return [0.0] * (len(completions) - 1)

    def not_a_number(completions, answers, **fields):
        return [math.nan] * len(completions)

    def a_string(completions, answers, **fields):
        return ["0.5"] * len(completions)

    def a_bool(completions, answers, **fields):
        return [True] * len(completions)

    def crashes(completions, answers, **fields):
        return {}["no such key"]

    def crashes_at_step_2(completions, answers, **fields):
        global CALLS
        CALLS = globals().get("CALLS", 0) + 1
        if CALLS == 2:
            raise ValueError("bad\\nthing")
        return [0.0] * len(completions)

    def exits(completions, answers, **fields):
        exit(3)

    class Bail(BaseException):
        pass

    def bails(completions, answers, **fields):
        raise Bail("out of here")

    NOT_CALLABLE = 3
    """
)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("plugins")
    (root / "my_rewards.py").write_text(REWARDS_PY)
    (root / "broken.py").write_text("import no_such_package_here\n")
    (root / "exits_on_import.py").write_text("import sys\nsys.exit(0)\n")
    (root / "data.jsonl").write_text(
        '{"question": "What is 1+1?", "answer": "1+1=2\\n#### 2"}\n'
        '{"question": "What is 2+2?", "answer": "2+2=4\\n#### 4"}\n'
    )
    tokenizer = build_char_tokenizer()
    build_tiny_model(len(tokenizer)).save_pretrained(root / "model", safe_serialization=True)
    tokenizer.save_pretrained(root / "model")
    return {"root": root}


def train_argv(setup, reward: str, run: str, *extra: str) -> list[str]:
    root = setup["root"]
    sets = [
        f"model.name={root / 'model'}",
        "model.device=cpu",
        f"data.source={root / 'data.jsonl'}",
        "sampling.num_generations=2",
        "sampling.max_completion_length=4",
        "optim.prompts_per_step=1",
        "optim.max_steps=1",
        "optim.warmup_steps=0",
        "prompt.prefill=''",
        f"rewards.weights={{correctness: 1.0, '{reward}': 0.5}}",
        *extra,
    ]
    argv = ["train", "--no-progress", "--output-dir", str(root / run)]
    for item in sets:
        argv += ["--set", item]
    return argv


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_a_good_reward_file_trains_a_step_and_is_logged(setup, capsys):
    reward = f"{setup['root'] / 'my_rewards.py'}:brevity"
    assert cli.main(train_argv(setup, reward, "good")) == 0
    row = read_metrics(setup["root"] / "good/metrics.jsonl")[0]
    assert 0 < row[f"reward/{reward}"] <= 1
    assert row[f"reward_time_s/{reward}"] >= 0 and "reward_time_s/correctness" in row
    samples = (setup["root"] / "good/samples/step_1.jsonl").read_text().splitlines()
    assert reward in json.loads(samples[0])["completions"][0]["rewards"]


def test_a_module_path_reward_loads(setup, monkeypatch):
    monkeypatch.syspath_prepend(str(setup["root"]))
    result = score_completions(["ab", "abcd"], ["1", "2"], {"my_rewards:brevity": 1.0}, ["q", "q"])
    assert result.total == [1 / 3, 1 / 5] and "my_rewards:brevity" in result.seconds


BAD = [
    ("does not import", "broken.py:fn", ["does not import", "ModuleNotFoundError"]),
    ("missing file", "nowhere.py:fn", ["no such file"]),
    ("missing function", "my_rewards.py:nope", ["has no 'nope'"]),
    ("not callable", "my_rewards.py:NOT_CALLABLE", ["is not callable"]),
    ("wrong length", "my_rewards.py:too_short", ["step 1:", "returned 1 values for 2"]),
    ("NaN", "my_rewards.py:not_a_number", ["step 1:", "returned nan", "must be finite"]),
    ("a string", "my_rewards.py:a_string", ["step 1:", "'0.5' (str)", "must be a float"]),
    ("a bool", "my_rewards.py:a_bool", ["step 1:", "True (bool)"]),
    ("exception inside", "my_rewards.py:crashes", ["step 1:", "raised KeyError"]),
    # exit() used to end the run with status 0 and nothing saved; now one line, exit 2
    ("exits", "my_rewards.py:exits", ["step 1:", "raised SystemExit: 3"]),
    ("a BaseException", "my_rewards.py:bails", ["step 1:", "raised Bail: out of here"]),
    ("exits on import", "exits_on_import.py:fn", ["does not import", "SystemExit: 0"]),
]  # fmt: skip


@pytest.mark.parametrize("case, name, parts", BAD, ids=[case[0] for case in BAD])
def test_a_bad_reward_is_one_line_naming_it(setup, case, name, parts, capsys):
    reward = str(setup["root"] / name.split(":")[0]) + ":" + name.split(":")[1]
    assert cli.main(train_argv(setup, reward, f"bad-{case.replace(' ', '-')}")) == 2
    line = one_error_line(capsys)
    assert f"reward '{reward}'" in line
    for part in parts:
        assert part in line, (case, part, line)


def test_a_failure_mid_run_keeps_the_last_checkpoint(setup, capsys):
    reward = f"{setup['root'] / 'my_rewards.py'}:crashes_at_step_2"
    argv = train_argv(setup, reward, "mid-run", "optim.max_steps=3", "run.save_every=1")
    assert cli.main(argv) == 2
    line = one_error_line(capsys)
    assert line.startswith("error: step 2: reward") and "raised ValueError: bad thing" in line
    run_dir = setup["root"] / "mid-run"
    assert [p.name for p in list_checkpoints(run_dir)] == ["step_1"]
    assert [row["step"] for row in read_metrics(run_dir / "metrics.jsonl")] == [1]


def test_check_scores_accepts_ints_and_numpy_floats():
    numpy = pytest.importorskip("numpy")
    assert check_scores("r", [1, numpy.float32(0.5)], 2) == [1.0, 0.5]
    with pytest.raises(SmolGRPOError, match="returned NoneType"):
        check_scores("r", None, 2)
    with pytest.raises(SmolGRPOError, match=r"None \(NoneType\)"):
        check_scores("r", [None, 1.0], 2)
