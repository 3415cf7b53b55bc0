"""analysis/average_models.py: the mean of saved models' weights, loadable by transformers."""

from __future__ import annotations

import pytest
import torch
from conftest import load_analysis
from transformers import AutoModelForCausalLM

from smolgrpo.testing.tiny import build_tiny_model


def test_average_of_two_saved_models_is_their_mean(tmp_path):
    script = load_analysis("average_models")
    first, second = build_tiny_model(40, seed=1), build_tiny_model(40, seed=2)
    first.save_pretrained(tmp_path / "a")
    second.save_pretrained(tmp_path / "b")
    script.main([str(tmp_path / "soup"), str(tmp_path / "a"), str(tmp_path / "b")])
    soup = AutoModelForCausalLM.from_pretrained(tmp_path / "soup")
    a, b = first.state_dict(), second.state_dict()
    for name, tensor in soup.state_dict().items():
        torch.testing.assert_close(tensor, (a[name] + b[name]) / 2)
    assert not torch.equal(a["lm_head.weight"], b["lm_head.weight"])


def test_mismatched_models_and_missing_weights_are_one_line_errors(tmp_path, capsys):
    script = load_analysis("average_models")
    build_tiny_model(40, seed=1).save_pretrained(tmp_path / "a")
    build_tiny_model(41, seed=1).save_pretrained(tmp_path / "b")  # another vocabulary size
    capsys.readouterr()  # transformers' progress bars from saving
    cases = {
        "model 2 does not match": ["a", "b"],
        "model.safetensors not found": ["a", "missing"],
        "at least two": ["a"],
    }
    for message, models in cases.items():
        with pytest.raises(SystemExit) as exited:
            script.main([str(tmp_path / "soup")] + [str(tmp_path / m) for m in models])
        assert exited.value.code == 2
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1, error
    assert not (tmp_path / "soup").exists()  # nothing written on bad input
