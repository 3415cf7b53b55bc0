"""GSM8K loading: gold-answer parsing, JSONL validation with one-line errors, splits, shuffling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smolgrpo.errors import SmolGRPOError
from smolgrpo.tasks import data
from smolgrpo.tasks.data import Problem, load_problems, parse_gold_answer, read_jsonl


def row(question: str = "What is 1+1?", answer: str = "1+1=<<1+1=2>>2\n#### 2") -> dict:
    return {"question": question, "answer": answer}


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def error_of(path: Path) -> str:
    with pytest.raises(SmolGRPOError) as info:
        read_jsonl(path)
    message = str(info.value)
    assert "\n" not in message, f"error message must be one line: {message!r}"
    return message


# --------------------------------------------------------------------------- parse_gold_answer


@pytest.mark.parametrize(
    ("answer", "gold"),
    [
        ("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72", "72"),
        ("#### $1,000.", "1000"),
        ("#### -3", "-3"),
        ("#### 0.5", "0.5"),
        ("#### 109,200,000", "109200000"),
        ("first #### 1\nthen #### 7", "7"),  # the last marker wins
        ("####   42  ", "42"),
    ],
)
def test_parse_gold_answer_numbers(answer, gold):
    assert parse_gold_answer(answer) == gold


@pytest.mark.parametrize(
    "answer",
    [
        "The answer is 72",  # no ####
        "#### seventy-two",
        "#### ",
        "#### 72 dollars",
        "#### inf",  # float() accepts these, the reward's parser does not
        "#### nan",
        "#### 1e3",
        "#### 1_000",
        "#### 1,2,3",  # commas that are not thousands separators
        "#### \u0667\u0662",  # Arabic-Indic digits
    ],
)
def test_parse_gold_answer_rejects(answer):
    assert parse_gold_answer(answer) is None


# --------------------------------------------------------------------------- read_jsonl


def test_read_jsonl_valid(tmp_path):
    path = write_rows(
        tmp_path / "ok.jsonl",
        [row(" Q1? ", "a\n#### 72"), row("Q2?", "b\n#### $1,000.")],
    )
    problems = read_jsonl(path)
    assert problems == [
        Problem(question="Q1?", solution="a\n#### 72", gold="72", origin=f"{path}:1"),
        Problem(question="Q2?", solution="b\n#### $1,000.", gold="1000", origin=f"{path}:2"),
    ]


def test_read_jsonl_skips_blank_lines_and_keeps_line_numbers(tmp_path):
    path = tmp_path / "blank.jsonl"
    path.write_text("\n" + json.dumps(row("A?")) + "\n   \n\n" + json.dumps(row("B?")) + "\n\n")
    problems = read_jsonl(path)
    assert [p.question for p in problems] == ["A?", "B?"]
    assert [p.origin for p in problems] == [f"{path}:2", f"{path}:5"]


def test_read_jsonl_last_line_without_newline(tmp_path):
    path = tmp_path / "nonl.jsonl"
    path.write_text(json.dumps(row("A?")) + "\n" + json.dumps(row("B?")))
    assert [p.question for p in read_jsonl(path)] == ["A?", "B?"]


def test_read_jsonl_utf8_bom(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(row("A?")).encode() + b"\n")
    assert read_jsonl(path)[0].question == "A?"


def test_read_jsonl_malformed_json_names_file_and_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(row()) + "\n" + json.dumps(row()) + "\n{not json\n")
    message = error_of(path)
    assert "broken.jsonl:3" in message
    assert "malformed JSON" in message


def test_read_jsonl_missing_answer_field(tmp_path):
    path = tmp_path / "noanswer.jsonl"
    path.write_text(json.dumps(row()) + "\n" + json.dumps({"question": "Q?"}) + "\n")
    message = error_of(path)
    assert "noanswer.jsonl:2" in message
    assert "'answer'" in message


def test_read_jsonl_missing_question_field(tmp_path):
    path = write_rows(tmp_path / "noq.jsonl", [{"answer": "#### 1"}])
    message = error_of(path)
    assert "noq.jsonl:1" in message and "'question'" in message


def test_read_jsonl_non_string_field(tmp_path):
    path = write_rows(tmp_path / "num.jsonl", [{"question": 12, "answer": "#### 1"}])
    message = error_of(path)
    assert "num.jsonl:1" in message and "'question'" in message


def test_read_jsonl_row_not_an_object(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text("[1, 2]\n")
    message = error_of(path)
    assert "list.jsonl:1" in message and "JSON object" in message


def test_read_jsonl_answer_without_marker(tmp_path):
    path = write_rows(tmp_path / "nomark.jsonl", [row(answer="The answer is 5")])
    message = error_of(path)
    assert "nomark.jsonl:1" in message and "####" in message


def test_read_jsonl_non_numeric_gold(tmp_path):
    path = write_rows(tmp_path / "word.jsonl", [row(), row(answer="so\n#### five")])
    message = error_of(path)
    assert "word.jsonl:2" in message and "not a number" in message and "five" in message


def test_read_jsonl_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    message = error_of(path)
    assert "empty.jsonl" in message and "no problems" in message


def test_read_jsonl_only_blank_lines(tmp_path):
    path = tmp_path / "blanks.jsonl"
    path.write_text("\n\n   \n")
    assert "no problems" in error_of(path)


def test_read_jsonl_binary_file(tmp_path):
    path = tmp_path / "model.jsonl"
    path.write_bytes(b"PK\x03\x04\x00\x00\x00binary\xff\xfe\x00\n")
    message = error_of(path)
    assert "model.jsonl:1" in message and "binary" in message


def test_read_jsonl_invalid_utf8(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps(row()).encode() + b"\n" + b'{"question": "caf\xe9"}\n')
    message = error_of(path)
    assert "latin1.jsonl:2" in message and "UTF-8" in message


def test_read_jsonl_line_too_long(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MAX_LINE_BYTES", 100)
    path = tmp_path / "long.jsonl"
    path.write_text(
        json.dumps(row()) + "\n" + json.dumps(row(question="x" * 500)) + "\n" + json.dumps(row())
    )
    message = error_of(path)
    assert "long.jsonl:2" in message and "longer than 100 bytes" in message


def test_read_jsonl_line_at_the_limit_is_fine(tmp_path, monkeypatch):
    line = json.dumps(row())
    monkeypatch.setattr(data, "MAX_LINE_BYTES", len(line))
    path = tmp_path / "exact.jsonl"
    path.write_text(line + "\n" + line)  # with and without a trailing newline
    assert len(read_jsonl(path)) == 2


def test_read_jsonl_deeply_nested_json_is_a_clean_error(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text("[" * 100_000 + "\n")
    assert "deep.jsonl:1" in error_of(path)


def test_read_jsonl_huge_integer_is_a_clean_error(tmp_path):
    path = tmp_path / "bigint.jsonl"
    path.write_text('{"question": ' + "9" * 10_000 + "}\n")
    assert "bigint.jsonl:1" in error_of(path)


def test_read_jsonl_missing_file(tmp_path):
    message = error_of(tmp_path / "absent.jsonl")
    assert "absent.jsonl" in message and "cannot read" in message


# --------------------------------------------------------------------------- load_problems


@pytest.fixture
def small_dir(tmp_path) -> Path:
    folder = tmp_path / "gsm"
    folder.mkdir()
    write_rows(folder / "train.jsonl", [row(f"train {i}?", f"#### {i}") for i in range(20)])
    write_rows(folder / "test.jsonl", [row(f"test {i}?", f"#### {-i}") for i in range(5)])
    return folder


def test_load_problems_folder_picks_split(small_dir):
    train = load_problems(str(small_dir), "train")
    test = load_problems(str(small_dir), "test")
    assert [p.question for p in train] == [f"train {i}?" for i in range(20)]
    assert [p.gold for p in test] == ["0", "-1", "-2", "-3", "-4"]
    assert test[0].origin.endswith("test.jsonl:1")


def test_load_problems_file_ignores_split(small_dir):
    problems = load_problems(str(small_dir / "test.jsonl"), "train")
    assert len(problems) == 5 and problems[0].question == "test 0?"


def test_load_problems_missing_split_file(small_dir):
    with pytest.raises(SmolGRPOError, match=r"no 'validation\.jsonl'") as info:
        load_problems(str(small_dir), "validation")
    assert str(small_dir) in str(info.value)


@pytest.mark.parametrize("source", ["./nope", "/definitely/not/here", "~/nope-smolgrpo", "x.jsonl"])
def test_load_problems_nonexistent_path(source, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SmolGRPOError, match="no such file or folder") as info:
        load_problems(source)
    assert source in str(info.value)


def test_load_problems_limit(small_dir):
    assert [p.gold for p in load_problems(str(small_dir), "train", limit=3)] == ["0", "1", "2"]
    assert len(load_problems(str(small_dir), "train", limit=100)) == 20
    with pytest.raises(SmolGRPOError, match="--limit"):
        load_problems(str(small_dir), "train", limit=0)


def test_load_problems_shuffle_is_deterministic(small_dir):
    unshuffled = [p.gold for p in load_problems(str(small_dir), "train")]
    first = [p.gold for p in load_problems(str(small_dir), "train", seed=1, shuffle=True)]
    again = [p.gold for p in load_problems(str(small_dir), "train", seed=1, shuffle=True)]
    other = [p.gold for p in load_problems(str(small_dir), "train", seed=2, shuffle=True)]
    assert first == again
    assert first != other
    assert first != unshuffled
    assert sorted(first, key=int) == unshuffled  # a permutation, nothing lost


def test_load_problems_shuffle_then_limit(small_dir):
    full = [p.gold for p in load_problems(str(small_dir), "train", seed=3, shuffle=True)]
    cut = [p.gold for p in load_problems(str(small_dir), "train", limit=4, seed=3, shuffle=True)]
    assert cut == full[:4]


def test_load_problems_uses_data_dir_env(small_dir, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(small_dir))
    assert len(load_problems(None, "test")) == 5


# --------------------------------------------------------------------------- the real GSM8K


def test_real_gsm8k_sizes_and_first_gold(gsm8k_dir):
    train = load_problems(str(gsm8k_dir), "train")
    test = load_problems(str(gsm8k_dir), "test")
    assert len(train) == 7473
    assert len(test) == 1319
    assert train[0].gold == "72"
    assert train[0].question.startswith("Natalia sold clips")
    assert test[0].gold == "18"
    # every gold is something the reward's parser reads
    from smolgrpo.rewards.answers import answers_match

    assert all(answers_match(p.gold, p.gold) for p in train + test)


# --------------------------------------------------------------------------- hub ids (faked)


def test_hub_source_offline_fails_fast_with_a_hint(monkeypatch):
    import datasets

    seen = {}

    def fake_load_dataset(dataset_id, config, split):
        seen["offline"] = datasets.config.HF_HUB_OFFLINE
        raise ConnectionError("Couldn't reach the hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(data, "hub_reachable", lambda: False)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    before = datasets.config.HF_HUB_OFFLINE
    with pytest.raises(SmolGRPOError, match="cannot reach the hub") as info:
        load_problems("openai/gsm8k", "test")
    assert "--data" in str(info.value) and "\n" not in str(info.value)
    assert seen["offline"] is True  # no retries against an unreachable hub
    assert datasets.config.HF_HUB_OFFLINE == before  # restored afterwards


def test_hub_source_offline_uses_the_cache(monkeypatch):
    import datasets

    rows = [row("Cached?", "#### 9"), row("Other?", "#### 1,500")]
    monkeypatch.setattr(data, "hub_reachable", lambda: False)
    monkeypatch.setattr(datasets, "load_dataset", lambda dataset_id, config, split: rows)
    problems = load_problems("openai/gsm8k", "test")
    assert [p.gold for p in problems] == ["9", "1500"]
    assert problems[1].origin == "openai/gsm8k[test]:1"


def test_hub_source_bad_row_names_dataset_and_index(monkeypatch):
    import datasets

    rows = [row(), {"question": "Q?", "answer": "no marker"}]
    monkeypatch.setattr(data, "hub_reachable", lambda: True)
    monkeypatch.setattr(datasets, "load_dataset", lambda dataset_id, config, split: rows)
    with pytest.raises(SmolGRPOError, match=r"some/dataset\[train\]:1"):
        load_problems("some/dataset", "train")


@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_hub_reachable_respects_offline_switch(monkeypatch, value):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("offline mode must not open a socket")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert data.hub_reachable() is False


def test_hub_reachable_probes_hf_endpoint(monkeypatch):
    import socket

    probed = []

    def fake_connection(address, timeout):
        probed.append(address)
        raise OSError("unreachable")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", fake_connection)
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.example:8080")
    assert data.hub_reachable() is False
    monkeypatch.delenv("HF_ENDPOINT")
    assert data.hub_reachable() is False
    assert probed == [("mirror.example", 8080), ("huggingface.co", 443)]
