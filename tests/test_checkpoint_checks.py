"""What makes a checkpoint good: a manifest of the right shape listing every file a resume reads
(plain names, never `..` or an absolute path), pruning that never deletes the checkpoint just
written, and the rename made durable (the folder fsynced)."""

from __future__ import annotations

import json

import pytest
from test_run_files import _save_steps, _tiny_state
from test_trainer import make_config, make_trainer

from smolgrpo.runs import checkpoint as checkpoint_module
from smolgrpo.runs.checkpoint import (
    MANIFEST,
    REQUIRED_FILES,
    latest_good_checkpoint,
    list_checkpoints,
    save_checkpoint,
    verify_checkpoint,
)

pytestmark = pytest.mark.usefixtures("one_thread", "toy_rewards")  # conftest.py


def _rewrite_manifest(folder, change) -> None:
    path = folder / MANIFEST
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def _without(name):
    def change(manifest):
        del manifest["files"][name]
        return manifest

    return change


def _with_file(name):
    def change(manifest):
        manifest["files"][name] = manifest["files"]["state.json"]
        return manifest

    return change


BAD_MANIFESTS = {
    "no files listed": (lambda m: {"files": {}}, "manifest is for step None"),
    "no files, right step": (lambda m: {"step": 2, "files": {}}, "does not list model.safetensors"),
    "optimizer not listed": (_without("optimizer.safetensors"), "optimizer.safetensors"),
    "state not listed": (_without("state.json"), "does not list state.json"),
    "parent folder": (_with_file("../step_1/state.json"), "not a plain file name"),
    "dot-dot": (_with_file(".."), "not a plain file name"),
    "absolute path": (_with_file("/etc/hostname"), "not a plain file name"),
    "the manifest itself": (_with_file(MANIFEST), "not a plain file name"),
    "files a list": (lambda m: {**m, "files": list(m["files"])}, "no 'files' object"),
    "not an object": (lambda m: [m], "no 'files' object"),
    "another step": (lambda m: {**m, "step": 1}, "manifest is for step 1, not 2"),
    "digest not hex": (
        lambda m: {**m, "files": {**m["files"], "state.json": "z" * 64}},
        "no SHA-256 for state.json",
    ),
}


@pytest.mark.parametrize("case", list(BAD_MANIFESTS))
def test_a_manifest_of_the_wrong_shape_makes_the_checkpoint_bad(tmp_path, capsys, case):
    change, reason = BAD_MANIFESTS[case]
    _save_steps(tmp_path, [1, 2])
    newest = tmp_path / "checkpoints/step_2"
    assert verify_checkpoint(newest) is None
    _rewrite_manifest(newest, change)
    problem = verify_checkpoint(newest)
    assert problem is not None and reason in problem, problem
    assert latest_good_checkpoint(tmp_path) == tmp_path / "checkpoints/step_1"
    assert f"warning: {newest}: skipped, {problem}" in capsys.readouterr().err


def test_a_listed_extra_file_is_checked_like_the_others(tmp_path):
    _save_steps(tmp_path, [1])
    folder = tmp_path / "checkpoints/step_1"
    (folder / "notes.json").write_text("{}")
    _rewrite_manifest(folder, _with_file("notes.json"))  # listed with another file's digest
    assert verify_checkpoint(folder) == "checksum mismatch in notes.json"
    (folder / "notes.json").unlink()
    assert verify_checkpoint(folder) == "missing notes.json"


def test_resume_skips_a_checkpoint_whose_manifest_lists_nothing(tmp_path, capsys):
    """Before: `{"files": {}}` verified, the resume picked it and failed loading it."""
    config = make_config(tmp_path, "optim.max_steps=4", "run.save_every=2")
    make_trainer(config).train()
    run_dir = tmp_path / "run"
    assert [p.name for p in list_checkpoints(run_dir)] == ["step_2", "step_4"]
    (run_dir / "checkpoints/step_4" / MANIFEST).write_text('{"files": {}}')
    trainer = make_trainer(config, resume=True)
    assert trainer.step == 2
    err = capsys.readouterr().err
    assert f"warning: {run_dir / 'checkpoints/step_4'}: skipped, manifest" in err
    trainer.train()
    assert verify_checkpoint(run_dir / "checkpoints/step_4") is None  # written again, good
    assert (run_dir / "final/model.safetensors").is_file()


def test_every_required_file_is_in_a_written_checkpoint(tmp_path):
    _save_steps(tmp_path, [3])
    manifest = json.loads((tmp_path / "checkpoints/step_3" / MANIFEST).read_text())
    assert manifest["step"] == 3 and set(REQUIRED_FILES) <= set(manifest["files"])


# ----------------------------------------------------------------------------- pruning
def test_keep_one_never_prunes_the_checkpoint_just_written(tmp_path):
    """A resume from step 4 past a broken step 6 (left from before), with keep_checkpoints: 1:
    before, writing step 5 pruned steps 4 and 5 and left only the broken step 6."""
    _save_steps(tmp_path, [4, 6])
    broken = tmp_path / "checkpoints/step_6"
    (broken / MANIFEST).write_text('{"files": {}}')
    model, optimizer, scheduler = _tiny_state()
    written = save_checkpoint(tmp_path, 5, model, optimizer, scheduler, {}, keep=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_5", "step_6"]
    assert verify_checkpoint(written) is None
    assert latest_good_checkpoint(tmp_path) == written
    save_checkpoint(tmp_path, 6, model, optimizer, scheduler, {}, keep=1)  # replaces the broken
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_6"]
    assert verify_checkpoint(broken) is None


def test_keep_two_keeps_the_newest_and_the_one_before_it(tmp_path):
    _save_steps(tmp_path, [2, 4, 8])
    model, optimizer, scheduler = _tiny_state()
    save_checkpoint(tmp_path, 6, model, optimizer, scheduler, {}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_4", "step_6", "step_8"]


def test_the_checkpoints_folder_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    synced = []
    real = checkpoint_module._fsync_folder

    def record(folder):
        synced.append((folder, (tmp_path / "checkpoints/step_1").is_dir()))
        real(folder)

    monkeypatch.setattr(checkpoint_module, "_fsync_folder", record)
    _save_steps(tmp_path, [1])
    assert (tmp_path / "checkpoints", True) in synced  # after step_1 appeared
    assert (tmp_path / "checkpoints/.tmp-step_1", False) in synced  # its files, before
