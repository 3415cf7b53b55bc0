"""`smolgrpo compare`: runs and eval folders in one table, written as markdown, JSON and curves."""

from __future__ import annotations

import json

import pytest
from _report_run import write_fake_eval, write_fake_run

from smolgrpo.cli import main as cli
from smolgrpo.reporting.compare import write_compare


def run_main(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as exit_:
        return exit_.code


def test_compare_runs_and_evals_mixed(tmp_path):
    write_fake_run(tmp_path / "a", steps=20)
    write_fake_run(tmp_path / "b", steps=10, eval_every=0)
    write_fake_eval(tmp_path / "base-eval", accuracy=0.0)
    sources, labels, rows, written = write_compare(
        [tmp_path / "a", tmp_path / "b", tmp_path / "base-eval"], tmp_path / "out", window=5
    )
    assert [(s.name, s.kind) for s in sources] == [
        ("a", "run"),
        ("b", "run"),
        ("base-eval", "eval"),
    ]
    table = dict(zip(labels, rows))
    # eval rows: a's last periodic eval, nothing for b (no eval), the eval folder's own number
    assert table["eval accuracy"] == [pytest.approx(0.5), None, 0.0]
    # training rows: means over the last 5 steps; none for an eval folder
    assert table["train accuracy"] == [
        pytest.approx(18 / 80),
        pytest.approx(8 / 80),
        None,
    ]
    assert table["steps"] == [20, 10, None]
    assert labels.index("eval accuracy") < labels.index("train accuracy")

    document = json.loads(written["json"].read_text())
    assert [s["kind"] for s in document["sources"]] == ["run", "run", "eval"]
    assert {"metric": "steps", "values": [20, 10, None], "ci95": [None] * 3} in document["rows"]
    markdown = written["md"].read_text()
    assert markdown.startswith("| metric | a (run) | b (run) | base-eval (eval) |")
    assert "| eval accuracy | 50.0% | — | 0.0% |" in markdown
    assert written["png"].read_bytes()[:4] == b"\x89PNG"


def test_compare_note_gives_the_real_number_of_averaged_steps(tmp_path):
    write_fake_run(tmp_path / "short", steps=4)
    _, _, _, written = write_compare([tmp_path / "short"], tmp_path / "out", window=5)
    markdown = written["md"].read_text()
    assert "mean over a run's last 4 logged steps" in markdown and "last 5" not in markdown
    write_fake_run(tmp_path / "long", steps=8)
    paths = [tmp_path / "long", tmp_path / "short"]
    _, _, _, written = write_compare(paths, tmp_path / "out", window=5)
    assert "a run's last logged steps (5 for long, 4 for short)" in written["md"].read_text()
    _, _, _, written = write_compare([tmp_path / "long"], tmp_path / "out", window=5)
    assert "mean over a run's last 5 logged steps" in written["md"].read_text()


def test_only_eval_folders_give_no_curves(tmp_path):
    write_fake_eval(tmp_path / "x" / "eval", accuracy=0.25)
    write_fake_eval(tmp_path / "y" / "eval", accuracy=0.5)
    sources, _, _, written = write_compare(
        [tmp_path / "x/eval", tmp_path / "y/eval"], tmp_path / "out"
    )
    assert [s.name for s in sources] == ["x/eval", "y/eval"]  # same folder names, told apart
    assert "png" not in written


def test_compare_command(tmp_path, capsys):
    write_fake_run(tmp_path / "a", steps=8)
    write_fake_eval(tmp_path / "e")
    out = tmp_path / "out"
    assert (
        run_main(["compare", str(tmp_path / "a"), str(tmp_path / "e"), "--output-dir", str(out)])
        == 0
    )
    err = capsys.readouterr().err
    assert "eval accuracy" in err and "compare.md" in err
    assert {p.name for p in out.iterdir()} == {"compare.md", "compare.json", "compare.png"}


@pytest.mark.parametrize("extra", [[], ["--smooth", "0"], ["--window", "0"]])
def test_compare_user_errors_are_one_line(tmp_path, capsys, extra):
    (tmp_path / "nothing").mkdir()
    write_fake_eval(tmp_path / "e")
    source = str(tmp_path / ("nothing" if not extra else "e"))
    assert run_main(["compare", source, *extra, "--output-dir", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")


def test_compare_shows_the_wilson_interval_of_an_eval_rate(tmp_path):
    import json as json_module

    from smolgrpo.evaluation.evaluate import wilson_interval

    folder = tmp_path / "eval-a"
    metrics = write_fake_eval(folder, accuracy=0.03)
    metrics["accuracy_ci95"] = list(wilson_interval(6, 200))
    (folder / "metrics.json").write_text(json_module.dumps(metrics))
    _, _, _, written = write_compare([folder], tmp_path / "out")
    assert "| eval accuracy | 3.0% [1.4, 6.4] |" in written["md"].read_text()
    document = json_module.loads(written["json"].read_text())
    row = next(r for r in document["rows"] if r["metric"] == "eval accuracy")
    assert row["ci95"][0] == pytest.approx([0.013820, 0.063895], abs=1e-6)
