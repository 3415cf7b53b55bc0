"""The `smolgrpo` command line: help, one-line user errors with exit 2, an end-to-end eval."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from smolgrpo.cli import main as cli

EVAL_FLAGS = ["--model", "--data", "--split", "--limit", "--num-samples", "--output-dir"]


@pytest.fixture
def small_data(tmp_path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    rows = [
        {"question": f"What is {i}+1?", "answer": f"{i}+1={i + 1}\n#### {i + 1}"} for i in range(3)
    ]
    (folder / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def run_main(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as exit_:  # argparse exits for --help and usage errors
        return exit_.code


def error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, f"expected exactly one line on stderr, got {captured.err!r}"
    assert lines[0].startswith("error: ")
    assert captured.out == ""
    return lines[0]


def test_top_level_help(capsys):
    assert run_main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: smolgrpo" in out
    assert "eval" in out and "--version" in out


def test_eval_help_lists_the_flags(capsys):
    assert run_main(["eval", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in EVAL_FLAGS + ["--max-new-tokens", "--temperature", "--batch-size"]:
        assert flag in out, flag


def test_no_command_prints_help_and_exits_2(capsys):
    assert run_main([]) == 2
    assert "usage: smolgrpo" in capsys.readouterr().out


def test_version(capsys):
    from smolgrpo import __version__

    assert run_main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"smolgrpo {__version__}"


def test_missing_model_dir_is_one_error_line(gsm8k_dir, capsys):
    argv = ["eval", "--model", "/nonexistent/dir", "--data", str(gsm8k_dir), "--limit", "1"]
    assert run_main(argv) == 2
    assert error_line(capsys) == "error: /nonexistent/dir: no such model folder or file"


def test_pickle_only_model_is_refused(tmp_path, small_data, tiny_model, capsys):
    import torch

    model_dir = tmp_path / "pickled"
    tiny_model.config.save_pretrained(model_dir)
    torch.save(tiny_model.state_dict(), model_dir / "pytorch_model.bin")
    argv = ["eval", "--model", str(model_dir), "--data", str(small_data)]
    assert run_main(argv) == 2
    line = error_line(capsys)
    assert str(model_dir) in line and "--allow-pickle" in line


def test_num_samples_without_temperature_is_a_user_error(
    tmp_path, small_data, tiny_model, char_tokenizer, capsys
):
    model_dir = tmp_path / "tiny"
    tiny_model.save_pretrained(model_dir, safe_serialization=True)
    char_tokenizer.save_pretrained(model_dir)
    argv = ["eval", "--model", str(model_dir), "--data", str(small_data), "--num-samples", "2"]
    argv += ["--device", "cpu", "--output-dir", str(tmp_path / "out"), "--no-progress"]
    assert run_main(argv) == 2
    line = capsys.readouterr().err.splitlines()[-1]
    assert line.startswith("error: ") and "--temperature" in line
    assert not (tmp_path / "out").exists()


def test_eval_tiny_model_in_process(tmp_path, small_data, tiny_model, char_tokenizer, capsys):
    model_dir = tmp_path / "tiny"
    tiny_model.save_pretrained(model_dir, safe_serialization=True)
    char_tokenizer.save_pretrained(model_dir)
    out = tmp_path / "out"
    argv = ["eval", "--model", str(model_dir), "--data", str(small_data), "--limit", "2"]
    argv += ["--max-new-tokens", "3", "--num-samples", "2", "--temperature", "1.0"]
    argv += ["--device", "cpu", "--output-dir", str(out), "--no-progress"]
    assert run_main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_problems"] == 2 and metrics["num_samples"] == 2
    assert metrics["model"] == str(model_dir) and metrics["split"] == "test"
    assert "pass@2" in metrics
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [s["gold"] for s in samples] == ["1", "1", "2", "2"]
    assert all(s["completion"].startswith("<reasoning>\n") for s in samples)
    assert "wrote" in capsys.readouterr().err


def test_bad_data_file_is_one_error_line_naming_the_file(tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"question": "Q?", "answer": "#### 1"}\n{oops\n')
    argv = ["eval", "--model", str(tmp_path / "no-model"), "--data", str(data), "--limit", "1"]
    assert run_main(argv) == 2
    line = error_line(capsys)
    assert f"{data}:2" in line and "malformed JSON" in line


def test_missing_data_path(tmp_path, capsys):
    argv = ["eval", "--model", "embedded", "--data", str(tmp_path / "none"), "--limit", "1"]
    assert run_main(argv) == 2
    assert str(tmp_path / "none") in error_line(capsys)


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--batch-size", "0"), ("--max-new-tokens", "0"), ("--num-samples", "0"), ("--limit", "0")],
)
def test_non_positive_numbers_exit_2(small_data, capsys, flag, value):
    argv = ["eval", "--model", "/nonexistent/dir", "--data", str(small_data), flag, value]
    assert run_main(argv) == 2
    assert flag in error_line(capsys)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--temperature", "-1"], "--temperature must be >= 0, got -1.0"),
        (["--temperature", "1", "--top-p", "0"], "--top-p must be in (0, 1], got 0.0"),
        (["--num-samples", "2"], "pass@k with --num-samples > 1 needs --temperature > 0"),
    ],
)
def test_bad_sampling_flags_are_errors_naming_the_flags(small_data, capsys, flags, message):
    argv = ["eval", "--model", "/nonexistent/dir", "--data", str(small_data), *flags]
    assert run_main(argv) == 2
    assert error_line(capsys) == f"error: {message}"


def test_bad_device_is_one_error_line(small_data, capsys):
    argv = ["eval", "--model", "/nonexistent/dir", "--data", str(small_data), "--device", "gpu"]
    assert run_main(argv) == 2
    assert "gpu" in error_line(capsys)


def test_unknown_flag_is_a_usage_error(capsys):
    assert run_main(["eval", "--no-such-flag"]) == 2
    assert "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["smolgrpo", "smolgrpo.cli.main"])
def test_python_dash_m_entry_point(module):
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "usage: smolgrpo" in result.stdout


@pytest.mark.integration
def test_eval_embedded_end_to_end(gsm8k_dir, tmp_path):
    output_dir = tmp_path / "eval"
    command = [
        sys.executable,
        "-m",
        "smolgrpo.cli.main",
        "eval",
        "--model",
        "embedded",
        "--data",
        str(gsm8k_dir),
        "--limit",
        "4",
        "--max-new-tokens",
        "48",
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--output-dir",
        str(output_dir),
        "--no-progress",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr

    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["num_problems"] == 4
    assert metrics["num_samples"] == 1
    assert metrics["model"] == "embedded" and metrics["split"] == "test"
    assert metrics["max_new_tokens"] == 48
    for key in [
        "accuracy",
        "accuracy_last_number",
        "strict_format_rate",
        "soft_format_rate",
        "truncation_rate",
    ]:
        assert 0.0 <= metrics[key] <= 1.0, key
    assert 0 < metrics["mean_completion_tokens"] <= 48

    lines = (output_dir / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 4
    samples = [json.loads(line) for line in lines]
    test_rows = [json.loads(line) for line in (Path(gsm8k_dir) / "test.jsonl").open()][:4]
    for sample, row in zip(samples, test_rows, strict=True):
        assert row["question"].strip() in sample["prompt"]
        assert sample["prompt"].endswith("<|im_start|>assistant\n<reasoning>\n")
        assert sample["completion"].startswith("<reasoning>")
        assert sample["gold"] == row["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        assert 1 <= sample["completion_tokens"] <= 48
    template = json.loads((output_dir / "prompt_template.json").read_text())
    assert template["prefill"] == "<reasoning>\n"
