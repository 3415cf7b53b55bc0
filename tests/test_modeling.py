"""Model loading: devices, dtypes, local folders (safetensors only), refusals, the embedded model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from smolgrpo.errors import SmolGRPOError
from smolgrpo.models import loading as modeling
from smolgrpo.models.loading import (
    count_parameters,
    load_model_and_tokenizer,
    prepare_tokenizer,
    resolve_device,
    resolve_dtype,
)
from smolgrpo.tasks.prompts import PLAIN_TEMPLATE

EMBEDDED_PARAMETERS = 134_515_008


def one_line_error(function, *args, **kwargs) -> str:
    with pytest.raises(SmolGRPOError) as info:
        function(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, f"error message must be one line: {message!r}"
    return message


@pytest.fixture
def saved_model_dir(tmp_path, tiny_model, char_tokenizer) -> Path:
    folder = tmp_path / "tiny"
    char_tokenizer.padding_side = "right"  # loading must switch it to left
    tiny_model.save_pretrained(folder, safe_serialization=True)
    char_tokenizer.save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------- device and dtype


def test_resolve_dtype():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("auto", cuda) == torch.bfloat16
    assert resolve_dtype("float32", cuda) == torch.float32
    assert resolve_dtype("bfloat16", cpu) == torch.bfloat16
    assert resolve_dtype("float16", cpu) == torch.float16
    message = one_line_error(resolve_dtype, "fp8", cpu)
    assert "'fp8'" in message and "bfloat16" in message


def test_resolve_device_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert "CUDA is not available" in one_line_error(resolve_device, "cuda")
    assert "'cuda:1'" in one_line_error(resolve_device, "cuda:1")


def test_resolve_device_cuda_index_out_of_range(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    assert "only 1 CUDA device" in one_line_error(resolve_device, "cuda:3")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", ""])
def test_resolve_device_unknown_name(name):
    assert "unknown device" in one_line_error(resolve_device, name)


# --------------------------------------------------------------------------- local folders


def test_load_local_folder(saved_model_dir, tiny_model, char_tokenizer):
    model, tokenizer = load_model_and_tokenizer(str(saved_model_dir), device="cpu")
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token == "<pad>" and tokenizer.pad_token_id == 0
    assert model.generation_config.pad_token_id == 0
    assert not model.training
    assert model.dtype == torch.float32
    assert next(model.parameters()).device == torch.device("cpu")
    assert count_parameters(model) == count_parameters(tiny_model)
    loaded = model.state_dict()
    for name, tensor in tiny_model.state_dict().items():
        assert torch.equal(loaded[name], tensor), name
    assert tokenizer.chat_template == char_tokenizer.chat_template
    assert tokenizer.decode(tokenizer("2+2=4", add_special_tokens=False)["input_ids"]) == "2+2=4"


def test_load_local_folder_dtype(saved_model_dir):
    model, _ = load_model_and_tokenizer(str(saved_model_dir), device="cpu", dtype="bfloat16")
    assert model.dtype == torch.bfloat16


def test_load_local_folder_without_chat_template(tmp_path, tiny_model, char_tokenizer, capsys):
    char_tokenizer.chat_template = None
    tiny_model.save_pretrained(tmp_path, safe_serialization=True)
    char_tokenizer.save_pretrained(tmp_path)
    _, tokenizer = load_model_and_tokenizer(str(tmp_path), device="cpu")
    assert tokenizer.chat_template == PLAIN_TEMPLATE
    assert "warning: tokenizer has no chat template" in capsys.readouterr().err


def test_missing_path_is_one_line_error(tmp_path):
    missing = str(tmp_path / "no-such-model")
    message = one_line_error(load_model_and_tokenizer, missing, device="cpu")
    assert missing in message and "no such" in message


def test_missing_gguf_file(tmp_path):
    missing = str(tmp_path / "model.gguf")
    assert missing in one_line_error(load_model_and_tokenizer, missing, device="cpu")


def test_existing_file_that_is_not_a_model(tmp_path):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"not really")
    message = one_line_error(load_model_and_tokenizer, str(path), device="cpu")
    assert str(path) in message and "not a model folder" in message


def test_folder_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    message = one_line_error(load_model_and_tokenizer, str(tmp_path), device="cpu")
    assert str(tmp_path) in message and "config.json" in message


def test_folder_with_only_config_has_no_weights(tmp_path, tiny_model):
    tiny_model.config.save_pretrained(tmp_path)
    message = one_line_error(load_model_and_tokenizer, str(tmp_path), device="cpu")
    assert str(tmp_path) in message and "no weights" in message


def test_pickle_weights_are_refused_without_loading(tmp_path, tiny_model, monkeypatch):
    tiny_model.config.save_pretrained(tmp_path)
    torch.save(tiny_model.state_dict(), tmp_path / "pytorch_model.bin")

    def no_torch_load(*args, **kwargs):
        raise AssertionError("torch.load must not run on refused pickle weights")

    monkeypatch.setattr(torch, "load", no_torch_load)
    message = one_line_error(load_model_and_tokenizer, str(tmp_path), device="cpu")
    assert str(tmp_path) in message
    assert "pickle" in message and "--allow-pickle" in message


def test_safetensors_preferred_over_pickle(saved_model_dir, tiny_model, monkeypatch):
    torch.save(tiny_model.state_dict(), saved_model_dir / "pytorch_model.bin")

    def no_torch_load(*args, **kwargs):
        raise AssertionError("safetensors exist; the pickle file must not be read")

    monkeypatch.setattr(torch, "load", no_torch_load)
    model, _ = load_model_and_tokenizer(str(saved_model_dir), device="cpu")
    assert count_parameters(model) == count_parameters(tiny_model)


def test_broken_safetensors_is_one_line_error(tmp_path, tiny_model, char_tokenizer):
    tiny_model.config.save_pretrained(tmp_path)
    char_tokenizer.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 64)
    message = one_line_error(load_model_and_tokenizer, str(tmp_path), device="cpu")
    assert str(tmp_path) in message and "cannot load model" in message


# --------------------------------------------------------------------------- hub ids (no network)


def test_unreachable_hub_id_is_one_line_error(monkeypatch):
    import smolgrpo.tasks.data

    monkeypatch.setattr(smolgrpo.tasks.data, "hub_reachable", lambda: False)
    message = one_line_error(load_model_and_tokenizer, "someone/not-cached-model", device="cpu")
    assert "someone/not-cached-model" in message and "cannot reach the hub" in message


def test_default_hub_id_falls_back_to_embedded(monkeypatch, saved_model_dir, capsys):
    import smolgrpo.tasks.data

    real_from_pretrained = modeling._from_pretrained

    def from_pretrained(source, *args, **kwargs):
        if source == modeling.DEFAULT_MODEL_ID:
            raise OSError("not in the local hub cache")
        return real_from_pretrained(source, *args, **kwargs)

    monkeypatch.setattr(smolgrpo.tasks.data, "hub_reachable", lambda: False)
    monkeypatch.setattr(modeling, "_from_pretrained", from_pretrained)
    monkeypatch.setattr(modeling, "embedded_model_dir", lambda: saved_model_dir)
    model, tokenizer = load_model_and_tokenizer(modeling.DEFAULT_MODEL_ID, device="cpu")
    assert tokenizer.padding_side == "left" and not model.training
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    assert len(warnings) == 1
    assert warnings[0].startswith("warning: ") and "using the embedded copy" in warnings[0]


# --------------------------------------------------------------------------- tokenizer set-up


def test_prepare_tokenizer_sets_pad_and_side(char_tokenizer):
    char_tokenizer.pad_token = None
    char_tokenizer.padding_side = "right"
    prepare_tokenizer(char_tokenizer)
    assert char_tokenizer.padding_side == "left"
    assert char_tokenizer.pad_token == char_tokenizer.eos_token == "<|im_end|>"


# --------------------------------------------------------------------------- embedded model


@pytest.mark.integration
def test_embedded_model_loads():
    model, tokenizer = load_model_and_tokenizer("embedded", device="cpu")
    assert count_parameters(model) == EMBEDDED_PARAMETERS
    assert model.dtype == torch.float32 and not model.training
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token_id is not None
    assert tokenizer.eos_token == "<|im_end|>"
    cached = modeling.embedded_model_dir()
    assert (cached / "model.safetensors").is_file()
    assert not list(cached.glob("*.bin"))


def test_stale_embedded_cache_is_a_clear_error(tmp_path, monkeypatch, tiny_model, char_tokenizer):
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF")
    cache = tmp_path / "cache"
    stale = cache / f"embedded-{gguf.stat().st_size}"
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")  # an interrupted copy, without weights
    monkeypatch.setenv(modeling.CACHE_ENV, str(cache))
    monkeypatch.setattr(modeling, "embedded_gguf_path", lambda: gguf)
    monkeypatch.setattr(
        modeling, "_load_gguf_as_plain_model", lambda path: (tiny_model, char_tokenizer)
    )
    message = one_line_error(modeling.embedded_model_dir)
    assert str(stale) in message and "delete" in message
    assert [p.name for p in cache.iterdir()] == [stale.name]  # no staging folder left behind


def test_embedded_conversion_is_cached(tmp_path, monkeypatch, tiny_model, char_tokenizer):
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF")
    calls = []

    def fake_convert(path):
        calls.append(path)
        return tiny_model, char_tokenizer

    monkeypatch.setenv(modeling.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(modeling, "embedded_gguf_path", lambda: gguf)
    monkeypatch.setattr(modeling, "_load_gguf_as_plain_model", fake_convert)
    first = modeling.embedded_model_dir()
    second = modeling.embedded_model_dir()
    assert first == second == tmp_path / "cache" / "embedded-4"
    assert calls == [gguf]  # converted once
    assert (first / "model.safetensors").is_file() and (first / "config.json").is_file()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["embedded-4"]


def test_cold_conversion_is_quiet_shared_and_leaves_the_rng_alone(tmp_path, monkeypatch, capsys):
    from conftest import install_fake_gguf

    install_fake_gguf(monkeypatch, tmp_path)
    monkeypatch.setenv(modeling.CACHE_ENV, str(tmp_path / "cache"))
    torch.manual_seed(0)
    state = torch.get_rng_state()
    umask = os.umask(0o022)
    try:
        folder = modeling.embedded_model_dir()  # builds a model from its config: a random init
    finally:
        os.umask(umask)
    assert torch.equal(torch.get_rng_state(), state)  # a seeded run samples as on a warm cache
    err = capsys.readouterr().err  # no progress bar, only the one announcing line
    assert err.splitlines() == ["converting tiny.gguf to float (once; about 30 s on CPU)"]
    assert (folder / "model.safetensors").stat().st_mode & 0o777 == 0o644  # as other files
    model, _ = load_model_and_tokenizer("embedded", device="cpu")
    assert torch.equal(torch.get_rng_state(), state)
    assert count_parameters(model) > 0
