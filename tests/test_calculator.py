"""The calculator switch (calculator.py): results written after "expression =", never sampled,
left out of the loss, off by default."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import build_char_tokenizer, build_tiny_model

from smolgrpo.cli import main as cli
from smolgrpo.evaluation.evaluate import calculator_calls
from smolgrpo.generation import rollout
from smolgrpo.generation.calculator import Calculator, format_result
from smolgrpo.rewards.arithmetic import value_before_trailing_equals
from smolgrpo.training.batching import build_group_batch


@pytest.mark.parametrize(
    "text, value",
    [
        ("so 48 / 2 =", 24.0),
        ("3 + 4 * 2 = ", 11.0),  # precedence, and a space after "="
        ("(3+4)*2=", 14.0),
        ("$12 * 5 =", 60.0),
        ("12 x 3 =", 36.0),
        ("x = 5 =", None),  # a bare number states nothing to compute
        ("12 + 3 = 15 and", None),  # "=" must end the text
        ("1/0 =", None),
        ("no numbers =", None),
    ],
)
def test_value_before_trailing_equals(text, value):
    assert value_before_trailing_equals(text) == value


def test_format_result():
    assert [format_result(v) for v in (24.0, -3.0, 2.5, 1 / 3, 1e6)] == [
        "24",
        "-3",
        "2.5",
        "0.3333",
        "1000000",
    ]


def test_result_tokens_follow_the_text():
    tokenizer = build_char_tokenizer()
    calculator = Calculator(tokenizer)
    assert tokenizer.convert_tokens_to_ids("=") in calculator.trigger_ids
    assert tokenizer.convert_tokens_to_ids("7") not in calculator.trigger_ids

    def result(text):
        ids = calculator.result_tokens(tokenizer.encode(text, add_special_tokens=False))
        return tokenizer.decode(ids)

    assert result("3 + 4 =") == " 7"  # spaced as the equation is
    assert result("3+4=") == "7"
    assert result("3 + 4 = ") == "7"  # the model already wrote the space
    assert result("x 10/4=") == "2.5"
    assert result("she paid $150*24=") == "$3600"  # money stays money
    assert result("she paid $150 * 24 =") == " $3600"
    assert result("she paid $5 and 3+4=") == "7"  # the $ is not in this expression
    assert result("she has 3 =") == ""


REAL_SAMPLER = rollout.sample_next_tokens
SCRIPT = "a 3+4=#, 10 / 4 =####. ok"  # what the "model" writes; "#" is overwritten by results


def scripted_decode(monkeypatch, calculator):
    """Decode 3 rows with a tiny model whose sampler writes SCRIPT (row 2: no equations)."""
    tokenizer = build_char_tokenizer()
    scripts = [SCRIPT, SCRIPT, "plain text, no sums here"]
    state = {"step": 0}

    def sample(logits, temperature, top_p=1.0, top_k=0):
        REAL_SAMPLER(logits, temperature, top_p, top_k)  # the sampler still runs
        step = state["step"]
        state["step"] += 1
        # rows never finish before the last step here, so the active rows are all rows
        return torch.tensor(
            [tokenizer.convert_tokens_to_ids(s[step]) for s in scripts[: logits.shape[0]]]
        )

    monkeypatch.setattr(rollout, "sample_next_tokens", sample)
    model = build_tiny_model(len(tokenizer))
    return rollout.generate(
        model,
        tokenizer,
        ["Q1", "Q2", "Q3"],
        max_new_tokens=len(SCRIPT) - 1,
        prefill="<r>",
        calculator=calculator(tokenizer) if calculator else None,
    ), tokenizer


def test_decode_writes_results_and_marks_them(monkeypatch):
    result, _ = scripted_decode(monkeypatch, Calculator)
    assert result.responses[0] == "<r>a 3+4=7, 10 / 4 = 2.5. o"
    assert result.responses[1] == result.responses[0]
    assert result.responses[2] == "<r>" + "plain text, no sums here"[: len(SCRIPT) - 1]
    forced = result.forced_mask
    assert forced.shape == result.completion_ids.shape and forced.dtype == torch.bool
    expected = [i for i, c in enumerate(SCRIPT[:-1]) if c == "#"]
    assert forced[0].nonzero().flatten().tolist() == expected
    assert not forced[2].any()
    assert calculator_calls(forced[0]) == 2 and calculator_calls(forced[2]) == 0


def test_off_by_default_and_bit_identical_without_equations(monkeypatch):
    plain, _ = scripted_decode(monkeypatch, None)
    assert plain.forced_mask is None
    assert plain.responses[0] == "<r>" + SCRIPT[:-1]  # the model's own tokens
    with_calculator, _ = scripted_decode(monkeypatch, Calculator)
    assert torch.equal(plain.completion_ids[2], with_calculator.completion_ids[2])


def test_calculator_tokens_get_no_loss(monkeypatch):
    result, _ = scripted_decode(monkeypatch, Calculator)
    batch = build_group_batch([result], [torch.ones(3)], pad_token_id=0, mask_truncated=False)
    assert torch.equal(
        batch.completion_mask.bool(), result.completion_mask.bool() & ~result.forced_mask
    )
    assert int(batch.completion_mask[0].sum()) == len(SCRIPT) - 1 - SCRIPT.count("#")


def test_eval_and_train_with_the_calculator(tmp_path, monkeypatch, capsys):
    """Through the real entry points on a tiny model: eval --calculator reports its calls and
    sampling.calculator trains and logs calculator_tokens (the random model rarely writes
    "3+4=", so the numbers here are counts, whatever they are)."""
    from smolgrpo.config.loading import load_config
    from smolgrpo.runs.metrics_log import read_metrics
    from smolgrpo.tasks.data import Problem
    from smolgrpo.training.trainer import Trainer

    tokenizer = build_char_tokenizer()
    model = build_tiny_model(len(tokenizer))
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"question": f"{i}+1", "answer": f"#### {i + 1}"}) + "\n"
                            for i in range(3)))  # fmt: skip
    out = tmp_path / "eval"
    argv = ["eval", "--model", str(tmp_path / "model"), "--data", str(data), "--split", "data"]
    argv += ["--max-new-tokens", "4", "--calculator", "--output-dir", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["calculator"] is True and metrics["mean_calculator_calls"] >= 0
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert all("calculator_calls" in record for record in records)

    config = load_config(None, [f"run.output_dir={tmp_path / 'run'}", "sampling.calculator=true",
                                "sampling.num_generations=2", "sampling.max_completion_length=4",
                                "optim.prompts_per_step=2", "optim.max_steps=1",
                                "optim.warmup_steps=0", "prompt.prefill=''"])  # fmt: skip
    problems = [Problem(f"{i}+1", f"#### {i + 1}", str(i + 1), f"toy:{i}") for i in range(2)]
    trainer = Trainer(config, model=model, tokenizer=tokenizer, train_problems=problems,
                      show_progress=False)  # fmt: skip
    trainer.train()
    (row,) = read_metrics(tmp_path / "run/metrics.jsonl")
    assert row["calculator_tokens"] >= 0
    assert "- Calculator: on" in (tmp_path / "run/final/README.md").read_text()


def test_calculator_tokens_metric_counts_the_forced_tokens(tmp_path, monkeypatch):
    """The step's `calculator_tokens` is the number of forced tokens its rollouts hold."""
    from smolgrpo.config.loading import load_config
    from smolgrpo.generation.rollout import Rollout
    from smolgrpo.runs.metrics_log import read_metrics
    from smolgrpo.tasks.data import Problem
    from smolgrpo.training import group_collection
    from smolgrpo.training.trainer import Trainer

    tokenizer = build_char_tokenizer()

    def scripted(model, tokenizer, prompts, *, num_generations, **kwargs):
        rows = len(prompts) * num_generations
        ids = torch.tensor([tokenizer.convert_tokens_to_ids(list("7=7"))] * rows)  # (rows, 3)
        forced = torch.zeros_like(ids, dtype=torch.bool)
        forced[0, 2] = forced[1, 2] = forced[3, 2] = True  # three rows had "7" written for them
        return Rollout(
            prompt_ids=torch.ones(rows, 2, dtype=torch.long),
            prompt_mask=torch.ones(rows, 2, dtype=torch.long),
            completion_ids=ids,
            completion_mask=torch.ones_like(ids),
            truncated=torch.ones(rows, dtype=torch.bool),
            responses=["7=7"] * rows,
            forced_mask=forced,
        )

    monkeypatch.setattr(group_collection, "generate", scripted)
    config = load_config(None, [f"run.output_dir={tmp_path / 'run'}", "sampling.calculator=true",
                                "sampling.num_generations=2", "optim.prompts_per_step=2",
                                "optim.max_steps=1", "optim.warmup_steps=0"])  # fmt: skip
    problems = [Problem(f"{i}+1", f"#### {i + 1}", str(i + 1), f"toy:{i}") for i in range(2)]
    trainer = Trainer(config, model=build_tiny_model(len(tokenizer)), tokenizer=tokenizer,
                      train_problems=problems, show_progress=False)  # fmt: skip
    trainer.train()
    (row,) = read_metrics(tmp_path / "run/metrics.jsonl")
    assert row["calculator_tokens"] == 3
