"""`smolgrpo push`: the dry run lists files; the real path is mocked (no test touches the hub)."""

from __future__ import annotations

import huggingface_hub
import pytest
from _report_run import write_fake_run

from smolgrpo import cli
from smolgrpo.model_card import refresh_model_card


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
    """Stands in for HfApi: records calls, or fails like an unreachable hub."""

    calls: list = []
    fail: Exception | None = None

    def create_repo(self, repo_id, **kwargs):
        if RecordingApi.fail:
            raise RecordingApi.fail
        RecordingApi.calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kwargs):
        RecordingApi.calls.append(("upload_folder", kwargs))


@pytest.fixture
def hub(monkeypatch):
    RecordingApi.calls, RecordingApi.fail = [], None
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
    upload = hub.calls[1][1]
    assert upload["folder_path"] == str(run_dir / "final") and upload["repo_id"] == "me/smol"
    assert 'model_id = "me/smol"' in (run_dir / "final/README.md").read_text()
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
