"""Every bad input through the real command line: exit 2, one `error:` line naming the culprit.

One table covers data files, recipes, model folders and the output directory. Each case runs
`smolgrpo` in-process and checks the exit status, that stderr is exactly one line and nothing
else was printed, and that the line names the file (and line) or the config key at fault. One
case runs as a real subprocess to show that no traceback reaches the user, and `--debug` brings
it back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import build_char_tokenizer, build_tiny_model

from smolgrpo.cli import main as cli
from smolgrpo.errors import SmolGRPOError

GOOD_ROW = '{"question": "What is 1+1?", "answer": "1+1=2\\n#### 2"}\n'
SMOKE_RECIPE = str(Path(__file__).parents[1] / "recipes/cpu-smoke.yaml")
ONE_GB = 1 << 30


def write_files(root: Path) -> dict[str, Path]:
    """Every input the table needs, under `root` (the 1 GB line is a sparse file)."""
    paths = {}

    def data(name: str, content: str | bytes) -> None:
        path = root / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        paths[name] = path

    data("good.jsonl", GOOD_ROW * 2)
    data("malformed.jsonl", GOOD_ROW + '{"question": "Q", "answer": \n')
    data("no_question.jsonl", '{"answer": "#### 2"}\n')
    data("no_answer.jsonl", GOOD_ROW + GOOD_ROW + '{"question": "Q"}\n')
    data("no_marker.jsonl", '{"question": "Q", "answer": "the answer is 2"}\n')
    data("not_numeric.jsonl", '{"question": "Q", "answer": "#### seven"}\n')
    data("empty.jsonl", "")
    data("binary.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00")
    data("nul.jsonl", GOOD_ROW.encode() + b"\x00\x01\x02\x03 sqlite format\n")
    huge = root / "huge_line.jsonl"
    with open(huge, "wb") as handle:  # a 1 GB line; sparse, so it costs no disk
        handle.write(b'{"question": "')
        handle.seek(ONE_GB)
        handle.write(b'", "answer": "#### 1"}\n')
    paths["huge_line.jsonl"] = huge

    def recipe(name: str, text: str) -> None:
        data(name, text)

    recipe("unknown_key.yaml", "optim:\n  learning_rat: 1.0e-5\n")
    recipe("wrong_type.yaml", "optim:\n  max_steps: ten\n")
    recipe("negative_lr.yaml", "optim:\n  learning_rate: -1.0e-5\n")
    recipe("one_generation.yaml", "sampling:\n  num_generations: 1\n")
    recipe("zero_epsilon.yaml", "grpo:\n  epsilon: 0.0\n")
    recipe("zero_max_bad_steps.yaml", "optim:\n  max_bad_steps: 0\n")

    tokenizer = build_char_tokenizer()
    model = build_tiny_model(len(tokenizer))
    no_weights = root / "no_weights"
    model.config.save_pretrained(no_weights)
    tokenizer.save_pretrained(no_weights)
    corrupt = root / "corrupt_safetensors"
    model.config.save_pretrained(corrupt)
    tokenizer.save_pretrained(corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    pickled = root / "pickle_only"
    model.config.save_pretrained(pickled)
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    paths.update(no_weights=no_weights, corrupt=corrupt, pickled=pickled)

    data("not_utf8.yaml", b"optim:\n  max_steps: 5\nrun:\n  output_dir: caf\xe9\n")
    for name, file, content in (  # a model folder whose saved prompt or task has wrong types
        ("bad_template", "prompt_template.json", {"num_few_shot": "1"}),
        ("bad_task", "task.json", {"task": "reasoning_gym", "gym_size": "1"}),
    ):
        folder = root / name
        model.config.save_pretrained(folder)  # no weights: the error must come before loading
        (folder / file).write_text(json.dumps(content))
        paths[name] = folder
    data_dir = root / "data_dir"
    data_dir.mkdir()
    (data_dir / "test.jsonl").write_text(GOOD_ROW * 2)
    earlier_eval = root / "earlier_eval"  # what `smolgrpo eval --output-dir` left
    earlier_eval.mkdir()
    (earlier_eval / "eval_config.json").write_text('{"smolgrpo_eval": 1, "settings": {}}')
    (earlier_eval / "metrics.json").write_text('{"accuracy": 0.5}')
    notes = root / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    paths.update(data_dir=data_dir, earlier_eval=earlier_eval, notes=notes)

    other_run = root / "other_run"  # a different run already lives here
    other_run.mkdir()
    (other_run / "config.yaml").write_text("run:\n  seed: 7\n")
    (other_run / "metrics.jsonl").write_text('{"step": 1}\n')
    paths["other_run"] = other_run
    return paths


def eval_data(name):
    return lambda p: ["eval", "--model", str(p["no_weights"]), "--data", str(p[name])]


def eval_model(name):
    return lambda p: ["eval", "--model", str(p[name]), "--data", str(p["good.jsonl"])]


def train_recipe(name):
    return lambda p: ["train", "--config", str(p[name]), "--print-config"]


def train_set(*overrides):
    """`train` with --set values and a model that does not exist: a config error must come
    first (before any model load), and no run folder may be made."""

    def argv(p):
        sets = [a for o in (*overrides, "model.name=/nonexistent/model") for a in ("--set", o)]
        return ["train", *sets, "--output-dir", str(p["good.jsonl"].parent / "never_made")]

    return argv


def eval_into(folder, *flags):
    """eval of a model with no weights into `--output-dir`: a refusal must come before loading."""
    return lambda p: [
        *eval_data("good.jsonl")(p), "--output-dir", str(p[folder]), *flags
    ]  # fmt: skip


# (case, argv builder, what the one line must contain: "{name}" is replaced by that path)
CASES = [
    ("malformed line", eval_data("malformed.jsonl"), ["{malformed.jsonl}:2:", "malformed JSON"]),
    ("missing question", eval_data("no_question.jsonl"), ["{no_question.jsonl}:1:", "'question'"]),
    ("missing answer", eval_data("no_answer.jsonl"), ["{no_answer.jsonl}:3:", "'answer'"]),
    ("answer without ####", eval_data("no_marker.jsonl"), ["{no_marker.jsonl}:1:", "'####"]),
    ("non-numeric gold", eval_data("not_numeric.jsonl"), ["{not_numeric.jsonl}:1:", "'seven'"]),
    ("empty file", eval_data("empty.jsonl"), ["{empty.jsonl}:", "empty file"]),
    ("binary file", eval_data("binary.jsonl"), ["{binary.jsonl}:1:", "not valid UTF-8"]),
    ("binary with NUL bytes", eval_data("nul.jsonl"), ["{nul.jsonl}:2:", "binary data"]),
    ("1 GB line", eval_data("huge_line.jsonl"), ["{huge_line.jsonl}:1:", "longer than"]),
    ("unknown key", train_recipe("unknown_key.yaml"), ["{unknown_key.yaml}:", "'optim.learning_rat'"]),
    ("wrong type", train_recipe("wrong_type.yaml"), ["{wrong_type.yaml}:", "'optim.max_steps'", "'ten'"]),
    ("negative learning rate", train_recipe("negative_lr.yaml"), ["'optim.learning_rate'", "-1e-05 (must be > 0)"]),
    ("num_generations < 2", train_recipe("one_generation.yaml"), ["'sampling.num_generations': 1 (must be >= 2)"]),
    ("epsilon <= 0", train_recipe("zero_epsilon.yaml"), ["'grpo.epsilon': 0.0 (must be > 0)"]),
    ("max_bad_steps < 1", train_recipe("zero_max_bad_steps.yaml"), ["'optim.max_bad_steps': 0 (must be >= 1)"]),
    (  # the recipe is fine: the line blames the --set, not the file
        "--set of an unknown key",
        lambda p: ["train", "--config", SMOKE_RECIPE, "--set", "optim.max_step=5", "--print-config"],
        ["error: --set optim.max_step: unknown key 'optim.max_step'", "max_steps"],
    ),
    (
        "--set of a wrong type",
        lambda p: ["train", "--config", SMOKE_RECIPE, "--set", "optim.max_steps=ten", "--print-config"],
        ["error: --set optim.max_steps: 'optim.max_steps' should be int, got 'ten'"],
    ),
    (
        "recipe does not exist",
        lambda p: ["train", "--config", str(p["good.jsonl"].parent / "nope.yaml")],
        ["nope.yaml: recipe file not found"],
    ),
    (
        "model path does not exist",
        lambda p: ["eval", "--model", str(p["good.jsonl"].parent / "nowhere"), "--data", str(p["good.jsonl"])],
        ["nowhere: no such model folder or file"],
    ),
    ("directory without weights", eval_model("no_weights"), ["{no_weights}:", "no weights found"]),
    ("corrupt safetensors", eval_model("corrupt"), ["{corrupt}:", "cannot load model"]),
    ("pickle checkpoint", eval_model("pickled"), ["{pickled}:", "pickle", "--allow-pickle"]),
    ("top_k < 0", train_set("sampling.top_k=-1"), ["'sampling.top_k': -1 (must be >= 0)"]),
    ("top_p in training", train_set("sampling.top_p=0.9"), ["'sampling.top_p': 0.9", "1.0 in training", "log-probs"]),
    ("top_k in training", train_set("sampling.top_k=20"), ["'sampling.top_k': 20", "0 in training"]),
    ("adam_beta1 = 1", train_set("optim.adam_beta1=1.0"), ["'optim.adam_beta1': 1.0 (must be in [0, 1))"]),
    ("adam_beta2 < 0", train_set("optim.adam_beta2=-0.5"), ["'optim.adam_beta2': -0.5"]),
    ("lora_dropout > 1", train_set("model.lora=true", "model.lora_dropout=1.5"), ["'model.lora_dropout': 1.5 (must be in [0, 1))"]),
    ("eval_limit 0", train_set("run.eval_every=5", "run.eval_limit=0"), ["'run.eval_limit': 0 (must be >= 1)"]),
    ("recipe not UTF-8", train_recipe("not_utf8.yaml"), ["{not_utf8.yaml}:4: not UTF-8 text"]),
    ("recipe is a folder", lambda p: ["train", "--config", str(p["notes"])], ["{notes}: a folder, not a recipe file"]),
    ("saved prompt of wrong type", eval_model("bad_template"), ["{bad_template}/prompt_template.json:", "'num_few_shot' should be a count >= 0, got '1'"]),
    ("saved task of wrong type", eval_model("bad_task"), ["{bad_task}/task.json:", "'gym_size' should be int, got '1'"]),
    ("path with console markup", lambda p: ["report", str(p["notes"]) + "/r[/x]"], ["{notes}/r[/x]: no such run directory"]),
    ("eval output holds an eval", eval_into("earlier_eval"), ["--output-dir {earlier_eval}: already holds an eval", "--resume", "--overwrite"]),
    ("eval output is the model", eval_into("no_weights", "--overwrite"), ["--output-dir {no_weights}: is the model folder this eval reads"]),
    ("eval output holds the data", lambda p: [*eval_model("no_weights")(p)[:3], "--data", str(p["data_dir"]), "--output-dir", str(p["data_dir"]), "--overwrite"], ["--output-dir {data_dir}: holds the data this eval reads"]),
    ("eval output is a run", eval_into("other_run", "--overwrite"), ["--output-dir {other_run}: a training run folder (config.yaml)"]),
    ("eval output is not an eval", eval_into("notes", "--overwrite"), ["--output-dir {notes}: not empty and not a smolgrpo eval folder", "choose a new or empty folder"]),
    ("eval --resume of a non-eval", eval_into("notes", "--resume"), ["--output-dir {notes}: not empty and not a smolgrpo eval folder"]),
    ("eval --resume with --overwrite", eval_into("earlier_eval", "--resume", "--overwrite"), ["--resume", "--overwrite", "pass one"]),
    (
        "output dir holds another run",
        lambda p: ["train", "--set", "optim.max_steps=1", "--output-dir", str(p["other_run"])],
        ["{other_run}: already holds a run", "--resume", "--overwrite"],
    ),
]  # fmt: skip


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    return write_files(tmp_path_factory.mktemp("bad-inputs"))


def expected_parts(parts: list[str], paths: dict[str, Path]) -> list[str]:
    resolved = []
    for part in parts:
        for name, path in paths.items():
            part = part.replace("{" + name + "}", str(path))
        resolved.append(part)
    return resolved


@pytest.mark.parametrize("case, argv, parts", CASES, ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_naming_the_culprit(case, argv, parts, inputs, capsys):
    assert cli.main(argv(inputs)) == 2, case
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, f"{case}: expected one line on stderr, got {captured.err!r}"
    assert lines[0].startswith("error: ") and captured.out == ""
    for part in expected_parts(parts, inputs):
        assert part in lines[0], f"{case}: {part!r} not in {lines[0]!r}"
    print(f"{case}: {lines[0]}")  # shown with -s: the message each bad input gives


def test_refusals_do_not_suggest_overwrite_and_touch_nothing(inputs, capsys):
    # A folder that is not an eval is refused without pointing at --overwrite, which would not
    # delete it either; nothing in it, and no run folder for a bad config, is touched.
    for argv in (eval_into("notes", "--overwrite"), eval_into("other_run", "--overwrite")):
        assert cli.main(argv(inputs)) == 2
        assert "--overwrite" not in capsys.readouterr().err
    assert [f.name for f in inputs["notes"].iterdir()] == ["notes.txt"]
    assert sorted(f.name for f in inputs["other_run"].iterdir()) == ["config.yaml", "metrics.jsonl"]
    assert not (inputs["good.jsonl"].parent / "never_made").exists()
    assert (inputs["no_weights"] / "config.json").is_file()
    assert not (inputs["no_weights"] / "prompt_template.json").exists()


def test_unreadable_recipe_is_one_line(tmp_path, monkeypatch, capsys):
    recipe = tmp_path / "locked.yaml"
    recipe.write_text("optim:\n  max_steps: 5\n")
    read_bytes = Path.read_bytes

    def no_permission(path):  # chmod 000 does not stop root, so the read itself fails
        if path == recipe:
            raise PermissionError(13, "Permission denied", str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", no_permission)
    assert cli.main(["train", "--config", str(recipe), "--print-config"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"error: {recipe}: cannot read the recipe (Permission denied)"]


def test_eval_overwrite_deletes_the_old_eval_only_after_the_model_loaded(inputs, tmp_path):
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "eval_config.json").write_text('{"smolgrpo_eval": 1, "settings": {}}')
    (earlier / "metrics.json").write_text('{"accuracy": 0.5}')
    argv = [*eval_data("good.jsonl")(inputs), "--output-dir", str(earlier), "--overwrite"]
    assert cli.main(argv) == 2  # the model has no weights: the old eval must survive
    assert (earlier / "metrics.json").read_text() == '{"accuracy": 0.5}'


def test_a_run_path_with_console_markup_is_printed_as_it_is(tmp_path, capsys):
    from _report_run import write_fake_run

    run = tmp_path / "r[/x]" / "[bold]run"
    write_fake_run(run, steps=3, final=True)
    assert cli.main(["report", str(run), "--no-text"]) == 0
    assert f"{run}/report/report.html" in capsys.readouterr().err.replace("\n", "")


def test_debug_shows_the_traceback_instead(inputs):
    with pytest.raises(SmolGRPOError, match="malformed JSON"):
        cli.main(["--debug", *eval_data("malformed.jsonl")(inputs)])


def test_no_traceback_in_a_real_process(inputs):
    argv = eval_data("malformed.jsonl")(inputs)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "smolgrpo.cli.main", *argv], capture_output=True, text=True, env=env
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: {inputs['malformed.jsonl']}:2: malformed JSON (Expecting value)"
    ]
    assert "Traceback" not in result.stderr + result.stdout


def test_tokenizer_without_chat_template_falls_back_with_one_warning(tmp_path, inputs, capsys):
    tokenizer = build_char_tokenizer()
    tokenizer.chat_template = None
    model_dir = tmp_path / "no-template"
    build_tiny_model(len(tokenizer)).save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    argv = ["eval", "--model", str(model_dir), "--data", str(inputs["good.jsonl"]), "--limit", "1"]
    argv += ["--max-new-tokens", "2", "--device", "cpu", "--no-progress"]
    argv += ["--output-dir", str(tmp_path / "out")]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: tokenizer has no chat template; using a plain 'role: content' template"
    ]
    samples = (tmp_path / "out/samples.jsonl").read_text()
    assert "system: " in json.loads(samples.splitlines()[0])["prompt"]
