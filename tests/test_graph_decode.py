"""graph_decode: the static-cache decode (each step a CUDA graph on a GPU; eager here, on CPU)
samples what the eager loop samples, and is chosen only where it applies."""

from __future__ import annotations

import warnings

import torch
from transformers.cache_utils import DynamicCache

import smolgrpo.generation.graph_decode as graph_decode
import smolgrpo.generation.rollout as rollout
from smolgrpo.generation.graph_decode import StaticLayer, static_cache
from smolgrpo.generation.rollout import DecodeSettings, decode, encode_prompts, generate

PROMPTS = ["What is 2 + 3?", "Tom has 12 apples and eats 5. How many are left?", "Hi"]


def _decode(model, tokenizer, static: bool, temperature: float, **kwargs):
    ids, mask = encode_prompts(tokenizer, PROMPTS)
    # Many "EOS" tokens: rows finish at different steps (the eager loop drops them, the static
    # one keeps them and feeds them pads).
    eos = [2] + [tokenizer.convert_tokens_to_ids(c) for c in "aeiou "]
    torch.manual_seed(0)
    settings = DecodeSettings(
        pad_token_id=tokenizer.pad_token_id,
        num_generations=kwargs.pop("num_generations", 4),
        max_new_tokens=kwargs.pop("max_new_tokens", 24),
        temperature=temperature,
        static=static,
        **kwargs,
    )
    return decode(model, ids, mask, eos, settings).ids


def test_static_decode_is_greedy_decode(tiny_model, char_tokenizer, monkeypatch):
    chosen = []
    real = graph_decode.static_decode
    monkeypatch.setattr(
        graph_decode, "static_decode", lambda *a, **k: chosen.append(k["capture"]) or real(*a, **k)
    )
    ours = _decode(tiny_model, char_tokenizer, True, 0.0)
    reference = _decode(tiny_model, char_tokenizer, False, 0.0)
    assert chosen == [False]  # the static path ran, without a graph on CPU
    assert torch.equal(ours, reference)
    lengths = (ours != char_tokenizer.pad_token_id).sum(dim=1)
    assert len(set(lengths.tolist())) > 1  # rows finished at different steps
    assert ours.shape[1] == int(lengths.max())  # cut at the longest completion


def test_static_decode_runs_to_the_budget_without_eos(tiny_model, char_tokenizer):
    ours = _decode(tiny_model, char_tokenizer, True, 0.0, ignore_eos=True, max_new_tokens=9)
    reference = _decode(tiny_model, char_tokenizer, False, 0.0, ignore_eos=True, max_new_tokens=9)
    assert ours.shape == (12, 9)
    assert torch.equal(ours, reference)


def test_static_sampling_keeps_the_distribution_and_pads_after_eos(tiny_model, char_tokenizer):
    """Rows are never dropped, so the random stream differs from the eager loop's; the
    samples must still be valid: one distribution, pads after the first EOS."""
    eos = {2} | {char_tokenizer.convert_tokens_to_ids(c) for c in "aeiou "}
    ours = _decode(tiny_model, char_tokenizer, True, 1.0, max_new_tokens=16)
    pad = char_tokenizer.pad_token_id
    for row in ours.tolist():
        ends = [i for i, token in enumerate(row) if token in eos]
        if ends:
            assert all(token == pad for token in row[ends[0] + 1 :])
    # same first token distribution: the first step is the prefill's, identical on both paths
    firsts = [_decode(tiny_model, char_tokenizer, s, 1.0, max_new_tokens=1) for s in (1, 0)]
    assert torch.equal(firsts[0], firsts[1])


def test_static_cache_converts_a_prefilled_cache_and_writes_in_place(tiny_model):
    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    output = tiny_model(input_ids=ids, use_cache=True)
    cache = output.past_key_values if output.past_key_values is not None else output.cache
    before = cache.layers[0].keys.clone()
    position = static_cache(cache, 4)
    assert position.tolist() == [3]
    layer = cache.layers[0]
    assert type(layer) is StaticLayer and layer.keys.shape[-2] == 7
    assert torch.equal(layer.keys[:, :, :3], before)
    assert not layer.keys[:, :, 3:].any()  # zeros, not garbage, where nothing was written yet
    new = torch.ones_like(before[:, :, :1])
    # bf16 states into float32 buffers (autocast, transformers 5.17): cast, not an error
    keys, _ = layer.update(new.bfloat16(), new.bfloat16(), 0)
    assert torch.equal(keys[:, :, 3:4], new) and not keys[:, :, 4:].any()


def test_other_caches_are_left_alone():
    assert static_cache(object(), 4) is None
    assert static_cache(DynamicCache(), 4) is None  # no layers yet


def test_the_static_path_is_chosen_only_where_it_applies(tiny_model, char_tokenizer, monkeypatch):
    calls = []
    real = graph_decode.static_decode
    monkeypatch.setattr(
        graph_decode, "static_decode", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    # CPU, default: the eager loop (no graph to gain on a CPU)
    generate(tiny_model, char_tokenizer, ["Hi"], num_generations=2, max_new_tokens=3)
    # forced, but under FSDP (synced: every forward a collective) or with the calculator
    _decode(tiny_model, char_tokenizer, True, 0.0, max_new_tokens=3, synced=True)
    # forced, but with an attention that would add a bool mask instead of applying it
    monkeypatch.setattr(graph_decode, "supports_static", lambda model: False)
    _decode(tiny_model, char_tokenizer, True, 0.0, max_new_tokens=3)
    assert calls == []
    monkeypatch.setattr(graph_decode, "supports_static", lambda model: True)
    _decode(tiny_model, char_tokenizer, True, 0.0, max_new_tokens=3)
    assert calls == [1]


def test_graphs_switch_off_from_the_environment(monkeypatch):
    monkeypatch.setattr(graph_decode, "_disabled_reason", None)
    monkeypatch.setenv("SMOLGRPO_CUDA_GRAPHS", "0")
    assert not graph_decode.graphs_enabled()
    monkeypatch.setenv("SMOLGRPO_CUDA_GRAPHS", "1")
    assert graph_decode.graphs_enabled()
    monkeypatch.setattr(graph_decode, "_disabled_reason", "capture failed")
    assert not graph_decode.graphs_enabled()


def test_a_failed_capture_warns_and_decodes_eagerly(tiny_model, monkeypatch):
    """The capture's failure path, on CPU: torch.cuda.graph fails here as it might on a GPU."""
    monkeypatch.setattr(graph_decode, "_disabled_reason", None)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    inputs = dict(input_ids=torch.tensor([[5], [6]]))
    step = graph_decode.StepForward(tiny_model, inputs, capture=True)
    first = step()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        second = step()  # tries to capture: no CUDA here, so it fails
    assert any("CUDA graph capture failed" in str(w.message) for w in caught)
    assert torch.equal(first, second) and step.graph is None and not step.capture
    assert not graph_decode.graphs_enabled()


def test_rollout_decode_passes_cuda_graphs_false_as_the_eager_loop(
    tiny_model, char_tokenizer, monkeypatch
):
    seen = []
    real = rollout.decode
    monkeypatch.setattr(
        rollout, "decode", lambda *a, **k: seen.append(a[4].static) or real(*a, **k)
    )
    generate(tiny_model, char_tokenizer, ["Hi"], num_generations=2, max_new_tokens=2)
    generate(
        tiny_model, char_tokenizer, ["Hi"], num_generations=2, max_new_tokens=2, cuda_graphs=False
    )
    assert seen == [None, False]
