"""`smolgrpo push`: the dry run lists exactly what the upload sends; the upload itself is a
recording fake (no test touches the hub)."""

from __future__ import annotations

import json
import os

import huggingface_hub
import pytest
import yaml
from _report_run import write_fake_run

from smolgrpo.cli import main as cli
from smolgrpo.reporting.model_card import refresh_model_card


def run_main(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as exit_:
        return exit_.code


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


class RecordingApi:
    """Stands in for HfApi: records calls, or fails like an unreachable hub (at `fail_at`)."""

    calls: list = []
    fail: Exception | None = None
    fail_at = "create_repo"

    def create_repo(self, repo_id, **kwargs):
        if RecordingApi.fail and RecordingApi.fail_at == "create_repo":
            raise RecordingApi.fail
        RecordingApi.calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}"

    def create_commit(self, repo_id, operations, **kwargs):
        if RecordingApi.fail and RecordingApi.fail_at == "create_commit":
            raise RecordingApi.fail
        RecordingApi.calls.append(("create_commit", repo_id, list(operations), kwargs))

    def upload_folder(self, **kwargs):  # sends whatever the folder holds: must not be used
        raise AssertionError("upload_folder sends dot-files and follows symlinks")


def sent_files(hub) -> dict[str, bytes]:
    """path in repo -> the bytes the one recorded commit sends."""
    (commit,) = [call for call in hub.calls if call[0] == "create_commit"]
    sent = {}
    for operation in commit[2]:
        data = operation.path_or_fileobj
        sent[operation.path_in_repo] = data if isinstance(data, bytes) else open(data, "rb").read()
    return sent


def dry_run_files(out: str) -> list[str]:
    """The paths a dry run lists as uploaded (lines 'SIZE UNIT  path')."""
    files = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] in ("B", "KB", "MB", "GB"):
            files.append(parts[2])
    return files


@pytest.fixture
def hub(monkeypatch):
    RecordingApi.calls, RecordingApi.fail, RecordingApi.fail_at = [], None, "create_repo"
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test_token")
    return RecordingApi


@pytest.fixture
def run_dir(tmp_path):
    write_fake_run(tmp_path / "run", steps=6, final=True)
    refresh_model_card(tmp_path / "run")
    return tmp_path / "run"


def test_dry_run_lists_files_with_sizes_and_uploads_nothing(run_dir, hub, capsys):
    card_before = (run_dir / "final/README.md").read_text()
    assert run_main(["push", str(run_dir), "--repo-id", "me/smol", "--dry-run"]) == 0
    out = capsys.readouterr().out
    for name in ("config.json", "model.safetensors", "prompt_template.json", "README.md"):
        assert name in out
    assert "2.0 KB  model.safetensors" in out
    assert "would upload 4 files" in out and "nothing was uploaded" in out
    assert hub.calls == []
    assert (run_dir / "final/README.md").read_text() == card_before


def test_push_uploads_final_with_the_repo_id_in_the_card(run_dir, hub, capsys):
    assert run_main(["push", str(run_dir), "--repo-id", "me/smol", "--private"]) == 0
    assert hub.calls[0] == (
        "create_repo",
        "me/smol",
        {"private": True, "exist_ok": True, "repo_type": "model"},
    )
    _, repo_id, operations, options = hub.calls[1]
    assert repo_id == "me/smol" and options["repo_type"] == "model"
    sent = sent_files(hub)
    assert sorted(sent) == [
        "README.md", "config.json", "model.safetensors", "prompt_template.json"
    ]  # fmt: skip
    assert sent["model.safetensors"] == (run_dir / "final/model.safetensors").read_bytes()
    assert b'model_id = "me/smol"' in sent["README.md"]
    assert (run_dir / "final/README.md").read_bytes() == sent["README.md"]  # after the upload
    assert "https://huggingface.co/me/smol" in capsys.readouterr().out


def test_no_token_is_one_line(run_dir, hub, monkeypatch, capsys):
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    assert run_main(["push", str(run_dir), "--repo-id", "me/smol"]) == 2
    assert "no Hugging Face token" in one_error_line(capsys)
    assert hub.calls == []


def test_unreachable_hub_is_one_line(run_dir, hub, capsys):
    hub.fail = ConnectionError("Failed to resolve 'huggingface.co'\nmore detail")
    assert run_main(["push", str(run_dir), "--repo-id", "me/smol"]) == 2
    line = one_error_line(capsys)
    assert "push to me/smol failed: Failed to resolve 'huggingface.co'" in line


@pytest.mark.parametrize(
    ("repo_id", "expected"), [("no-slash", "USER/NAME"), ("a/b/c", "USER/NAME")]
)
def test_bad_repo_id_is_one_line(run_dir, hub, capsys, repo_id, expected):
    assert run_main(["push", str(run_dir), "--repo-id", repo_id, "--dry-run"]) == 2
    assert expected in one_error_line(capsys)


def test_run_without_final_is_one_line(tmp_path, hub, capsys):
    write_fake_run(tmp_path / "run", steps=3)
    assert run_main(["push", str(tmp_path / "run"), "--repo-id", "me/x", "--dry-run"]) == 2
    assert "no trained model" in one_error_line(capsys)


@pytest.fixture
def cluttered_run(run_dir, tmp_path):
    """final/ with what must never be uploaded next to the model: a dot-file, a dot-folder, a
    symlink to a secret outside the run, a symlinked folder; and absolute local paths in the
    config (model, data, reward plug-in), task.json and eval_results.json."""
    final = run_dir / "final"
    (final / ".env").write_text("HF_TOKEN=hf_secret\n")
    (final / ".cache").mkdir()
    (final / ".cache/blob").write_text("cached")
    secret = tmp_path / "secret.txt"
    secret.write_text("private notes")
    os.symlink(secret, final / "notes.txt")
    os.symlink(tmp_path, final / "linked")
    (final / "extra").mkdir()
    (final / "extra/vocab.txt").write_text("a b c")
    data, plugin = tmp_path / "home/alice/gsm8k", tmp_path / "home/alice/my_rewards.py"
    data.mkdir(parents=True)
    plugin.write_text("def r(completions, golds):\n    return [0.0] * len(completions)\n")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["model"]["name"] = str(tmp_path / "home/alice/runs/sft/final")
    config["data"]["source"] = str(data)
    config["rewards"]["weights"][f"{plugin}:r"] = 1.0
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (final / "README.md").unlink()  # the card names the data the run resolved: write it anew
    task = {"task": "gsm8k", "source": str(data), "train_split": "train"}
    (final / "task.json").write_text(json.dumps(task))
    results = {"accuracy": 0.5, "model": str(final), "task": f"JSONL `{data}/q.jsonl`"}
    (final / "eval_results.json").write_text(json.dumps(results))
    return run_dir


SENT = [
    "README.md",
    "config.json",
    "eval_results.json",
    "extra/vocab.txt",
    "model.safetensors",
    "prompt_template.json",
    "task.json",
]


def test_dry_run_lists_exactly_what_the_upload_sends(cluttered_run, hub, capsys):
    argv = ["push", str(cluttered_run), "--repo-id", "me/smol"]
    assert run_main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert dry_run_files(out) == SENT
    for left_out in (".env", ".cache/", "notes.txt", "linked/"):
        assert f"skipped  {left_out} (" in out
    assert hub.calls == []
    assert run_main(argv) == 0
    assert sorted(sent_files(hub)) == SENT  # the same list, in the one commit


def test_published_files_name_no_absolute_local_path(cluttered_run, hub, tmp_path):
    assert run_main(["push", str(cluttered_run), "--repo-id", "me/smol"]) == 0
    sent = sent_files(hub)
    for name, data in sent.items():
        assert str(tmp_path).encode() not in data, name
        assert b"hf_secret" not in data and b"private notes" not in data
    card = sent["README.md"].decode()
    assert "`sft/final`" in card  # the base model: another run's final/, by its run's name
    assert "`gsm8k/train.jsonl`" in card  # the data folder by its name
    assert "`my_rewards.py:r`" in card  # the reward plug-in by its file name
    assert json.loads(sent["task.json"])["source"] == "gsm8k"
    results = json.loads(sent["eval_results.json"])
    assert results["model"] == "final" and results["task"] == "JSONL `q.jsonl`"
    # task.json on disk keeps the path that `eval --model final/` reads its data from
    assert json.loads((cluttered_run / "final/task.json").read_text())["source"].startswith("/")


@pytest.mark.parametrize("fail_at", ["create_repo", "create_commit"])
def test_card_is_rewritten_only_after_the_upload_succeeded(run_dir, hub, capsys, fail_at):
    card_before = (run_dir / "final/README.md").read_text()
    hub.fail, hub.fail_at = ConnectionError("Connection reset by peer"), fail_at
    assert run_main(["push", str(run_dir), "--repo-id", "me/smol"]) == 2
    assert "push to me/smol failed: Connection reset by peer" in one_error_line(capsys)
    assert (run_dir / "final/README.md").read_text() == card_before
    assert "me/smol" not in card_before
