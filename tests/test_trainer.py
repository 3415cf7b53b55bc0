"""The training loop on a tiny random Llama: steps, logging, checkpoints, resume, learning."""

from __future__ import annotations

import json
import math
import os
import signal
import statistics

import pytest
import torch
from conftest import build_char_tokenizer, build_tiny_model
from safetensors.torch import load_file

from smolgrpo import rewards
from smolgrpo.checkpoint import (
    MANIFEST,
    latest_good_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from smolgrpo.config import load_config
from smolgrpo.data import Problem
from smolgrpo.errors import SmolGRPOError
from smolgrpo.metrics import read_metrics, truncate_metrics
from smolgrpo.rollout import Rollout
from smolgrpo.run_setup import prepare_run_dir
from smolgrpo.trainer import PromptStream, Trainer, build_group_batch

METRIC_KEYS = (
    "step",
    "loss",
    "kl",
    "reward_mean",
    "reward_std",
    "frac_zero_std_groups",
    "learning_rate",
    "grad_norm",
    "tokens_per_s",
    "clip_fraction",
    "entropy",
    "completion_length_mean",
    "truncation_rate",
    "groups_generated",
    "groups_trained",
)


# ----------------------------------------------------------------------------- toy rewards
def digits_reward(completions, golds):
    """Fraction of the characters that are digits: varied from the first step, easy to raise."""
    return [sum(c.isdigit() for c in text) / len(text) if text else 0.0 for text in completions]


def gated_reward(completions, golds):
    """Constant for problems whose gold is 'c' (zero-std groups), digit fraction otherwise."""
    varied = digits_reward(completions, golds)
    return [0.5 if gold == "c" else value for gold, value in zip(golds, varied)]


def constant_reward(completions, golds):
    return [1.0] * len(completions)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(autouse=True)
def toy_rewards(monkeypatch):
    monkeypatch.setitem(rewards.REWARD_FUNCTIONS, "digits", digits_reward)
    monkeypatch.setitem(rewards.REWARD_FUNCTIONS, "gated", gated_reward)
    monkeypatch.setitem(rewards.REWARD_FUNCTIONS, "constant", constant_reward)


def problems(count: int = 8, gold=None) -> list[Problem]:
    return [
        Problem(f"Q{i}", f"#### {i}", gold(i) if gold else str(i), f"toy:{i}") for i in range(count)
    ]


def make_config(tmp_path, *overrides, name: str = "run"):
    base = [
        f"run.output_dir={tmp_path / name}",
        "run.log_samples_every=1",
        "run.save_every=2",
        "sampling.num_generations=4",
        "sampling.max_completion_length=6",
        "optim.prompts_per_step=2",
        "optim.micro_batch_size=8",
        "optim.learning_rate=1e-2",
        "optim.warmup_steps=0",
        "optim.max_steps=3",
        "prompt.system_prompt=S",
        "prompt.prefill=''",
        "rewards.weights={digits: 1.0}",
    ]
    return load_config(None, base + list(overrides))


def make_trainer(config, resume=False, train_problems=None, seed=0):
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(len(tokenizer), seed)
    return Trainer(
        config,
        resume=resume,
        overwrite=not resume,
        show_progress=False,
        model=model,
        tokenizer=tokenizer,
        train_problems=train_problems if train_problems is not None else problems(),
    )


def snapshot(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def changed(before: dict, model) -> list[str]:
    return [n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())]


# ----------------------------------------------------------------------------- PromptStream
def test_prompt_stream_order_is_seeded_and_covers_each_epoch():
    items = problems(10)
    first = PromptStream(items, seed=3).take(30)
    assert [p.origin for p in PromptStream(items, seed=3).take(30)] == [p.origin for p in first]
    other = PromptStream(items, seed=4).take(10)
    assert [p.origin for p in other] != [p.origin for p in first[:10]]
    for epoch in range(3):
        chunk = first[epoch * 10 : (epoch + 1) * 10]
        assert sorted(p.origin for p in chunk) == sorted(p.origin for p in items)
    # reshuffled each epoch, not the same order again
    assert [p.origin for p in first[:10]] != [p.origin for p in first[10:20]]


def test_prompt_stream_state_restores_identically():
    items = problems(7)
    stream = PromptStream(items, seed=1)
    stream.take(5)
    stream.take(4)  # crosses into epoch 1
    state = stream.state()
    assert state == {"epoch": 1, "index": 2}
    expected = stream.take(12)
    restored = PromptStream(items, seed=1, **json.loads(json.dumps(state)))
    assert [p.origin for p in restored.take(12)] == [p.origin for p in expected]


# ----------------------------------------------------------------------------- GroupBatch
def _rollout(prompt: list[list[int]], completion: list[list[int]], truncated: list[bool]):
    prompt_ids = torch.tensor(prompt)
    completion_ids = torch.tensor(completion)
    return Rollout(
        prompt_ids=prompt_ids,
        prompt_mask=(prompt_ids != 0).long(),
        completion_ids=completion_ids,
        completion_mask=(completion_ids != 0).long(),
        truncated=torch.tensor(truncated),
        responses=["x"] * len(prompt),
    )


def test_build_group_batch_pads_prompts_left_and_completions_right():
    first = _rollout([[5, 6], [5, 6]], [[7, 2], [8, 9]], [False, True])
    second = _rollout([[0, 3, 4, 5], [3, 3, 4, 5]], [[9, 9, 9, 2], [7, 2, 0, 0]], [False, False])
    advantages = [torch.tensor([1.0, -1.0]), torch.tensor([0.5, -0.5])]
    batch = build_group_batch([first, second], advantages, pad_token_id=0, mask_truncated=False)
    assert batch.prompt_ids.tolist() == [[0, 0, 5, 6], [0, 0, 5, 6], [0, 3, 4, 5], [3, 3, 4, 5]]
    assert batch.prompt_mask.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1]]
    assert batch.completion_ids.tolist() == [
        [7, 2, 0, 0],
        [8, 9, 0, 0],
        [9, 9, 9, 2],
        [7, 2, 0, 0],
    ]
    assert batch.completion_mask.dtype == torch.float32
    assert batch.completion_mask.tolist() == [
        [1, 1, 0, 0],
        [1, 1, 0, 0],
        [1, 1, 1, 1],
        [1, 1, 0, 0],
    ]
    assert batch.advantages.tolist() == [1.0, -1.0, 0.5, -0.5]


def test_build_group_batch_mask_truncated_zeroes_truncated_rows():
    first = _rollout([[5, 6], [5, 6]], [[7, 2], [8, 9]], [False, True])
    second = _rollout([[3, 4], [3, 4]], [[9, 9, 9], [7, 2, 0]], [True, False])
    advantages = [torch.tensor([1.0, -1.0]), torch.tensor([0.5, -0.5])]
    batch = build_group_batch([first, second], advantages, pad_token_id=0, mask_truncated=True)
    assert batch.completion_mask.tolist() == [[1, 1, 0], [0, 0, 0], [0, 0, 0], [1, 1, 0]]
    assert batch.prompt_mask.tolist() == [[1, 1]] * 4  # prompts stay visible


# ----------------------------------------------------------------------------- training
def test_training_steps_update_log_checkpoint_and_save_final(tmp_path):
    config = make_config(tmp_path, "run.keep_checkpoints=2", "optim.max_steps=3")
    trainer = make_trainer(config)
    before = snapshot(trainer.model)
    final = trainer.train()
    run_dir = tmp_path / "run"
    assert final == run_dir / "final"
    assert changed(before, trainer.model), "no parameter changed"

    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [row["step"] for row in rows] == [1, 2, 3]
    for row in rows:
        assert set(METRIC_KEYS) <= set(row), set(METRIC_KEYS) - set(row)
        assert math.isfinite(row["loss"])
        assert math.isfinite(row["grad_norm"]) and row["grad_norm"] >= 0
        assert 0 <= row["reward_mean"] <= 1 and row["reward_std"] >= 0
        assert 0 <= row["frac_zero_std_groups"] <= 1
        assert 0 <= row["truncation_rate"] <= 1
        assert 0 <= row["clip_fraction"] <= 1
        assert 0 < row["entropy"] <= math.log(len(trainer.tokenizer)) + 1e-4
        assert 0 < row["completion_length_mean"] <= 6
        assert row["tokens_per_s"] > 0
        assert row["learning_rate"] == pytest.approx(
            1e-2 * 0.5 * (1 + math.cos(math.pi * row["step"] / 3))
        )
        assert row["groups_generated"] == 2 and row["groups_trained"] == 2
        assert row["kl"] == 0.0
    assert any(row["grad_norm"] > 0 for row in rows)
    assert len({row["reward_mean"] for row in rows}) > 1

    samples = [
        json.loads(line) for line in (run_dir / "samples/step_1.jsonl").read_text().splitlines()
    ]
    assert len(samples) == 2
    for record in samples:
        assert record["step"] == 1 and record["origin"].startswith("toy:")
        assert len(record["completions"]) == 4
        for completion in record["completions"]:
            assert completion["total_reward"] == pytest.approx(
                digits_reward([completion["text"]], [""])[0]
            )
            assert set(completion["rewards"]) == {"digits"}

    assert [p.name for p in list_checkpoints(run_dir)] == ["step_2", "step_3"]
    for checkpoint in list_checkpoints(run_dir):
        manifest = json.loads((checkpoint / MANIFEST).read_text())
        assert manifest["step"] == int(checkpoint.name.split("_")[1])
        assert {
            "model.safetensors",
            "optimizer.safetensors",
            "rng.safetensors",
            "state.json",
        } <= set(manifest["files"])
        assert verify_checkpoint(checkpoint) is None
    saved = load_file(run_dir / "checkpoints/step_3/model.safetensors")
    for name, parameter in trainer.model.named_parameters():
        assert torch.equal(saved[name], parameter.detach())

    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(final)
    for name, parameter in trainer.model.named_parameters():
        assert torch.equal(dict(loaded.named_parameters())[name], parameter.detach()), name
    template = json.loads((final / "prompt_template.json").read_text())
    assert template == {"system_prompt": "S", "prefill": "", "num_few_shot": 0}
    assert (final / "tokenizer.json").is_file() or (final / "tokenizer_config.json").is_file()
    assert (run_dir / "config.yaml").is_file()
    assert load_config(run_dir / "config.yaml").to_dict() == config.to_dict()


def _stop_after(trainer, step: int) -> None:
    """Deliver SIGINT to ourselves once `step` has been trained (as Ctrl-C would)."""
    original = trainer.train_step

    def train_step():
        result = original()
        if trainer.step == step:
            signal.raise_signal(signal.SIGINT)
        return result

    trainer.train_step = train_step


def test_resume_is_bit_identical(tmp_path, capsys):
    overrides = ["optim.max_steps=4", "run.save_every=2", "optim.warmup_steps=1"]
    uninterrupted = make_trainer(make_config(tmp_path, *overrides, name="a"))
    uninterrupted.train()

    interrupted = make_trainer(make_config(tmp_path, *overrides, name="b"))
    _stop_after(interrupted, 3)  # stops after step 3; the checkpoint is written at step 3
    handler = signal.getsignal(signal.SIGINT)
    assert interrupted.train() is None
    assert interrupted.step == 3
    assert "resume with --resume" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGINT) is handler  # the trainer put the handler back
    run_b = tmp_path / "b"
    assert [p.name for p in list_checkpoints(run_b)] == ["step_2", "step_3"]
    assert not (run_b / "final").exists()
    # a crash during step 4 may have logged it and left half a line behind
    with open(run_b / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps({"step": 4, "loss": 0.0}) + "\n" + '{"step": 5, "lo')

    resumed = make_trainer(make_config(tmp_path, *overrides, name="b"), resume=True)
    assert resumed.step == 3
    resumed.train()
    assert resumed.step == 4
    for name, parameter in uninterrupted.model.named_parameters():
        assert torch.equal(parameter, dict(resumed.model.named_parameters())[name]), name
    rows_a = read_metrics(tmp_path / "a/metrics.jsonl")
    rows_b = read_metrics(run_b / "metrics.jsonl")
    assert [row["step"] for row in rows_b] == [1, 2, 3, 4]
    for row_a, row_b in zip(rows_a, rows_b):
        for key in ("reward_mean", "loss", "grad_norm", "learning_rate"):
            assert row_a[key] == row_b[key], (row_a["step"], key)


class _FakeClock:
    """time.monotonic for the trainer: advanced by hand, one step = `step_s` seconds."""

    def __init__(self):
        self.now = 1000.0
        self.perf_counter = __import__("time").perf_counter

    def monotonic(self):
        return self.now


def test_time_limit_ends_the_run_like_max_steps(tmp_path, monkeypatch, capsys):
    clock = _FakeClock()
    monkeypatch.setattr("smolgrpo.trainer.time", clock)
    config = make_config(tmp_path, "optim.max_steps=5", "run.save_every=10", "run.time_limit_s=25")
    trainer = make_trainer(config)
    original = trainer.train_step

    def ten_second_step():
        clock.now += 10.0
        return original()

    trainer.train_step = ten_second_step
    final = trainer.train()
    # After step 1 (10 s used) another 10 s step fits in 25 s; after step 2 (20 s) it does not.
    assert trainer.step == 2 and trainer.stopped_by_time_limit
    assert final == tmp_path / "run/final" and (final / "model.safetensors").is_file()
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step_2"]
    assert [row["step"] for row in read_metrics(tmp_path / "run/metrics.jsonl")] == [1, 2]
    assert "stopping after step 2 of 5" in capsys.readouterr().out
    assert (
        "- Steps: 2 (of 5 planned; run.time_limit_s or a stop ended the run) × 2"
        in (final / "README.md").read_text()
    )


def test_time_limit_zero_or_ample_changes_nothing(tmp_path, monkeypatch):
    clock = _FakeClock()
    monkeypatch.setattr("smolgrpo.trainer.time", clock)
    trainer = make_trainer(make_config(tmp_path, "run.time_limit_s=1000"))
    trainer.train()
    assert trainer.step == 3 and not trainer.stopped_by_time_limit
    assert "- Steps: 3 × 2 prompts" in (tmp_path / "run/final/README.md").read_text()
    with pytest.raises(SmolGRPOError, match="run.time_limit_s.*-1"):
        make_config(tmp_path, "run.time_limit_s=-1")


def test_resume_without_checkpoint_starts_at_zero(tmp_path, capsys):
    config = make_config(tmp_path, "optim.max_steps=1")
    prepare_run_dir(tmp_path / "run", config, resume=False, overwrite=False)
    trainer = make_trainer(config, resume=True)
    assert trainer.step == 0
    assert "no checkpoint to resume from" in capsys.readouterr().err


def test_grpo_learns_to_write_digits(tmp_path):
    """The reward (fraction of digits among ~4 sampled characters) must clearly rise."""
    config = make_config(
        tmp_path,
        "sampling.num_generations=8",
        "sampling.max_completion_length=4",
        "optim.prompts_per_step=4",
        "optim.micro_batch_size=32",
        "optim.learning_rate=3e-3",
        "optim.lr_schedule=constant",
        "optim.max_steps=30",
        "run.save_every=30",
        "run.log_samples_every=1000",
    )
    make_trainer(config, train_problems=problems(16)).train()
    rewards_by_step = [row["reward_mean"] for row in read_metrics(tmp_path / "run/metrics.jsonl")]
    assert len(rewards_by_step) == 30
    first, last = statistics.fmean(rewards_by_step[:5]), statistics.fmean(rewards_by_step[-5:])
    assert last > first + 0.3, (first, last)


def test_micro_batch_size_does_not_change_the_gradient(tmp_path):
    """Gradient accumulation over micro-batches must reproduce the full-batch gradient."""
    for loss_type in ("dapo", "grpo", "dr_grpo"):
        gradients = {}
        for micro in (1, 3, 8):
            config = make_config(
                tmp_path,
                f"grpo.loss_type={loss_type}",
                f"optim.micro_batch_size={micro}",
                "optim.max_steps=1",
                "optim.max_grad_norm=1e9",
                name=f"{loss_type}-{micro}",
            )
            trainer = make_trainer(config)
            captured = {}
            step = trainer.optimizer.step

            def capture(step=step, trainer=trainer, captured=captured):
                for name, p in trainer.model.named_parameters():
                    captured[name] = p.grad.detach().clone()
                return step()

            trainer.optimizer.step = capture
            trainer.train_step()
            gradients[micro] = captured
        assert any(g.abs().sum() > 0 for g in gradients[8].values())
        for micro in (1, 3):
            for name, expected in gradients[8].items():
                torch.testing.assert_close(
                    gradients[micro][name],
                    expected,
                    rtol=1e-4,
                    atol=1e-7,
                    msg=f"{loss_type} {micro} {name}",
                )


# ----------------------------------------------------------------------------- dynamic sampling
def test_zero_std_filter_drops_and_refills(tmp_path):
    items = problems(8, gold=lambda i: "c" if i % 2 else "v")
    config = make_config(
        tmp_path,
        "grpo.filter_zero_std_groups=true",
        "grpo.max_refill_rounds=3",
        "rewards.weights={gated: 1.0}",
        "optim.max_steps=3",
    )
    trainer = make_trainer(config, train_problems=items)
    before = snapshot(trainer.model)
    trainer.train()
    rows = read_metrics(tmp_path / "run/metrics.jsonl")
    assert len(rows) == 3
    for row in rows:
        assert row["groups_trained"] <= row["groups_generated"]
        assert row["groups_trained"] <= 2
        assert math.isfinite(row["loss"])
    assert any(row["frac_zero_std_groups"] > 0 for row in rows)
    assert sum(r["groups_generated"] for r in rows) > sum(r["groups_trained"] for r in rows)
    assert changed(before, trainer.model)


def test_all_zero_std_groups_make_no_update(tmp_path, capsys):
    config = make_config(
        tmp_path,
        "grpo.filter_zero_std_groups=true",
        "grpo.max_refill_rounds=1",
        "rewards.weights={constant: 1.0}",
        "grpo.num_iterations=2",
        "optim.max_steps=2",
        "run.save_every=1",
    )
    trainer = make_trainer(config)
    before = snapshot(trainer.model)
    trainer.train()
    assert not changed(before, trainer.model)
    rows = read_metrics(tmp_path / "run/metrics.jsonl")
    assert [row["step"] for row in rows] == [1, 2]
    for row in rows:
        assert row["groups_trained"] == 0
        assert row["groups_generated"] == 4  # 2 prompts, refilled once
        assert row["frac_zero_std_groups"] == 1.0
        assert row["loss"] == 0.0 and row["reward_std"] == 0.0
    assert "no update" in capsys.readouterr().err
    assert trainer.scheduler.last_epoch == 4  # the LR schedule advances as if it had trained
    assert (tmp_path / "run/final").is_dir()


def test_all_truncated_with_mask_truncated_stays_finite(tmp_path):
    """Every completion truncated and masked: zero tokens in the loss must not give NaN."""
    config = make_config(
        tmp_path,
        "grpo.mask_truncated_completions=true",
        "sampling.max_completion_length=2",
        "optim.max_steps=2",
    )
    trainer = make_trainer(config)
    before = snapshot(trainer.model)
    trainer.train()
    rows = read_metrics(tmp_path / "run/metrics.jsonl")
    assert rows[0]["truncation_rate"] == 1.0  # the tiny model never emits EOS this early
    for name, parameter in trainer.model.named_parameters():
        assert torch.isfinite(parameter).all(), name
    assert all(math.isfinite(row["loss"]) for row in rows)
    assert not changed(before, trainer.model)


def test_periodic_eval_logs_and_leaves_training_unchanged(tmp_path):
    plain = make_trainer(make_config(tmp_path, name="plain"))
    plain.train()
    config = make_config(tmp_path, "run.eval_every=2", "run.eval_batch_size=2", name="eval")
    tokenizer = build_char_tokenizer()
    evaluated = Trainer(
        config,
        overwrite=True,
        show_progress=False,
        model=build_tiny_model(len(tokenizer), 0),
        tokenizer=tokenizer,
        train_problems=problems(),
        eval_problems=problems(3, gold=lambda i: "7"),
    )
    evaluated.train()
    rows = read_metrics(tmp_path / "eval/metrics.jsonl")
    assert ["eval/accuracy" in row for row in rows] == [False, True, False]
    assert 0 <= rows[1]["eval/accuracy"] <= 1
    assert 0 <= rows[1]["eval/truncation_rate"] <= 1
    # evaluation must not consume the training RNG: same samples, same weights
    for name, parameter in plain.model.named_parameters():
        assert torch.equal(parameter, dict(evaluated.model.named_parameters())[name]), name


# ----------------------------------------------------------------------------- variants
def test_lora_trains_only_adapters_and_saves_a_merged_model(tmp_path):
    config = make_config(
        tmp_path,
        "model.lora=true",
        "model.lora_rank=4",
        "model.lora_target_modules=[q_proj, v_proj]",
        "optim.max_steps=2",
    )
    trainer = make_trainer(config)
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".")[-3] for n in trainable} == {"lora_A", "lora_B"}
    assert all(".q_proj." in n or ".v_proj." in n for n in trainable)
    before = snapshot(trainer.model)
    final = trainer.train()
    moved = changed(before, trainer.model)
    assert moved and all("lora_" in n for n in moved)

    checkpoint = load_file(tmp_path / "run/checkpoints/step_2/model.safetensors")
    assert set(checkpoint) == set(trainable)

    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    with safe_open(str(final / "model.safetensors"), "pt") as handle:
        keys = list(handle.keys())
    assert not any("lora" in k or "base_model" in k for k in keys), keys[:5]
    assert not (final / "adapter_config.json").exists()
    loaded = AutoModelForCausalLM.from_pretrained(final)
    reference = build_tiny_model(len(build_char_tokenizer()), 0)
    loaded_params = dict(loaded.named_parameters())
    for name, parameter in reference.named_parameters():
        if ".q_proj." in name or ".v_proj." in name:
            assert not torch.equal(loaded_params[name], parameter), f"{name} was not merged"
        else:
            assert torch.equal(loaded_params[name], parameter), f"{name} changed"
    # the merged model computes what the adapter model computes
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        trainer.model.eval()
        torch.testing.assert_close(loaded(ids).logits, trainer.model(input_ids=ids).logits)


def test_beta_builds_reference_model_and_logs_kl(tmp_path):
    trainer = make_trainer(make_config(tmp_path, "grpo.beta=0.1", "optim.max_steps=3"))
    assert trainer.reference_model is not None
    assert not any(p.requires_grad for p in trainer.reference_model.parameters())
    initial = snapshot(trainer.reference_model)
    trainer.train()
    assert not changed(initial, trainer.reference_model)
    rows = read_metrics(tmp_path / "run/metrics.jsonl")
    assert all(row["kl"] >= 0 for row in rows)
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # policy == reference before step 1
    assert rows[-1]["kl"] > 0

    no_kl = make_trainer(make_config(tmp_path, "grpo.beta=0", name="nokl"))
    assert no_kl.reference_model is None


def test_num_iterations_takes_several_optimizer_steps(tmp_path):
    config = make_config(
        tmp_path, "grpo.num_iterations=2", "optim.max_steps=2", "optim.warmup_steps=1"
    )
    trainer = make_trainer(config)
    trainer.train()
    assert trainer.scheduler.last_epoch == 4
    adam_steps = {int(state["step"]) for state in trainer.optimizer.state.values()}
    assert adam_steps == {4}
    rows = read_metrics(tmp_path / "run/metrics.jsonl")
    assert [row["step"] for row in rows] == [1, 2]
    # warmup is 1 step = 2 optimizer steps, so after step 1 the schedule is at its peak (with
    # one scheduler step per generation step it would still be warming up: 2/3 of the peak),
    # and after step 2 the cosine over 4 optimizer steps has ended
    assert rows[0]["learning_rate"] == pytest.approx(1e-2)
    assert rows[1]["learning_rate"] == pytest.approx(0.0, abs=1e-12)
    assert all(math.isfinite(row["loss"]) and 0 <= row["clip_fraction"] <= 1 for row in rows)


# ----------------------------------------------------------------------------- run directory
def test_prepare_run_dir_refuses_existing_run(tmp_path):
    config = make_config(tmp_path)
    run_dir = tmp_path / "run"
    prepare_run_dir(run_dir, config, resume=False, overwrite=False)
    assert (run_dir / "config.yaml").is_file() and (run_dir / "prompt_template.json").is_file()
    (run_dir / "metrics.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(SmolGRPOError, match="--resume") as error:
        prepare_run_dir(run_dir, config, resume=False, overwrite=False)
    assert "--overwrite" in str(error.value)
    assert (run_dir / "metrics.jsonl").is_file()
    prepare_run_dir(run_dir, config, resume=True, overwrite=False)  # keeps the run
    assert (run_dir / "metrics.jsonl").is_file()
    prepare_run_dir(run_dir, config, resume=False, overwrite=True)
    assert not (run_dir / "metrics.jsonl").exists()
    assert (run_dir / "config.yaml").is_file()


def test_prepare_run_dir_resume_needs_a_run(tmp_path):
    folder = tmp_path / "notarun"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(SmolGRPOError, match="not a smolgrpo run"):
        prepare_run_dir(folder, make_config(tmp_path), resume=True, overwrite=False)
    assert (folder / "notes.txt").read_text() == "mine"


def test_trainer_refuses_existing_run(tmp_path):
    config = make_config(tmp_path)
    prepare_run_dir(tmp_path / "run", config, resume=False, overwrite=False)
    tokenizer = build_char_tokenizer()
    with pytest.raises(SmolGRPOError, match="--resume"):
        Trainer(
            config,
            model=build_tiny_model(len(tokenizer)),
            tokenizer=tokenizer,
            train_problems=problems(),
        )


# ----------------------------------------------------------------------------- checkpoints
def _tiny_state(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0 / (i + 1))
    return model, optimizer, scheduler


def _train_one(model, optimizer, scheduler):
    model(torch.randn(5, 3)).pow(2).sum().backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()


def _save_steps(run_dir, steps, keep=10):
    model, optimizer, scheduler = _tiny_state()
    weights = {}
    for step in steps:
        _train_one(model, optimizer, scheduler)
        save_checkpoint(
            run_dir, step, model, optimizer, scheduler, {"epoch": 0, "index": step}, keep
        )
        weights[step] = snapshot(model)
    return weights


def test_checkpoint_round_trip_restores_everything(tmp_path):
    model, optimizer, scheduler = _tiny_state()
    _train_one(model, optimizer, scheduler)
    _train_one(model, optimizer, scheduler)
    path = save_checkpoint(tmp_path, 2, model, optimizer, scheduler, {"epoch": 1, "index": 3})
    rng = torch.get_rng_state()
    expected_draw = torch.rand(3)
    torch.set_rng_state(rng)
    _train_one(model, optimizer, scheduler)
    expected = snapshot(model)

    fresh, fresh_optimizer, fresh_scheduler = _tiny_state(seed=1)
    state = load_checkpoint(path, fresh, fresh_optimizer, fresh_scheduler)
    assert state["step"] == 2 and state["data"] == {"epoch": 1, "index": 3}
    assert fresh_scheduler.last_epoch == 2
    assert torch.equal(torch.rand(3), expected_draw)  # RNG restored
    load_checkpoint(path, fresh, fresh_optimizer, fresh_scheduler)  # rewinds the RNG again
    _train_one(fresh, fresh_optimizer, fresh_scheduler)
    for name, parameter in fresh.named_parameters():
        assert torch.equal(parameter, expected[name]), name


def test_checkpoint_restores_each_ranks_own_rng(tmp_path):
    model, optimizer, scheduler = _tiny_state()
    states = []
    for seed in (10, 11):
        torch.manual_seed(seed)
        states.append({"torch_cpu": torch.get_rng_state()})
    path = save_checkpoint(tmp_path, 1, model, optimizer, scheduler, {}, rank_rng_states=states)
    draws = []
    for rank in (0, 1):
        load_checkpoint(path, model, optimizer, scheduler, rank=rank)
        draws.append(torch.rand(4))
    torch.manual_seed(10)
    assert torch.equal(draws[0], torch.rand(4))
    torch.manual_seed(11)
    assert torch.equal(draws[1], torch.rand(4))


def test_corrupted_newest_checkpoint_is_skipped(tmp_path, capsys):
    _save_steps(tmp_path, [1, 2, 3])
    newest = tmp_path / "checkpoints/step_3"
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    assert "checksum" in verify_checkpoint(newest)
    assert latest_good_checkpoint(tmp_path) == tmp_path / "checkpoints/step_2"
    err = capsys.readouterr().err
    assert "warning" in err and "step_3" in err
    model, optimizer, scheduler = _tiny_state()
    with pytest.raises(SmolGRPOError, match="cannot resume"):
        load_checkpoint(newest, model, optimizer, scheduler)


def test_checkpoint_without_manifest_is_skipped(tmp_path, capsys):
    _save_steps(tmp_path, [1, 2])
    (tmp_path / "checkpoints/step_2" / MANIFEST).unlink()  # crash before the manifest
    staging = tmp_path / "checkpoints/.tmp-step_3"  # crash before the rename
    staging.mkdir()
    (staging / "model.safetensors").write_bytes(b"partial")
    assert latest_good_checkpoint(tmp_path) == tmp_path / "checkpoints/step_1"
    assert "step_2" in capsys.readouterr().err
    (tmp_path / "checkpoints/step_1/optimizer.safetensors").unlink()
    assert latest_good_checkpoint(tmp_path) is None
    assert latest_good_checkpoint(tmp_path / "missing") is None


def test_keep_checkpoints_prunes_old_ones(tmp_path):
    _save_steps(tmp_path, [2, 4, 6, 8, 10], keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_8", "step_10"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_10", "step_8"]


# ----------------------------------------------------------------------------- metrics file
def test_truncate_metrics_drops_later_partial_and_duplicate_rows(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [{"step": 1, "v": 1}, {"step": 2, "v": 2}, {"step": 3, "v": 3}, {"step": 2, "v": 22}]
    lines += [{"step": 4, "v": 4}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"step": 5, "v"')
    assert [row["step"] for row in read_metrics(path)] == [1, 2, 3, 2, 4]
    truncate_metrics(path, 3)
    rows = read_metrics(path)
    assert [row["step"] for row in rows] == [1, 2, 3]
    assert len(path.read_text().splitlines()) == 3 and path.read_text().endswith("\n")
    assert {row["step"]: row["v"] for row in rows}[2] in (2, 22)
    truncate_metrics(path, 0)
    assert path.read_text() == ""


# ----------------------------------------------------------------------------- fresh clone
def test_cold_and_warm_model_cache_train_alike(tmp_path, monkeypatch):
    """The first run converts the embedded model (building it draws from the RNG), later runs
    load the cached copy: both must sample the same completions and end with the same weights."""
    from conftest import install_fake_gguf

    install_fake_gguf(monkeypatch, tmp_path)
    monkeypatch.setenv("SMOLGRPO_CACHE", str(tmp_path / "cache"))
    results = []
    for name in ("cold", "warm"):
        config = make_config(tmp_path, "model.name=embedded", "optim.max_steps=2", name=name)
        trainer = Trainer(config, overwrite=True, show_progress=False, train_problems=problems())
        trainer.train()
        rows = read_metrics(tmp_path / name / "metrics.jsonl")
        timing = ("tokens_per_s", "step_time_s", "generation_s", "reward_s", "train_s")
        untimed = [
            {k: v for k, v in r.items() if k not in timing and "_time_s/" not in k} for r in rows
        ]
        results.append((untimed, trainer))
    (cold_rows, cold), (warm_rows, warm) = results
    assert cold_rows == warm_rows and len(cold_rows) == 2
    assert not changed(snapshot(cold.model), warm.model)


def test_progress_is_one_line_per_step_in_a_log_file(tmp_path, capsys, monkeypatch):
    from smolgrpo.metrics import TrainProgress

    phases = []
    monkeypatch.setattr(TrainProgress, "phase", lambda self, name: phases.append(name))
    config = make_config(tmp_path, "optim.max_steps=2")
    trainer = Trainer(
        config,
        overwrite=True,
        model=build_tiny_model(len(build_char_tokenizer())),
        tokenizer=build_char_tokenizer(),
        train_problems=problems(),
    )  # show_progress, with stdout captured: not a terminal
    trainer.train()
    lines = [line for line in capsys.readouterr().out.splitlines() if " step " in line]
    rows = read_metrics(tmp_path / "run/metrics.jsonl")
    assert [line.split("  ")[0] for line in lines] == ["train step 1/2", "train step 2/2"]
    for line, row in zip(lines, rows):
        assert f"reward {row['reward_mean']:.3f}" in line
        assert f"lr {row['learning_rate']:.2e}" in line
        assert f"tok/s {row['tokens_per_s']:.0f}" in line and "  eta " in line
    assert phases[:3] == ["generating", "scoring", "training"] and "saving" in phases


def test_weight_files_get_the_mode_of_every_other_file(tmp_path):
    from types import SimpleNamespace

    from smolgrpo.run_setup import save_final_model

    model, optimizer, scheduler = _tiny_state()
    tokenizer = build_char_tokenizer()
    trainer = SimpleNamespace(
        run_dir=tmp_path,
        config=load_config(None, []),
        model=build_tiny_model(len(tokenizer)),
        tokenizer=tokenizer,
    )
    (tmp_path / "prompt_template.json").write_text("{}")
    umask = os.umask(0o022)
    try:
        checkpoint = save_checkpoint(tmp_path, 1, model, optimizer, scheduler, {})
        final = save_final_model(trainer)
    finally:
        os.umask(umask)
    files = [*checkpoint.iterdir(), *final.iterdir()]
    assert len([path for path in files if path.suffix == ".safetensors"]) == 4
    assert {path.name: oct(path.stat().st_mode & 0o777) for path in files} == {
        path.name: oct(0o644) for path in files
    }
