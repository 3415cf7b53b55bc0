"""Parts and variants of the training loop on a tiny random Llama: the prompt stream, group
batches, dynamic sampling (zero-std groups), periodic eval, LoRA, the KL reference model and
several optimizer steps per batch."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import build_char_tokenizer, build_tiny_model
from safetensors.torch import load_file
from test_trainer import changed, make_config, make_trainer, problems, snapshot

from smolgrpo.algo.advantages import group_advantages
from smolgrpo.errors import SmolGRPOError
from smolgrpo.generation.rollout import Rollout
from smolgrpo.runs.metrics_log import read_metrics
from smolgrpo.training.group_collection import scaled_by_step_std
from smolgrpo.training.trainer import PromptStream, Trainer, build_group_batch

pytestmark = pytest.mark.usefixtures("one_thread", "toy_rewards")  # conftest.py


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


def test_batch_scaled_advantages_take_the_std_of_the_whole_step():
    # two refill rounds, each keeping one group of 2: per round the stds are 0.71 and 2.83;
    # over the step's kept rewards [0, 1, 4, 0] it is 1.89
    first_rewards, second_rewards = torch.tensor([0.0, 1.0]), torch.tensor([4.0, 0.0])
    first = group_advantages(first_rewards, 2, "none")[0]  # [-0.5, 0.5]
    second = group_advantages(second_rewards, 2, "none")[0]  # [2, -2]
    scaled = scaled_by_step_std([first, second], [first_rewards, second_rewards])
    std = torch.tensor([0.0, 1.0, 4.0, 0.0]).std()
    assert std.item() == pytest.approx(1.8930, abs=1e-4)
    assert torch.allclose(torch.cat(scaled), torch.tensor([-0.5, 0.5, 2.0, -2.0]) / (std + 1e-4))
    # per round it would have been [-0.71, 0.71] and [0.71, -0.71]: the rounds weighed alike
    assert scaled[1][0] / scaled[0][1] == pytest.approx(4.0)
    assert scaled_by_step_std([], []) == []


def test_float16_training_is_refused_in_one_line_before_the_run_folder(tmp_path):
    config = make_config(tmp_path, "model.dtype=float16")
    with pytest.raises(SmolGRPOError) as error:
        make_trainer(config)
    message = str(error.value)
    assert "model.dtype" in message and "float16" in message and "\n" not in message
    assert not (tmp_path / "run").exists()
    make_trainer(make_config(tmp_path, "model.dtype=bfloat16", name="bf16"))  # accepted


def test_batch_scaling_with_refills_trains(tmp_path):
    items = problems(8, gold=lambda i: "c" if i % 2 else "v")
    config = make_config(
        tmp_path,
        "grpo.scale_rewards=batch",
        "grpo.filter_zero_std_groups=true",
        "grpo.max_refill_rounds=2",
        "rewards.weights={gated: 1.0}",
        "optim.max_steps=2",
    )
    trainer = make_trainer(config, train_problems=items)
    before = snapshot(trainer.model)
    trainer.train()
    rows = read_metrics(tmp_path / "run/metrics.jsonl")
    assert len(rows) == 2 and all(math.isfinite(row["loss"]) for row in rows)
    assert changed(before, trainer.model)
