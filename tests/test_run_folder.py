"""The run folder: what --overwrite may delete, one process per folder, resuming a changed recipe.

Through the CLI (in-process `cli.main`, a tiny random Llama saved as a local model folder, the
toy `digits` reward), as a user meets them:
- `--overwrite` deletes only a smolgrpo run or an empty folder, never one that holds the model or
  the data the command reads, and only once the model and the data have loaded: a folder of
  notes with a mistyped model.name keeps its notes, and the refusal does not point at
  --overwrite; the same for `sft`;
- a second process on a run folder gets one line naming the holder (pid, host), exit 2; a
  SIGKILLed holder leaves no stale lock;
- `--resume` refuses a change of the model, its LoRA shape or the task in one line naming the
  key, applies any other change (the new learning rate on the loaded optimizer) and lists it in
  one warning line, and rewrites the run files only after the checkpoint has loaded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import build_char_tokenizer, build_tiny_model, prepare_run_dir
from test_trainer import make_config, make_trainer

from smolgrpo.cli import main as cli
from smolgrpo.errors import SmolGRPOError
from smolgrpo.runs.checkpoint import (
    MANIFEST,
    _sha256,
    list_checkpoints,
    load_checkpoint,
    recorded_config,
    save_checkpoint,
)
from smolgrpo.runs.lock import LOCK_FILE, RunLock
from smolgrpo.runs.metrics_log import read_metrics
from smolgrpo.training.resume_check import changes, check_resume_config, describe_changes
from smolgrpo.training.run_setup import RUN_MARKER, is_run_folder

pytestmark = pytest.mark.usefixtures("one_thread", "toy_rewards")  # conftest.py

SRC = Path(__file__).resolve().parents[1] / "src"


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture
def setup(tmp_path) -> dict:
    """A tiny model folder, a toy JSONL task (train and test splits) and a recipe using them."""
    tokenizer = build_char_tokenizer()
    model_dir = tmp_path / "tiny-model"
    build_tiny_model(len(tokenizer)).save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    data = tmp_path / "data"
    data.mkdir()
    for split, numbers in (("train", range(6)), ("test", range(6, 8))):
        rows = [{"question": f"Q{i}", "answer": f"step {i}\n#### {i}"} for i in numbers]
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = {
        "model": {"name": str(model_dir), "device": "cpu"},
        "data": {"source": str(data)},  # GSM8K-style rows: `sft` has worked solutions
        "prompt": {"system_prompt": "S", "prefill": ""},
        "rewards": {"weights": {"digits": 1.0}},
        "sampling": {"num_generations": 2, "max_completion_length": 4},
        "optim": {
            "learning_rate": 1e-2,
            "warmup_steps": 0,
            "lr_schedule": "constant",
            "max_steps": 2,
            "prompts_per_step": 2,
            "micro_batch_size": 4,
        },
        "run": {"save_every": 1, "keep_checkpoints": 2},
        "sft": {"max_length": 64},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(recipe))  # JSON is YAML
    return {"recipe": path, "model": model_dir, "data": data}


def run_cli(capsys, command: str, recipe: Path, output_dir, *extra: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `smolgrpo COMMAND --config RECIPE --output-dir DIR ...`."""
    argv = [command, "--config", str(recipe), "--no-progress", "--output-dir", str(output_dir)]
    code = cli.main(argv + list(extra))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def files_in(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def trained_run(capsys, setup, run_dir: Path, *extra: str) -> Path:
    code, _, err = run_cli(capsys, "train", setup["recipe"], run_dir, *extra)
    assert code == 0, err
    return run_dir


# ----------------------------------------------------------------------------- --overwrite
@pytest.mark.parametrize("command", ["train", "sft"])
def test_overwrite_of_a_folder_that_is_no_run_keeps_it_and_does_not_suggest_overwrite(
    setup, tmp_path, capsys, command
):
    """The issue's reproduction: a notes file, --overwrite and a mistyped model.name."""
    folder = tmp_path / "my-notes"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    for flags in (["--overwrite", "--set", "model.name=./no-such-model"], ["--overwrite"], []):
        code, _, err = run_cli(capsys, command, setup["recipe"], folder, *flags)
        line = one_error_line(err)
        assert code == 2
        assert f"{folder}: not empty and not a smolgrpo run" in line
        assert "--overwrite" not in line
        assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]  # no lock file left
        assert (folder / "notes.txt").read_text() == "mine"


def test_overwrite_of_the_current_folder_or_a_folder_of_runs_is_refused(
    setup, tmp_path, capsys, monkeypatch
):
    runs = tmp_path / "runs"
    trained_run(capsys, setup, runs / "a")
    (runs / "b").mkdir()
    (runs / "b" / "keep.txt").write_text("b")
    before = files_in(runs)
    code, _, err = run_cli(capsys, "train", setup["recipe"], runs, "--overwrite")
    assert code == 2 and "not a smolgrpo run" in one_error_line(err)
    assert files_in(runs) == before

    monkeypatch.chdir(runs / "b")
    code, _, err = run_cli(capsys, "train", setup["recipe"], ".", "--overwrite")
    line = one_error_line(err)
    assert code == 2 and ".: not empty and not a smolgrpo run" in line
    assert "--overwrite" not in line
    assert files_in(runs) == before


def test_overwrite_with_a_bad_model_keeps_the_old_run(setup, tmp_path, capsys):
    """The old run is deleted only after the model and the data have loaded."""
    run_dir = trained_run(capsys, setup, tmp_path / "run")
    before = files_in(run_dir)
    assert "metrics.jsonl" in before and "checkpoints/step_2/manifest.json" in before
    for bad in ("model.name=./no-such-model", f"data.source={tmp_path / 'no-data'}"):
        code, _, err = run_cli(
            capsys, "train", setup["recipe"], run_dir, "--overwrite", "--set", bad
        )
        assert code == 2 and "no such" in one_error_line(err)
        assert files_in(run_dir) == before, bad


def test_overwrite_of_a_run_holding_the_model_or_the_data_is_refused(setup, tmp_path, capsys):
    run_dir = trained_run(capsys, setup, tmp_path / "run")
    final = run_dir / "final"
    data_copy = run_dir / "my-data"
    data_copy.mkdir()
    for split in ("train", "test"):
        (data_copy / f"{split}.jsonl").write_bytes((setup["data"] / f"{split}.jsonl").read_bytes())
    before = files_in(run_dir)
    for key, value in (("model.name", final), ("data.source", data_copy)):
        code, _, err = run_cli(
            capsys, "train", setup["recipe"], run_dir, "--overwrite", "--set", f"{key}={value}"
        )
        line = one_error_line(err)
        assert code == 2 and f"holds {value}, which this run reads ({key})" in line
        assert files_in(run_dir) == before
    # The same folder given relatively, through a symlink-free other spelling.
    relative = os.path.relpath(final)
    code, _, err = run_cli(
        capsys, "train", setup["recipe"], run_dir, "--overwrite", "--set", f"model.name={relative}"
    )
    assert code == 2 and "(model.name)" in one_error_line(err)
    assert files_in(run_dir) == before


def test_overwrite_replaces_a_run_an_old_style_run_and_an_empty_folder(setup, tmp_path, capsys):
    run_dir = trained_run(capsys, setup, tmp_path / "run")
    (run_dir / "old-extra.txt").write_text("from the old run")
    trained_run(capsys, setup, run_dir, "--overwrite", "--set", "optim.max_steps=1")
    assert not (run_dir / "old-extra.txt").exists()
    assert [row["step"] for row in read_metrics(run_dir / "metrics.jsonl")] == [1]
    assert [p.name for p in list_checkpoints(run_dir)] == ["step_1"]
    assert (run_dir / RUN_MARKER).is_file() and not (run_dir / LOCK_FILE).exists()

    old_style = tmp_path / "old-style"  # a run begun before the marker file
    old_style.mkdir()
    (old_style / "config.yaml").write_text("run:\n  seed: 7\n")
    (old_style / "metrics.jsonl").write_text('{"step": 1}\n')
    assert is_run_folder(old_style)
    trained_run(capsys, setup, old_style, "--overwrite", "--set", "optim.max_steps=1")
    assert (old_style / RUN_MARKER).is_file()

    empty = tmp_path / "empty"
    empty.mkdir()
    trained_run(capsys, setup, empty, "--overwrite", "--set", "optim.max_steps=1")
    assert (empty / "final").is_dir()


def test_sft_overwrite_with_a_bad_model_keeps_the_old_run(setup, tmp_path, capsys):
    code, _, err = run_cli(
        capsys, "sft", setup["recipe"], tmp_path / "sft", "--set", "optim.max_steps=1"
    )
    assert code == 0, err
    before = files_in(tmp_path / "sft")
    code, _, err = run_cli(
        capsys,
        "sft",
        setup["recipe"],
        tmp_path / "sft",
        "--overwrite",
        "--set",
        "model.name=./nope",
    )
    assert code == 2 and "no such model" in one_error_line(err)
    assert files_in(tmp_path / "sft") == before


def test_a_new_run_into_a_folder_that_failed_to_load_leaves_no_folder(setup, tmp_path, capsys):
    run_dir = tmp_path / "new"
    code, _, err = run_cli(capsys, "train", setup["recipe"], run_dir, "--set", "model.name=./nope")
    assert code == 2 and "no such model" in one_error_line(err)
    assert not run_dir.exists()


def test_prepare_run_dir_rules(tmp_path):
    config = make_config(tmp_path)
    run_dir = tmp_path / "run"
    prepare_run_dir(run_dir, config, resume=False, overwrite=False)
    assert (run_dir / RUN_MARKER).is_file() and not (run_dir / LOCK_FILE).exists()
    only_lock = tmp_path / "only-lock"  # what a process killed at start-up leaves: empty
    only_lock.mkdir()
    (only_lock / LOCK_FILE).write_text('{"pid": 1, "host": "gone"}\n')
    prepare_run_dir(only_lock, config, resume=False, overwrite=False)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(SmolGRPOError, match="not a folder"):
        prepare_run_dir(a_file, config, resume=False, overwrite=True)


# ----------------------------------------------------------------------------- the lock
HOLDER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[2])
    from smolgrpo.runs.lock import RunLock
    lock = RunLock.acquire(sys.argv[1])
    print("locked", flush=True)
    time.sleep(600)
    """
)


@pytest.fixture
def holder():
    """Start a process that takes a folder's lock and sleeps; SIGKILLed at the end."""
    processes = []

    def start(folder: Path) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(folder), str(SRC)],
            stdout=subprocess.PIPE,
            text=True,
        )
        processes.append(process)
        assert process.stdout.readline().strip() == "locked"
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def test_lock_names_its_holder_and_is_released(tmp_path):
    with RunLock.acquire(tmp_path) as lock:
        assert lock.held and (tmp_path / LOCK_FILE).is_file()
        record = json.loads((tmp_path / LOCK_FILE).read_text())
        assert record == {"pid": os.getpid(), "host": socket.gethostname()}
        with pytest.raises(SmolGRPOError) as error:
            RunLock.acquire(tmp_path)  # another open file: flock refuses it, even here
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in str(error.value)
    assert not (tmp_path / LOCK_FILE).exists()
    RunLock.acquire(tmp_path).release()


@pytest.mark.parametrize(
    "command, flags",
    [("train", ["--resume"]), ("train", ["--overwrite"]), ("sft", ["--resume"]), ("train", [])],
)
def test_a_second_process_on_a_run_folder_gets_one_line_naming_the_holder(
    setup, tmp_path, capsys, holder, command, flags
):
    run_dir = tmp_path / "run"
    if flags:
        trained_run(capsys, setup, run_dir, "--set", "optim.max_steps=1")
    else:  # a new run: the folder the holder created is empty but for the lock
        run_dir.mkdir()
    before = files_in(run_dir)
    process = holder(run_dir)
    code, _, err = run_cli(capsys, command, setup["recipe"], run_dir, *flags)
    line = one_error_line(err)
    assert code == 2
    assert f"{run_dir}: in use by another smolgrpo process (pid {process.pid} on host " in line
    assert socket.gethostname() in line
    after = files_in(run_dir)
    after.pop(LOCK_FILE)
    assert after == {k: v for k, v in before.items() if k != LOCK_FILE}


def test_a_sigkilled_holder_leaves_no_stale_lock(setup, tmp_path, capsys, holder):
    run_dir = trained_run(capsys, setup, tmp_path / "run", "--set", "optim.max_steps=1")
    process = holder(run_dir)
    code, _, err = run_cli(capsys, "train", setup["recipe"], run_dir, "--resume")
    assert code == 2 and f"pid {process.pid}" in one_error_line(err)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert (run_dir / LOCK_FILE).is_file()  # the file stays; the kernel released the lock
    code, out, err = run_cli(
        capsys, "train", setup["recipe"], run_dir, "--resume", "--set", "optim.max_steps=2"
    )
    assert code == 0, err
    assert "resumed from" in out
    assert [row["step"] for row in read_metrics(run_dir / "metrics.jsonl")] == [1, 2]
    assert not (run_dir / LOCK_FILE).exists()


def test_the_trainer_holds_the_lock_until_training_ends(tmp_path):
    trainer = make_trainer(make_config(tmp_path, "optim.max_steps=1"))
    with pytest.raises(SmolGRPOError, match="in use by another smolgrpo process"):
        RunLock.acquire(tmp_path / "run")
    trainer.train()
    RunLock.acquire(tmp_path / "run").release()


# ----------------------------------------------------------------------------- --resume
LORA = ["--set", "model.lora=true", "--set", "model.lora_rank=4", "--set", "model.lora_alpha=8"]


def test_resume_with_a_changed_lora_rank_or_task_is_one_line_naming_the_key(
    setup, tmp_path, capsys
):
    run_dir = trained_run(capsys, setup, tmp_path / "run", "--set", "optim.max_steps=1", *LORA)
    assert recorded_config(list_checkpoints(run_dir)[-1])["model"]["lora_rank"] == 4
    before = files_in(run_dir)
    cases = [
        ("model.lora_rank=8", "model.lora_rank", "4", "8"),
        ("model.lora_target_modules=[q_proj]", "model.lora_target_modules", "", '["q_proj"]'),
        ("model.lora_alpha=16", "model.lora_alpha", "8", "16"),
        ("model.lora=false", "model.lora", "true", "false"),
        ("model.dtype=bfloat16", "model.dtype", "'auto'", "'bfloat16'"),
        (f"model.name={tmp_path}/other", "model.name", "", ""),
        ("data.task=jsonl", "data.task", "'gsm8k'", "'jsonl'"),
        ("data.train_split=other", "data.train_split", "'train'", "'other'"),
    ]
    for override, key, old, new in cases:
        code, _, err = run_cli(
            capsys, "train", setup["recipe"], run_dir, "--resume", *LORA, "--set", override
        )
        line = one_error_line(err)
        assert code == 2 and f"cannot resume with a different {key} (" in line, line
        assert old in line and new in line
        assert files_in(run_dir) == before  # config.yaml etc. untouched


def test_resume_of_a_checkpoint_without_a_recorded_config_and_another_shape_is_one_line(
    setup, tmp_path, capsys
):
    """A checkpoint written before checkpoints recorded their config: the shapes are checked
    when it loads, and the run files are not rewritten."""
    run_dir = trained_run(capsys, setup, tmp_path / "run", "--set", "optim.max_steps=1", *LORA)
    checkpoint = list_checkpoints(run_dir)[-1]
    state = json.loads((checkpoint / "state.json").read_text())
    del state["config"]
    (checkpoint / "state.json").write_text(json.dumps(state))
    manifest = json.loads((checkpoint / MANIFEST).read_text())
    manifest["files"]["state.json"] = _sha256(checkpoint / "state.json")
    (checkpoint / MANIFEST).write_text(json.dumps(manifest))
    before = files_in(run_dir)
    for override in ("model.lora_rank=8", "model.lora_target_modules=[q_proj,k_proj,v_proj]"):
        code, _, err = run_cli(
            capsys, "train", setup["recipe"], run_dir, "--resume", *LORA, "--set", override
        )
        line = one_error_line(err)
        assert code == 2 and f"{checkpoint}: checkpoint does not match the model" in line
        assert files_in(run_dir) == before


def test_resume_with_a_new_learning_rate_applies_it_and_says_so_in_one_line(
    setup, tmp_path, capsys
):
    run_dir = trained_run(capsys, setup, tmp_path / "run", "--set", "optim.max_steps=1")
    code, _, err = run_cli(
        capsys,
        "train",
        setup["recipe"],
        run_dir,
        "--resume",
        "--set",
        "optim.learning_rate=0.03",
        "--set",
        "optim.max_steps=2",
        "--set",
        "run.eval_every=0",
    )
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "changed recipe" in line]
    assert warnings == [
        "warning: resuming step 1 with a changed recipe, applied from here on: "
        "optim.learning_rate 0.01 -> 0.03, optim.max_steps 1 -> 2"
    ]
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [row["learning_rate"] for row in rows] == [0.01, 0.03]  # constant schedule
    assert "learning_rate: 0.03" in (run_dir / "config.yaml").read_text()
    state = json.loads((list_checkpoints(run_dir)[-1] / "state.json").read_text())
    assert state["config"]["optim"]["learning_rate"] == 0.03


def test_new_learning_rate_is_on_the_optimizer_after_its_state_loads(tmp_path, capsys):
    overrides = ("optim.lr_schedule=constant", "optim.max_steps=1", "run.save_every=1")
    first = make_trainer(make_config(tmp_path, *overrides))
    first.train()
    saved = {k: v.clone() for k, v in first.optimizer.state_dict()["state"][0].items()}
    resumed = make_trainer(
        make_config(tmp_path, *overrides[:1], "optim.max_steps=2", "optim.learning_rate=0.05"),
        resume=True,
    )
    assert [g["lr"] for g in resumed.optimizer.param_groups] == [0.05]
    assert resumed.scheduler.base_lrs == [0.05] and resumed.scheduler.get_last_lr() == [0.05]
    for key, value in resumed.optimizer.state_dict()["state"][0].items():
        assert torch.equal(value, saved[key]), key  # Adam's moments are the checkpoint's
    used = []
    step = resumed.optimizer.step

    def recording_step(*args, **kwargs):
        used.append(resumed.optimizer.param_groups[0]["lr"])
        return step(*args, **kwargs)

    resumed.optimizer.step = recording_step
    resumed.train()
    assert used == [0.05]
    assert "optim.learning_rate 0.01 -> 0.05" in capsys.readouterr().err


def test_cosine_schedule_continues_with_the_new_base_rate(tmp_path):
    overrides = ("optim.lr_schedule=cosine", "optim.warmup_steps=0", "run.save_every=1")
    first = make_trainer(make_config(tmp_path, *overrides, "optim.max_steps=2"))
    first.train()  # stops at max_steps 2 of ... a longer schedule below
    resumed = make_trainer(
        make_config(tmp_path, *overrides, "optim.max_steps=4", "optim.learning_rate=0.02"),
        resume=True,
    )
    # progress 2 of 4 steps: cos(pi / 2) -> factor 0.5
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(0.02 * 0.5)


def test_unchanged_resume_says_nothing_and_failed_load_rewrites_no_run_file(
    tmp_path, capsys, monkeypatch
):
    config = make_config(tmp_path, "optim.max_steps=1", "run.save_every=1")
    make_trainer(config).train()
    capsys.readouterr()
    make_trainer(config, resume=True).release_run_folder()  # never trained: unlock by hand
    assert "changed recipe" not in capsys.readouterr().err
    run_dir = tmp_path / "run"
    before = files_in(run_dir)

    def broken_load(*args, **kwargs):
        raise SmolGRPOError("cannot load")

    monkeypatch.setattr("smolgrpo.training.resume.load_checkpoint", broken_load)
    changed = make_config(tmp_path, "optim.max_steps=3", "prompt.system_prompt=Other")
    with pytest.raises(SmolGRPOError, match="cannot load"):
        make_trainer(changed, resume=True)
    after = files_in(run_dir)
    assert after == before  # config.yaml, prompt_template.json, task.json as they were


def test_resume_check_units():
    old = make_config(Path("/tmp/x")).to_dict()
    new = make_config(Path("/tmp/y"), "optim.learning_rate=0.5", "prompt.system_prompt=" + "x" * 80)
    new = new.to_dict()
    found = changes(old, new)  # run.output_dir is not compared
    assert [key for key, _, _ in found] == ["prompt.system_prompt", "optim.learning_rate"]
    assert (
        describe_changes(found) == "prompt.system_prompt changed, optim.learning_rate 0.01 -> 0.5"
    )
    check_resume_config(Path("ck"), old, new)  # nothing refused
    lora_off = make_config(Path("/tmp/x"), "model.lora_rank=4").to_dict()
    check_resume_config(Path("ck"), old, lora_off)  # no LoRA: its rank changes no shape
    relative = dict(old, model=dict(old["model"], name="./m"))
    absolute = dict(old, model=dict(old["model"], name=str(Path("m").resolve())))
    assert changes(relative, absolute) == []


def test_load_checkpoint_names_a_shape_mismatch(tmp_path):
    small = torch.nn.Sequential(torch.nn.Linear(3, 4))
    optimizer = torch.optim.AdamW(small.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0)
    path = save_checkpoint(tmp_path, 1, small, optimizer, scheduler, {"epoch": 0, "index": 0})
    other = torch.nn.Sequential(torch.nn.Linear(3, 5))
    other_optimizer = torch.optim.AdamW(other.parameters())
    other_scheduler = torch.optim.lr_scheduler.LambdaLR(other_optimizer, lambda i: 1.0)
    with pytest.raises(
        SmolGRPOError, match=r"'0.bias' has shape \[4\] in the checkpoint, \[5\] in the model"
    ):
        load_checkpoint(path, other, other_optimizer, other_scheduler)
    bigger = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    bigger_optimizer = torch.optim.AdamW(bigger.parameters())
    bigger_scheduler = torch.optim.lr_scheduler.LambdaLR(bigger_optimizer, lambda i: 1.0)
    with pytest.raises(SmolGRPOError, match="no '1.weight' in the checkpoint"):
        load_checkpoint(path, bigger, bigger_optimizer, bigger_scheduler)
