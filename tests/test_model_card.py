"""The model card train writes into final/, and its refresh from an eval folder."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import yaml
from _report_run import write_fake_eval, write_fake_run

from smolgrpo.config.loading import load_config
from smolgrpo.errors import SmolGRPOError
from smolgrpo.reporting.model_card import build_model_card, refresh_model_card
from smolgrpo.runs.metrics_log import read_metrics


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_card_has_recipe_results_limitations_and_usage(tmp_path):
    rows = write_fake_run(tmp_path / "run", steps=20)
    config = load_config(None, ["model.name=embedded", "optim.max_steps=20"]).to_dict()
    card = build_model_card(config, rows, repo_id="me/smol-grpo")
    metadata = front_matter(card)
    assert metadata["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert metadata["library_name"] == "transformers" and "openai/gsm8k" in metadata["datasets"]
    assert "| `correctness` | 2.0 |" in card and "| `strict_format` | 0.5 |" in card
    assert "| metric | steps 1-5 | steps 16-20 |" in card
    assert "| `accuracy` | 3.8% | 22.5% |" in card  # step / 80, averaged by hand
    assert "Periodic evaluation at step 20" in card
    assert "## Limitations" in card
    assert 'model_id = "me/smol-grpo"' in card and "AutoModelForCausalLM.from_pretrained" in card


def data_line(card: str) -> str:
    return next(line for line in card.splitlines() if line.startswith("- Data: "))


def test_card_names_the_data_the_run_used(tmp_path, monkeypatch):
    folder = tmp_path / "gsm8k"
    folder.mkdir()
    monkeypatch.setenv("SMOLGRPO_DATA_DIR", str(folder))  # no data.source: the run used this
    config = load_config(None, ["model.name=embedded"]).to_dict()
    assert config["data"]["source"] is None
    line = data_line(build_model_card(config, []))  # by the folder's name: no local path
    assert "`gsm8k/train.jsonl`" in line and "openai/gsm8k" not in line
    config["data"]["source"] = str(folder / "mine.jsonl")
    line = data_line(build_model_card(config, []))
    assert line == "- Data: local JSONL file `mine.jsonl`"
    monkeypatch.delenv("SMOLGRPO_DATA_DIR")
    config["data"]["source"] = None
    assert "from the hub (`openai/gsm8k`)" in data_line(build_model_card(config, []))


def test_card_says_how_long_the_cosine_ran(tmp_path):
    def optimizer_line(*overrides) -> str:
        card = build_model_card(load_config(None, list(overrides)).to_dict(), [])
        return next(line for line in card.splitlines() if line.startswith("- Optimizer: "))

    assert "(cosine, 10 warmup steps)" in optimizer_line()
    timed = optimizer_line("optim.schedule_length=time", "run.time_limit_s=2220")
    assert "(cosine over the 2220 s time limit, 10 warmup steps)" in timed


def test_card_with_fewer_steps_than_the_window_has_one_column(tmp_path):
    rows = write_fake_run(tmp_path / "run", steps=3, eval_every=0)
    card = build_model_card(load_config(None, []).to_dict(), rows)
    assert "means over all 3 steps" in card
    assert "| metric | steps 1-3 |\n| --- | --- |\n" in card


def test_sft_card_shows_the_loss_and_token_accuracy_it_trained_on():
    # An sft run logs loss and token accuracy, no reward: those are its card's training rows.
    rows = [
        {"step": step, "loss": 1.0 - step / 20, "token_accuracy": 0.70 + step / 100}
        for step in range(1, 11)
    ]
    card = build_model_card(load_config(None, []).to_dict(), rows)
    assert "(the training problems' reference solutions, teacher-forced):" in card
    # steps 1-5: loss 1 - 3/20 = 0.85, accuracy 0.73; steps 6-10: 0.6 and 0.78
    assert "| `loss` | 0.850 | 0.600 |" in card
    assert "| `token_accuracy` | 73.0% | 78.0% |" in card
    assert "sampled completions" not in card and "`accuracy`" not in card
    assert "Trained to imitate reference solutions" in card and "The reward checks" not in card


def test_card_for_a_local_base_model_has_no_hub_metadata(tmp_path):
    config = {"model": {"name": str(tmp_path)}, "rewards": {"weights": {"correctness": 1.0}}}
    card = build_model_card(config, [])
    assert "base_model" not in front_matter(card) and "No metrics were logged." in card


def test_save_final_model_writes_the_card(tmp_path, tiny_model, char_tokenizer):
    from smolgrpo.training.run_setup import save_final_model

    run_dir = tmp_path / "run"
    write_fake_run(run_dir, steps=6, eval_every=0)
    (run_dir / "prompt_template.json").write_text("{}")
    config = load_config(None, ["model.name=embedded"])
    trainer = SimpleNamespace(
        run_dir=run_dir, config=config, model=tiny_model, tokenizer=char_tokenizer
    )
    final = save_final_model(trainer)
    card = (final / "README.md").read_text()
    assert "| metric | steps 1-5 | steps 2-6 |" in card
    assert len(read_metrics(run_dir / "metrics.jsonl")) == 6


def test_refresh_from_an_eval_folder_keeps_its_numbers(tmp_path):
    write_fake_run(tmp_path / "run", steps=10, final=True)
    write_fake_eval(tmp_path / "eval", accuracy=0.125, measured=tmp_path / "run/final")
    refresh_model_card(tmp_path / "run", tmp_path / "eval")
    card = (tmp_path / "run/final/README.md").read_text()
    assert "Evaluation (test split, 4 problems)" in card and "| `accuracy` | 12.5% |" in card
    refresh_model_card(tmp_path / "run", repo_id="me/x")  # a later refresh keeps the eval
    card = (tmp_path / "run/final/README.md").read_text()
    assert "| `accuracy` | 12.5% |" in card and 'model_id = "me/x"' in card


def test_refresh_keeps_the_data_source_the_run_resolved(tmp_path, monkeypatch):
    # data.source null: the run read $SMOLGRPO_DATA_DIR; `report` run later without it must not
    # rewrite the card to say the problems came from the hub.
    write_fake_run(tmp_path / "run", steps=10, final=True)
    folder = tmp_path / "gsm8k"
    folder.mkdir()
    monkeypatch.setenv("SMOLGRPO_DATA_DIR", str(folder))
    refresh_model_card(tmp_path / "run")
    card = tmp_path / "run/final/README.md"
    written = data_line(card.read_text())
    assert "`gsm8k/train.jsonl`" in written
    monkeypatch.delenv("SMOLGRPO_DATA_DIR")
    write_fake_eval(tmp_path / "eval", accuracy=0.125, measured=tmp_path / "run/final")
    refresh_model_card(tmp_path / "run", tmp_path / "eval")
    text = card.read_text()
    assert data_line(text) == written and "openai/gsm8k`)" not in text
    assert "| `accuracy` | 12.5% |" in text  # the rest is refreshed


def test_refresh_without_final_is_a_user_error(tmp_path):
    write_fake_run(tmp_path / "run", steps=3)
    with pytest.raises(SmolGRPOError, match="no trained model"):
        refresh_model_card(tmp_path / "run")


# ----------------------------------------------------------------------------- report --eval
def report_eval(run_dir, eval_dir) -> int:
    from smolgrpo.cli import main as cli

    return cli.main(["report", str(run_dir), "--no-text", "--eval", str(eval_dir)])


def test_report_eval_of_this_model_goes_into_the_card_without_local_paths(tmp_path):
    run = tmp_path / "run"
    write_fake_run(run, steps=6, final=True)
    write_fake_eval(tmp_path / "eval", accuracy=0.125, measured=run / "final")
    assert report_eval(run, tmp_path / "eval") == 0
    assert "| `accuracy` | 12.5% |" in (run / "final/README.md").read_text()
    results = (run / "final/eval_results.json").read_text()
    assert str(tmp_path) not in results and json.loads(results)["model"] == "final"


def test_an_eval_from_before_eval_config_json_counts_when_it_names_final(tmp_path):
    run = tmp_path / "run"
    write_fake_run(run, steps=6, final=True)
    write_fake_eval(tmp_path / "eval", accuracy=0.125, model=str(run / "final"))
    assert report_eval(run, tmp_path / "eval") == 0
    assert "| `accuracy` | 12.5% |" in (run / "final/README.md").read_text()


@pytest.mark.parametrize("case", ["another model", "base model", "weights changed", "partial"])
def test_report_eval_of_another_model_leaves_card_and_report_alone(tmp_path, capsys, case):
    run, other = tmp_path / "run", tmp_path / "other"
    write_fake_run(run, steps=6, final=True)
    write_fake_run(other, steps=6, final=True)
    (other / "final/model.safetensors").write_bytes(b"\1" * 2048)  # other weights
    refresh_model_card(run)
    card = (run / "final/README.md").read_text()
    measured = {"another model": other / "final", "base model": None}.get(case, run / "final")
    write_fake_eval(tmp_path / "eval", accuracy=0.125, measured=measured)  # None: 'embedded'
    if case == "weights changed":  # retrained in place after the eval
        (run / "final/model.safetensors").write_bytes(b"\2" * 2048)
    if case == "partial":
        metrics = json.loads((tmp_path / "eval/metrics.json").read_text())
        metrics.update(partial=True, num_problems_planned=8)
        (tmp_path / "eval/metrics.json").write_text(json.dumps(metrics))
    assert report_eval(run, tmp_path / "eval") == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / 'eval'}: ")
    expected = {
        "another model": f"it measured {other / 'final'}",
        "base model": "it measured embedded",
        "weights changed": "the weights in it changed since",
        "partial": "a partial eval (4 of 8 problems)",
    }[case]
    assert expected in lines[0]
    assert (run / "final/README.md").read_text() == card
    assert not (run / "final/eval_results.json").exists() and not (run / "report").exists()
