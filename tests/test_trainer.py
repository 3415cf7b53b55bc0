"""The training loop on a tiny random Llama: steps, logging, checkpoints, resume, learning."""

from __future__ import annotations

import json
import math
import signal
import statistics

import pytest
import torch
from conftest import build_char_tokenizer, build_tiny_model, digits_reward, prepare_run_dir
from safetensors.torch import load_file

from smolgrpo.config.loading import load_config
from smolgrpo.errors import SmolGRPOError
from smolgrpo.runs.checkpoint import (
    MANIFEST,
    list_checkpoints,
    verify_checkpoint,
)
from smolgrpo.runs.metrics_log import read_metrics
from smolgrpo.tasks.data import Problem
from smolgrpo.training.trainer import Trainer

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


pytestmark = pytest.mark.usefixtures("one_thread", "toy_rewards")  # conftest.py


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


def train_with_ten_second_steps(trainer, clock: _FakeClock, used_lrs: list | None = None):
    """trainer.train() with each step taking 10 s on the fake clock; the lr each step starts
    with goes into `used_lrs`."""
    original = trainer.train_step

    def ten_second_step():
        if used_lrs is not None:
            used_lrs.append(trainer.optimizer.param_groups[0]["lr"])
        clock.now += 10.0
        return original()

    trainer.train_step = ten_second_step
    return trainer.train()


def test_time_limit_ends_the_run_like_max_steps(tmp_path, monkeypatch, capsys):
    clock = _FakeClock()
    monkeypatch.setattr("smolgrpo.training.trainer.time", clock)
    config = make_config(tmp_path, "optim.max_steps=5", "run.save_every=10", "run.time_limit_s=25")
    trainer = make_trainer(config)
    final = train_with_ten_second_steps(trainer, clock)
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
    monkeypatch.setattr("smolgrpo.training.trainer.time", clock)
    trainer = make_trainer(make_config(tmp_path, "run.time_limit_s=1000"))
    trainer.train()
    assert trainer.step == 3 and not trainer.stopped_by_time_limit
    assert "- Steps: 3 × 2 prompts" in (tmp_path / "run/final/README.md").read_text()
    with pytest.raises(SmolGRPOError, match="run.time_limit_s.*-1"):
        make_config(tmp_path, "run.time_limit_s=-1")


def test_time_length_cosine_decays_over_the_time_limit(tmp_path, monkeypatch):
    """optim.schedule_length: time: each step's lr is the cosine at the share of
    run.time_limit_s used when the step starts (max_steps is far away here)."""
    clock = _FakeClock()
    monkeypatch.setattr("smolgrpo.training.trainer.time", clock)
    config = make_config(
        tmp_path,
        "optim.max_steps=100",
        "run.save_every=100",
        "run.time_limit_s=50",
        "optim.schedule_length=time",
    )
    trainer, used_lrs = make_trainer(config), []
    train_with_ten_second_steps(trainer, clock, used_lrs)
    # Steps start at 0, 10, 20, 30, 40 s of 50; after step 5 another would not fit.
    assert trainer.step == 5 and trainer.stopped_by_time_limit
    expected = [1e-2 * 0.5 * (1 + math.cos(math.pi * t / 50)) for t in (0, 10, 20, 30, 40)]
    assert used_lrs == pytest.approx(expected, rel=1e-9)
    # The same run counted in steps: the cosine over 100 steps has barely moved.
    steps_config = make_config(tmp_path, "optim.max_steps=100", "run.time_limit_s=50", name="steps")
    assert steps_config.optim.schedule_length == "steps"
    used_lrs = []
    train_with_ten_second_steps(make_trainer(steps_config), clock, used_lrs)
    assert used_lrs[-1] == pytest.approx(1e-2 * 0.5 * (1 + math.cos(math.pi * 4 / 100)))


def test_time_length_schedule_needs_a_time_limit_and_a_known_length(tmp_path):
    with pytest.raises(SmolGRPOError, match="schedule_length 'time' needs run.time_limit_s"):
        make_config(tmp_path, "optim.schedule_length=time")
    with pytest.raises(SmolGRPOError, match="optim.schedule_length.*'epochs'"):
        make_config(tmp_path, "optim.schedule_length=epochs", "run.time_limit_s=10")


def test_time_limit_counts_the_training_time_of_a_resumed_run(tmp_path, monkeypatch):
    clock = _FakeClock()
    monkeypatch.setattr("smolgrpo.training.trainer.time", clock)
    limits = ("run.time_limit_s=25", "run.save_every=1")
    first = make_trainer(make_config(tmp_path, "optim.max_steps=1", *limits))
    train_with_ten_second_steps(first, clock)
    state = json.loads((tmp_path / "run/checkpoints/step_1/state.json").read_text())
    assert first.step == 1 and state["train_time_s"] == pytest.approx(10.0)
    clock.now += 500.0  # time between the two invocations does not count
    resumed = make_trainer(make_config(tmp_path, "optim.max_steps=5", *limits), resume=True)
    train_with_ten_second_steps(resumed, clock)
    # 10 s already used: after step 2 (20 s) another 10 s step would pass 25 s.
    assert resumed.step == 2 and resumed.stopped_by_time_limit


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

            # A step pre-hook, not a replaced optimizer.step: the scheduler's step counter
            # (and its "scheduler before optimizer" check) stays intact.
            def capture(optimizer, args, kwargs, trainer=trainer, captured=captured):
                for name, p in trainer.model.named_parameters():
                    captured[name] = p.grad.detach().clone()

            trainer.optimizer.register_step_pre_hook(capture)
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
    from smolgrpo.runs.progress import TrainProgress

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
