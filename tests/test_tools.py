"""Tools beyond the calculator (generation/tools.py, config/tools.py): a user function called as
`name(arguments) =`, its result written as forced tokens, errors and slow calls answered with
text, results cut to a length, calls counted per step, tools saved with the model and used by
eval."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch
from conftest import build_char_tokenizer, build_tiny_model

from smolgrpo.cli import main as cli
from smolgrpo.config.loading import load_config
from smolgrpo.errors import SmolGRPOError
from smolgrpo.evaluation.evaluate import calculator_calls
from smolgrpo.generation import rollout
from smolgrpo.generation.tools import ToolBox, call_tool, find_call

TOOL_FILE = """
def lookup(arguments):
    return {"cat": "meow", "cow": "moo"}[arguments]

def shout(arguments):
    return arguments.upper() * 50
"""


@pytest.fixture
def tool_file(tmp_path) -> str:
    path = tmp_path / "my_tools.py"
    path.write_text(TOOL_FILE)
    return str(path)


@pytest.mark.parametrize(
    "text, call",
    [
        ("so lookup(cat) =", ("lookup", "cat")),
        ("lookup(cat)=", ("lookup", "cat")),
        ("lookup(cat) = ", ("lookup", "cat")),
        ("lookup(f(x)) =", ("lookup", "f(x)")),  # arguments may hold parentheses
        ("lookup(a) = b, lookup(c) =", ("lookup", "c")),  # the last call on the line
        ("lookup(cat) = meow", None),  # "=" must end the text
        ("mylookup(cat) =", None),  # only a whole tool name
        ("x.lookup(cat) =", None),
        ("lookup(\ncat) =", None),  # a call is on one line
        ("3 + 4 =", None),
    ],
)
def test_find_call(text, call):
    assert find_call(text, ["lookup", "shout"]) == call


def test_call_tool_results_errors_and_limits():
    assert call_tool(lambda a: a[::-1], "abc", 1.0, 100) == ("cba", False)
    assert call_tool(lambda a: 2.5, "", 1.0, 100) == ("2.5", False)  # str() of a non-string
    assert call_tool(lambda a: "x" * 50, "", 1.0, 7) == ("xxxxxxx", False)
    assert call_tool(lambda a: {}[a], "dog", 1.0, 100) == ("error: KeyError: 'dog'", True)
    assert call_tool(lambda a: {}[a], "dog", 1.0, 12) == ("error: KeyEr", True)

    def leaves(arguments):
        raise SystemExit(3)

    assert call_tool(leaves, "", 1.0, 100) == ("error: SystemExit: 3", True)
    release = threading.Event()
    try:
        assert call_tool(lambda a: release.wait(30), "", 0.05, 100) == (
            "error: timed out after 0.05s",
            True,
        )
    finally:
        release.set()  # the worker thread returns now, not 30 s later


def test_tool_box_writes_results_and_counts_calls(tool_file):
    tokenizer = build_char_tokenizer()
    tools = ToolBox(tokenizer, ["calculator", f"{tool_file}:lookup", f"{tool_file}:shout"], 1.0, 9)

    def result(text):
        return tokenizer.decode(tools.result_tokens(tokenizer.encode(text)))

    assert result("the cat says lookup(cat) =") == " meow"  # spaced as the call is
    assert result("lookup(cow)=") == "moo"
    assert result("lookup(dog) =") == " error: Ke"  # 9 characters, then the space
    assert result("shout(hi) =") == " HIHIHIHIH"
    assert result("so 3 + 4 =") == " 7"  # the calculator's short form still works
    assert result("no call here =") == ""
    assert tools.take_counts() == {
        "calls": {"calculator": 1, "lookup": 3, "shout": 1},
        "errors": {"calculator": 0, "lookup": 1, "shout": 0},
    }
    assert tools.take_counts()["calls"] == {"calculator": 0, "lookup": 0, "shout": 0}


SCRIPT = "a lookup(cat) =#####, lookup(dog) =#########."  # "#": overwritten by results
EXPECTED = "a lookup(cat) = meow, lookup(dog) = error: K."  # with tool_max_output_chars 8
REAL_SAMPLER = rollout.sample_next_tokens


def script_sampler(monkeypatch, tokenizer, script: str = SCRIPT) -> None:
    """Every row writes `script` (the real sampler still runs); never an EOS, so each generate
    runs len(script) steps and the script restarts with the next one."""
    state = {"step": 0}

    def scripted() -> int:
        character = script[state["step"] % len(script)]
        state["step"] += 1
        return tokenizer.convert_tokens_to_ids(character)

    def sample(logits, temperature, top_p=1.0, top_k=0):
        REAL_SAMPLER(logits, temperature, top_p, top_k)
        return torch.full((logits.shape[0],), scripted())

    def sample_with_log_probs(logits, temperature, top_p=1.0, top_k=0):
        from smolgrpo.generation import sampler_log_probs

        sampler_log_probs.sample_with_log_probs(logits, temperature, top_p, top_k)  # the draw
        tokens = torch.full((logits.shape[0],), scripted())
        drawn = (logits.float() / temperature).log_softmax(-1).gather(-1, tokens[:, None])
        return tokens, drawn.squeeze(-1)

    monkeypatch.setattr(rollout, "sample_next_tokens", sample)  # greedy (eval)
    monkeypatch.setattr(rollout, "sample_with_log_probs", sample_with_log_probs)  # sampled (train)


def test_decode_writes_a_user_tool_result_as_forced_tokens(monkeypatch, tool_file):
    tokenizer = build_char_tokenizer()
    script_sampler(monkeypatch, tokenizer)
    tools = ToolBox(tokenizer, [f"{tool_file}:lookup"], 1.0, 8)
    result = rollout.generate(
        build_tiny_model(len(tokenizer)),
        tokenizer,
        ["Q1", "Q2"],
        max_new_tokens=len(SCRIPT),
        calculator=tools,
    )
    assert result.responses == [EXPECTED, EXPECTED]
    expected = [index for index, character in enumerate(SCRIPT) if character == "#"]
    assert result.forced_mask[0].nonzero().flatten().tolist() == expected
    assert calculator_calls(result.forced_mask[1]) == 2
    assert tools.take_counts() == {"calls": {"lookup": 4}, "errors": {"lookup": 2}}


def test_tools_config_alias_and_bad_specs(tool_file):
    sampling = load_config(None, ["sampling.calculator=true"]).sampling
    assert sampling.tool_specs() == ["calculator"]
    sampling = load_config(None, [f"sampling.tools=['{tool_file}:lookup', calculator]"]).sampling
    assert sampling.tool_specs() == [f"{tool_file}:lookup", "calculator"]
    bad = [
        ("sampling.tools=[abacus]", "sampling.tools: unknown tool 'abacus'"),
        ("sampling.tools=['nowhere.py:f']", "sampling.tools: tool 'nowhere.py:f': no such file"),
        (f"sampling.tools=['{tool_file}:missing']", "has no 'missing'"),
        (f"sampling.tools=['{tool_file}:lookup', '{tool_file}:lookup']", "two tools are called"),
        ("sampling.tool_timeout_s=0", "sampling.tool_timeout_s"),
        ("sampling.tool_max_output_chars=0", "sampling.tool_max_output_chars"),
    ]
    for override, message in bad:
        with pytest.raises(SmolGRPOError, match=message.replace("(", r"\(")):
            load_config(None, [override])


def test_a_bad_tool_is_one_line_exit_2(tmp_path, capsys, tool_file):
    argv = ["train", "--config", str(Path(__file__).parents[1] / "recipes/cpu-smoke.yaml")]
    assert cli.main([*argv, "--set", "sampling.tools=[abacus]"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: sampling.tools: unknown tool 'abacus'")
    assert error.count("\n") == 1
    argv = ["eval", "--model", str(tmp_path), "--tools", f"calculator,{tool_file}:nope"]
    assert cli.main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: --tools: tool '") and "has no 'nope'" in error
    assert error.count("\n") == 1


def test_train_counts_calls_and_eval_uses_the_saved_tools(tmp_path, monkeypatch, tool_file):
    """A tiny train run whose sampler writes SCRIPT: the step's calls and errors per tool in
    metrics.jsonl, tools.json and the card in final/; then eval of final/ calls the same tools
    without being told, and --tools none turns them off."""
    from smolgrpo.runs.metrics_log import read_metrics
    from smolgrpo.tasks.data import Problem
    from smolgrpo.training.trainer import Trainer

    tokenizer = build_char_tokenizer()
    script_sampler(monkeypatch, tokenizer)
    spec = f"{tool_file}:lookup"
    config = load_config(None, [f"run.output_dir={tmp_path / 'run'}", "sampling.num_generations=2",
                                f"sampling.tools=[calculator, '{spec}']",
                                "sampling.tool_max_output_chars=8",
                                f"sampling.max_completion_length={len(SCRIPT)}",
                                "optim.prompts_per_step=2", "optim.max_steps=1",
                                "optim.warmup_steps=0", "prompt.prefill=''"])  # fmt: skip
    problems = [Problem(f"{i}+1", f"#### {i + 1}", str(i + 1), f"toy:{i}") for i in range(2)]
    trainer = Trainer(config, model=build_tiny_model(len(tokenizer)), tokenizer=tokenizer,
                      train_problems=problems, show_progress=False)  # fmt: skip
    trainer.train()
    (row,) = read_metrics(tmp_path / "run/metrics.jsonl")
    assert row["tools/calls"] == 8 and row["tools/calls/lookup"] == 8  # 4 rows, 2 calls each
    assert row["tools/errors"] == 4 and row["tools/errors/lookup"] == 4  # lookup(dog)
    assert row["tools/calls/calculator"] == 0 and row["tools/errors/calculator"] == 0
    assert row["tools/tokens"] == 4 * SCRIPT.count("#")
    assert "calculator_tokens" not in row  # only when the calculator is the only tool
    final = tmp_path / "run/final"
    saved = json.loads((final / "tools.json").read_text())
    assert saved == {"tools": ["calculator", spec], "syntax": "name(arguments) =",
                     "timeout_s": 5.0, "max_output_chars": 8}  # fmt: skip
    card = (final / "README.md").read_text()
    assert "- Calculator: on" in card and "- Tools: `" in card and "my_tools.py:lookup" in card

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"question": f"{i}+1", "answer": f"#### {i + 1}"}) + "\n"
                            for i in range(3)))  # fmt: skip
    argv = ["eval", "--model", str(final), "--data", str(data), "--split", "data", "--no-progress",
            "--max-new-tokens", str(len(SCRIPT)), "--batch-size", "3"]  # fmt: skip
    assert cli.main([*argv, "--output-dir", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert metrics["tools"] == ["calculator", spec] and metrics["mean_tool_calls"] == 2
    records = (tmp_path / "eval/samples.jsonl").read_text().splitlines()
    assert [json.loads(line)["completion"] for line in records] == [EXPECTED] * 3
    assert cli.main([*argv, "--output-dir", str(tmp_path / "off"), "--tools", "none"]) == 0
    metrics = json.loads((tmp_path / "off/metrics.json").read_text())
    assert "tools" not in metrics and "mean_tool_calls" not in metrics
    argv += ["--output-dir", str(tmp_path / "calc"), "--tools", "calculator"]
    assert cli.main(argv) == 0
    metrics = json.loads((tmp_path / "calc/metrics.json").read_text())
    assert metrics["tools"] == ["calculator"] and metrics["mean_calculator_calls"] == 0


def test_the_units_example_data_and_tool(tmp_path):
    """examples/units: the committed data is what make_data.py writes, and every worked step is
    the tool's own answer; a bad request is an error the model reads."""
    import importlib.util

    example = Path(__file__).parents[1] / "examples/units"
    spec = importlib.util.spec_from_file_location("units_make_data", example / "make_data.py")
    make_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_data)
    assert make_data.main([str(tmp_path)]) == 0
    for split in ("train", "test"):
        assert (tmp_path / f"{split}.jsonl").read_bytes() == (
            example / f"{split}.jsonl"
        ).read_bytes()
    rows = [json.loads(line) for path in tmp_path.glob("*.jsonl") for line in path.open()]
    convert = make_data.unit_tools.convert
    assert len(rows) == 425
    for row in rows:
        name, arguments = find_call(row["steps"].rpartition(" ")[0], ["convert"])
        assert name == "convert" and convert(arguments) == row["result"]
    assert convert("6 quibs in snibs") == "18" and convert("1 snib to flink") == "0.5714"
    tools = ToolBox(build_char_tokenizer(), [f"{example}/unit_tools.py:convert"], 1.0, 200)
    assert call_tool(tools.functions["convert"], "3 parsecs to zorb", 1.0, 200) == (
        "error: ValueError: unknown unit 'parsecs' (known: zorb, snib, flink, quib, blort, garn)",
        True,
    )


def test_published_tools_name_no_local_folder():
    from smolgrpo.reporting.public_paths import public_tool_fields

    saved = {"tools": ["calculator", "/home/me/secret/my_tools.py:lookup", "pkg.mod:f"]}
    assert public_tool_fields(saved)["tools"] == ["calculator", "my_tools.py:lookup", "pkg.mod:f"]
