"""Run folders, checkpoints and the metrics file: refusing to clobber a run, checkpoint round
trips (weights, optimizer, scheduler, each rank's RNG), skipping corrupted or half-written
checkpoints, pruning, truncating metrics on resume, and the mode of weight files."""

from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import build_char_tokenizer, build_tiny_model, prepare_run_dir
from test_trainer import make_config, problems, snapshot

from smolgrpo.config.loading import load_config
from smolgrpo.errors import SmolGRPOError
from smolgrpo.runs.checkpoint import (
    MANIFEST,
    latest_good_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from smolgrpo.runs.metrics_log import read_metrics, truncate_metrics
from smolgrpo.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread", "toy_rewards")  # conftest.py


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


def test_weight_files_get_the_mode_of_every_other_file(tmp_path):
    from types import SimpleNamespace

    from smolgrpo.training.run_setup import save_final_model

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
