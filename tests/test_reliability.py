"""Faults inside a run: NaN/inf steps, a full disk, out of memory; and run-to-run determinism.

All on the tiny random Llama of test_trainer.py, in-process: a fault is injected by wrapping the
function where it would arise (the loss, the log-probs, the gradients after the all-reduce, the
checkpoint writer), so the real guard code in the trainer is what reacts.
"""

from __future__ import annotations

import dataclasses
import errno
import math

import pytest
import torch
from conftest import build_char_tokenizer, build_tiny_model
from test_trainer import make_config, make_trainer, problems, snapshot

import smolgrpo.training.policy_update as policy_update
import smolgrpo.training.trainer as trainer_module
from smolgrpo.cli import main as cli
from smolgrpo.errors import SmolGRPOError
from smolgrpo.models import distributed as dist_utils
from smolgrpo.runs import checkpoint
from smolgrpo.runs.checkpoint import latest_good_checkpoint, list_checkpoints, verify_checkpoint
from smolgrpo.runs.guards import is_disk_full, is_finite_step, resource_error_message
from smolgrpo.runs.metrics_log import read_metrics

TIMING_KEYS = {"tokens_per_s", "step_time_s", "generation_s", "reward_s", "train_s"}


pytestmark = pytest.mark.usefixtures("one_thread", "toy_rewards")  # conftest.py


def inject(monkeypatch, trainer, kind: str, bad_steps: set[int]) -> None:
    """Make the steps in `bad_steps` (1-based) produce a NaN or inf of the given kind."""

    def bad() -> bool:
        return trainer.step + 1 in bad_steps  # trainer.step counts finished steps

    if kind in ("nan loss", "inf loss"):
        real = policy_update.grpo_loss
        value = math.nan if kind == "nan loss" else math.inf

        def grpo_loss(*args, **kwargs):
            output = real(*args, **kwargs)
            return dataclasses.replace(output, loss=output.loss * value) if bad() else output

        monkeypatch.setattr(policy_update, "grpo_loss", grpo_loss)
    elif kind == "nan log-probs":  # NaN hidden states reach every log-prob of the step

        def poison(module, inputs, output):
            return output + math.nan if bad() and torch.is_grad_enabled() else output

        trainer.model.model.norm.register_forward_hook(poison)  # this trainer only
    else:  # "inf gradient": as if the all-reduce or a kernel overflowed
        real = dist_utils.all_reduce_gradients

        def all_reduce_gradients(model):
            real(model)
            if bad():
                next(p for p in model.parameters() if p.grad is not None).grad[0] = math.inf

        monkeypatch.setattr(dist_utils, "all_reduce_gradients", all_reduce_gradients)


def record_parameters(trainer) -> list[dict]:
    """Parameters after each step (index 0 = before training)."""
    history = [snapshot(trainer.model)]
    original = trainer.train_step

    def train_step():
        result = original()
        history.append(snapshot(trainer.model))
        return result

    trainer.train_step = train_step
    return history


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[name], b[name]) for name in a)


# ----------------------------------------------------------------------------- NaN / inf
def test_is_finite_step():
    assert is_finite_step(0.5, torch.tensor(2.0))
    for loss, norm in ((math.nan, 1.0), (math.inf, 1.0), (0.1, math.nan), (0.1, -math.inf)):
        assert not is_finite_step(loss, torch.tensor(norm))


@pytest.mark.parametrize("kind", ["nan loss", "inf loss", "nan log-probs", "inf gradient"])
def test_a_bad_step_is_skipped_and_counted(tmp_path, monkeypatch, kind):
    overrides = ["optim.max_steps=4", "run.save_every=10", "optim.max_bad_steps=2"]
    trainer = make_trainer(make_config(tmp_path, *overrides))
    inject(monkeypatch, trainer, kind, bad_steps={2})
    history = record_parameters(trainer)
    trainer.train()
    assert not same(history[0], history[1])  # step 1 trained
    assert same(history[1], history[2])  # step 2 skipped: no parameter moved
    assert not same(history[2], history[3])  # and training went on
    rows = read_metrics(tmp_path / "run/metrics.jsonl")
    assert [row["bad_steps"] for row in rows] == [0, 1, 0, 0]
    assert all(math.isfinite(row["loss"]) for row in rows if row["step"] != 2)
    # The LR schedule stayed on time: the same rates as a run without the fault.
    clean = make_trainer(make_config(tmp_path, *overrides, name="clean"))
    clean.train()
    clean_rows = read_metrics(tmp_path / "clean/metrics.jsonl")
    assert [row["learning_rate"] for row in rows] == [row["learning_rate"] for row in clean_rows]
    state = trainer.optimizer.state_dict()["state"]
    assert all(int(values["step"]) == 3 for values in state.values())  # 4 steps, 1 skipped


def test_one_bad_iteration_skips_only_its_own_update(tmp_path, monkeypatch):
    """grpo.num_iterations=3: a NaN loss in the first pass skips that update only; the second
    and third passes over the batch still update (the guard once judged the running total)."""
    overrides = ["optim.max_steps=1", "grpo.num_iterations=3", "run.save_every=10"]
    trainer = make_trainer(make_config(tmp_path, *overrides))
    real, calls = policy_update.grpo_loss, []

    def grpo_loss(*args, **kwargs):
        output = real(*args, **kwargs)
        calls.append(1)
        return (
            dataclasses.replace(output, loss=output.loss * math.nan) if len(calls) == 1 else output
        )

    monkeypatch.setattr(policy_update, "grpo_loss", grpo_loss)
    trainer.train()
    assert len(calls) == 3  # one micro-batch per pass
    (row,) = read_metrics(tmp_path / "run/metrics.jsonl")
    assert row["bad_steps"] == 1
    state = trainer.optimizer.state_dict()["state"]
    assert state and all(int(values["step"]) == 2 for values in state.values())


def test_max_bad_steps_in_a_row_stop_the_run_keeping_the_last_good_checkpoint(
    tmp_path, monkeypatch
):
    overrides = ["optim.max_steps=8", "run.save_every=2", "optim.max_bad_steps=3"]
    trainer = make_trainer(make_config(tmp_path, *overrides))
    inject(monkeypatch, trainer, "nan loss", bad_steps={2, 5, 6, 7, 8})
    with pytest.raises(SmolGRPOError) as info:
        trainer.train()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("step 7: NaN/inf loss or gradients for 3 steps in a row")
    assert "optim.max_bad_steps=3" in message and "--resume" in message
    run_dir = tmp_path / "run"
    assert f"the last good checkpoint is {run_dir / 'checkpoints/step_6'}" in message
    # Step 6 was skipped but its parameters are those of step 4, so its checkpoint is good;
    # nothing was written after the run was declared diverged.
    assert [p.name for p in list_checkpoints(run_dir)] == ["step_4", "step_6"]
    assert verify_checkpoint(run_dir / "checkpoints/step_6") is None
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [row["bad_steps"] for row in rows] == [0, 1, 0, 0, 1, 1, 1]
    assert not (run_dir / "final").exists()


# ----------------------------------------------------------------------------- disk full
@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        # what safetensors raises for a full disk (seen on a 64 KiB tmpfs)
        Exception("Error while serializing: I/O error: No space left on device (os error 28)"),
    ],
    ids=["OSError", "SafetensorError"],
)
def test_full_disk_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch, error):
    overrides = ["optim.max_steps=6", "run.save_every=2"]
    real_save_file = checkpoint.save_file

    def save_file(tensors, path, *args, **kwargs):
        if path.parent.name == ".tmp-step_4" and path.name == "optimizer.safetensors":
            raise error
        return real_save_file(tensors, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", save_file)
    trainer = make_trainer(make_config(tmp_path, *overrides))
    with pytest.raises(SmolGRPOError) as info:
        trainer.train()
    run_dir = tmp_path / "run"
    step_2 = run_dir / "checkpoints/step_2"
    assert str(info.value) == (
        f"{run_dir / 'checkpoints/step_4'}: disk full while writing the checkpoint; {step_2} is "
        "intact. Free some space (or lower run.keep_checkpoints) and continue with --resume"
    )
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_2"]
    assert latest_good_checkpoint(run_dir) == step_2

    monkeypatch.setattr(checkpoint, "save_file", real_save_file)  # space freed
    resumed = make_trainer(make_config(tmp_path, *overrides), resume=True)
    assert resumed.step == 2
    resumed.train()
    clean = make_trainer(make_config(tmp_path, *overrides, name="clean"))
    clean.train()
    assert same(snapshot(clean.model), snapshot(resumed.model))
    assert [row["step"] for row in read_metrics(run_dir / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]


def test_is_disk_full():
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(ValueError("bad value"))


# ----------------------------------------------------------------------------- out of memory
def test_out_of_memory_while_training_names_the_settings_to_lower(tmp_path):
    config = make_config(tmp_path, "sampling.num_generations=4", "optim.micro_batch_size=8")

    class OutOfMemoryTrainer(trainer_module.Trainer):
        def __init__(self, config, **kwargs):
            tokenizer = build_char_tokenizer()
            model = build_tiny_model(len(tokenizer))
            super().__init__(
                config, model=model, tokenizer=tokenizer, train_problems=problems(), **kwargs
            )

        def train_step(self):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(SmolGRPOError) as info:
        trainer_module.run_training(config, show_progress=False, trainer_class=OutOfMemoryTrainer)
    assert str(info.value) == (
        "CUDA out of memory while training; lower optim.micro_batch_size (now 8), "
        "sampling.num_generations (now 4) or sampling.max_completion_length (now 6), or set "
        "model.gradient_checkpointing=true (now false)"
    )


def test_out_of_memory_in_eval_is_one_line_and_other_errors_keep_their_traceback(
    monkeypatch, capsys
):
    def run_eval(args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")

    monkeypatch.setitem(cli.COMMANDS, "eval", (cli.COMMANDS["eval"][0], run_eval))
    assert cli.main(["eval"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: CUDA out of memory; lower --batch-size")
    assert "optim.micro_batch_size" in lines[0] and "gradient_checkpointing" in lines[0]
    with pytest.raises(torch.cuda.OutOfMemoryError):
        cli.main(["--debug", "eval"])

    def buggy(args):
        raise RuntimeError("shape mismatch")  # a bug, not a resource limit

    monkeypatch.setitem(cli.COMMANDS, "eval", (cli.COMMANDS["eval"][0], buggy))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        cli.main(["eval"])
    assert resource_error_message(MemoryError()).startswith("out of memory; lower")


# ----------------------------------------------------------------------------- determinism
def test_same_seed_and_config_give_identical_runs_on_cpu(tmp_path):
    runs = []
    for name in ("first", "second", "other-seed"):
        seed = "run.seed=1" if name == "other-seed" else "run.seed=0"
        trainer = make_trainer(make_config(tmp_path, "optim.max_steps=3", seed, name=name))
        trainer.train()
        rows = read_metrics(tmp_path / name / "metrics.jsonl")
        untimed = [
            {k: v for k, v in r.items() if k not in TIMING_KEYS and "_time_s/" not in k}
            for r in rows
        ]
        runs.append((untimed, trainer))
    (first, trainer_a), (second, trainer_b), (other, _) = runs
    assert first == second
    assert same(snapshot(trainer_a.model), snapshot(trainer_b.model))
    assert first != other  # the seed matters, so the equality above is not vacuous


def test_resume_without_a_checkpoint_drops_the_lost_steps_rows(tmp_path, capsys):
    config = make_config(tmp_path, "optim.max_steps=2", "run.save_every=10")
    make_trainer(config)  # creates the run folder
    (tmp_path / "run/metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "lo')
    trainer = make_trainer(config, resume=True)
    assert "no checkpoint to resume from" in capsys.readouterr().err
    trainer.train()
    rows = read_metrics(tmp_path / "run/metrics.jsonl")
    assert [row["step"] for row in rows] == [1, 2] and rows[0]["loss"] != 0.5


def test_a_skipped_first_update_steps_the_schedule_without_a_warning():
    import warnings

    from smolgrpo.runs.guards import step_schedule

    def scheduler():
        optimizer = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=1.0)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scheduler().step()  # what PyTorch says without the helper
        schedule = scheduler()
        step_schedule(schedule)
    assert [str(w.message)[:32] for w in caught] == ["Detected call of `lr_scheduler.s"]
    assert schedule.get_last_lr() == [0.5]  # the schedule moved on all the same
