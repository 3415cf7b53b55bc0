"""`smolgrpo report`: summary numbers, plots, a self-contained HTML page that escapes model text."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from _report_run import HOSTILE, SAMPLE_STEPS, write_fake_eval, write_fake_run

from smolgrpo.cli import main as cli
from smolgrpo.reporting.report import (
    format_value,
    moving_average,
    print_summary,
    read_samples,
    summarize_run,
    write_report,
)

ALL_PLOTS = {"reward", "accuracy_format", "length", "kl_clip", "optimizer", "throughput"}


def run_main(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as exit_:
        return exit_.code


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


# ----------------------------------------------------------------------------- numbers
def test_summary_means_match_a_hand_computation(tmp_path):
    rows = write_fake_run(tmp_path / "run", steps=20)
    summary = summarize_run(rows, window=5)
    by_metric = {item["metric"]: item for item in summary["metrics"]}
    assert summary["first_steps"] == [1, 5] and summary["last_steps"] == [16, 20]
    # reward/correctness = step / 80 in the fake run: (1+...+5)/5/80 and (16+...+20)/5/80
    assert by_metric["reward/correctness"]["first"] == pytest.approx(3 / 80)
    assert by_metric["reward/correctness"]["last"] == pytest.approx(18 / 80)
    assert by_metric["accuracy"]["last"] == pytest.approx(18 / 80)
    assert by_metric["reward/xml_count"]["last"] == pytest.approx(18 / 20)  # step / 20
    assert by_metric["completion_length_mean"]["first"] == pytest.approx(150 - 4 * 3)
    assert summary["eval_step"] == 20 and summary["eval"]["accuracy"] == pytest.approx(0.5)


def test_summary_of_an_sft_run_has_its_loss_and_token_accuracy():
    rows = [
        {"step": s, "loss": 2.0 / s, "token_accuracy": s / 10, "grad_norm": 1.0}
        for s in (1, 2, 3, 4)
    ]
    summary = summarize_run(rows, window=2)
    by_metric = {item["metric"]: item for item in summary["metrics"]}
    assert [m["metric"] for m in summary["metrics"]][:2] == ["loss", "token_accuracy"]
    assert by_metric["loss"]["first"] == pytest.approx((2.0 + 1.0) / 2)
    assert by_metric["token_accuracy"]["last"] == pytest.approx(0.35)
    # a GRPO run's surrogate loss stays out of its summary, as before
    grpo = [{"step": 1, "loss": 0.1, "reward_mean": 0.5}]
    assert "loss" not in {m["metric"] for m in summarize_run(grpo, window=1)["metrics"]}


def test_summary_with_fewer_steps_than_the_window(tmp_path):
    rows = write_fake_run(tmp_path / "run", steps=3, eval_every=0)
    summary = summarize_run(rows, window=5)
    assert summary["first_steps"] == [1, 3] == summary["last_steps"]
    assert summary["eval_step"] is None and summary["eval"] == {}
    assert summary["single_window"] and not summarize_run(rows, window=2)["single_window"]


def test_fewer_steps_than_the_window_show_one_column(tmp_path):
    from rich.console import Console

    write_fake_run(tmp_path / "run", steps=4, eval_every=0)
    summary = write_report(tmp_path / "run", window=5)
    html = summary["paths"]["html"].read_text()
    assert html.count("<th>steps 1–4</th>") == 1 and "<th>change</th>" not in html
    assert "Means over all 4 logged steps" in html
    console = Console(record=True, width=100)
    print_summary(console, summary)
    header = next(line for line in console.export_text().splitlines() if "steps" in line)
    assert header.count("steps 1-4") == 1
    # enough steps for two windows: both columns and the change
    html = write_report(tmp_path / "run", window=2)["paths"]["html"].read_text()
    assert "<th>steps 1–2</th><th>steps 3–4</th><th>change</th>" in html


def test_metrics_constant_by_construction_get_a_note_not_a_plot(tmp_path):
    write_fake_run(tmp_path / "run", steps=6)
    config_path = tmp_path / "run/config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["grpo"].update(beta=0.0, num_iterations=1)
    config_path.write_text(yaml.safe_dump(config))
    summary = write_report(tmp_path / "run")
    assert set(summary["notes"]) == {"kl", "clip_fraction"}
    assert "num_iterations 1" in summary["notes"]["clip_fraction"]
    assert "grpo.beta is 0" in summary["notes"]["kl"]
    assert "kl_clip" not in summary["paths"]["plots"]  # both panels would be flat: no figure
    assert {m["metric"] for m in summary["metrics"]}.isdisjoint({"kl", "clip_fraction"})
    html = summary["paths"]["html"].read_text()
    assert "<code>clip_fraction</code>: 0 by construction" in html
    assert "Not plotted: kl, not computed" in html
    # with several iterations the ratio moves: the clip fraction is plotted again
    config["grpo"]["num_iterations"] = 2
    config_path.write_text(yaml.safe_dump(config))
    summary = write_report(tmp_path / "run")
    assert set(summary["notes"]) == {"kl"} and "kl_clip" in summary["paths"]["plots"]


def test_moving_average_is_trailing():
    assert moving_average([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert moving_average([2.0, 4.0], 1) == [2.0, 4.0]
    assert moving_average([], 3) == []


def test_format_value():
    assert format_value("accuracy", 0.25) == "25.0%"
    assert format_value("eval/truncation_rate", 0.5) == "50.0%"
    assert format_value("tokens_per_s", 1234.5) == "1,234"
    assert format_value("learning_rate", 1e-5) == "1.00e-05"
    assert format_value("reward_mean", 0.5) == "0.500"
    assert format_value("kl", None) == "—"


def test_read_samples_skips_broken_lines(tmp_path):
    folder = tmp_path / "samples"
    folder.mkdir()
    (folder / "step_3.jsonl").write_text('{"completions": []}\n{oops\n[1]\n')
    (folder / "step_x.jsonl").write_text('{"completions": []}\n')
    assert read_samples(folder) == {3: [{"completions": []}]}


# ----------------------------------------------------------------------------- files
def test_report_writes_every_plot_summary_and_html(tmp_path):
    write_fake_run(tmp_path / "run", steps=20)
    summary = write_report(tmp_path / "run", smooth=3)
    plots = summary["paths"]["plots"]
    assert set(plots) == ALL_PLOTS
    for path in plots.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert json.loads((tmp_path / "run/report/summary.json").read_text())["window"] == 5
    assert (tmp_path / "run/report/report.html").is_file()


def test_plots_skip_metrics_that_were_not_logged(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"step": s, "reward_mean": s / 10, "kl": 0.0} for s in range(1, 6)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = write_report(run)
    assert set(summary["paths"]["plots"]) == {"reward"}  # KL is all zero: beta = 0, no plot
    html = summary["paths"]["html"].read_text()
    assert "No samples were logged" in html


def test_html_is_self_contained(tmp_path):
    write_fake_run(tmp_path / "run", steps=20)
    html = write_report(tmp_path / "run")["paths"]["html"].read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)
    assert "<link" not in html and "@import" not in html and "url(" not in html
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', html)
    assert len(sources) == len(ALL_PLOTS)
    assert all(source.startswith("data:image/png;base64,") for source in sources)
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert re.findall(r"<script", html, re.IGNORECASE) == ["<script"]  # ours, inline


def test_model_text_is_escaped(tmp_path):
    write_fake_run(tmp_path / "run", steps=20)
    html = write_report(tmp_path / "run")["paths"]["html"].read_text()
    assert HOSTILE not in html and "<img src=x" not in html and "<b>bold?</b>" not in html
    assert "&lt;script&gt;document.title=&quot;pwned&quot;&lt;/script&gt;" in html
    assert "&lt;b&gt;bold?&lt;/b&gt;" in html  # the question
    assert "Answer &lt;/pre&gt;&lt;script&gt;x()&lt;/script&gt;" in html  # the config's prompt


def test_completions_browser_markup(tmp_path):
    write_fake_run(tmp_path / "run", steps=20)
    html = write_report(tmp_path / "run")["paths"]["html"].read_text()
    options = re.findall(r'<option value="(\d+)">', html)
    assert options == [str(step) for step in SAMPLE_STEPS]
    blocks = re.split(r'<div class="step" ', html)[1:]
    assert len(blocks) == len(SAMPLE_STEPS)
    for block in blocks:
        assert block.count('<li class="completion') == 8  # 2 prompts x G = 4
        assert block.count('<li class="completion correct"') == 2
        assert "extracted <code>10</code>" in block and "gold <code>10</code>" in block


def test_no_text_leaves_problems_and_completions_out(tmp_path):
    write_fake_run(tmp_path / "run", steps=20)
    full = write_report(tmp_path / "run", tmp_path / "full")["paths"]["html"].read_text()
    html = write_report(tmp_path / "run", tmp_path / "bare", include_text=False)
    html = html["paths"]["html"].read_text()
    assert "bold?" in full and '<li class="completion' in full
    assert "bold?" not in html and '<li class="completion' not in html
    assert "smolgrpo report --no-text" in html and "<img" in html  # the plots stay


# ----------------------------------------------------------------------------- the command
def test_report_command_with_eval_updates_report_and_card(tmp_path, capsys):
    write_fake_run(tmp_path / "run", steps=20, final=True)
    write_fake_eval(tmp_path / "eval", accuracy=0.375, measured=tmp_path / "run/final")
    argv = ["report", str(tmp_path / "run"), "--smooth", "3", "--eval", str(tmp_path / "eval")]
    assert run_main(argv) == 0
    err = capsys.readouterr().err
    assert "report.html" in err and "model card" in err
    html = (tmp_path / "run/report/report.html").read_text()
    assert "37.5%" in html
    card = (tmp_path / "run/final/README.md").read_text()
    assert "| `accuracy` | 37.5% |" in card
    assert (tmp_path / "run/final/eval_results.json").is_file()


@pytest.mark.parametrize(
    ("make", "extra", "expected"),
    [
        (None, [], "no such run directory"),
        ("empty", [], "no metrics.jsonl"),
        ("run", ["--smooth", "0"], "--smooth"),
        ("run", ["--window", "0"], "--window"),
        ("run", ["--eval", "/nonexistent/eval"], "metrics.json"),
    ],
)
def test_report_user_errors_are_one_line(tmp_path, capsys, make, extra, expected):
    target = tmp_path / "target"
    if make == "empty":
        target.mkdir()
    elif make == "run":
        write_fake_run(target, steps=3)
    assert run_main(["report", str(target), *extra]) == 2
    assert expected in one_error_line(capsys)
