"""kv_cache.preallocate: decoding writes the KV cache in place and samples exactly what the
concatenating DynamicCache samples."""

from __future__ import annotations

import pytest
import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

import smolgrpo.generation.rollout as rollout
from smolgrpo.generation.kv_cache import PreallocatedLayer, preallocate
from smolgrpo.generation.rollout import DecodeSettings, decode, encode_prompts

PROMPTS = ["What is 2 + 3?", "Tom has 12 apples and eats 5. How many are left?", "Hi"]


def _decode(model, tokenizer, monkeypatch, in_place: bool, temperature: float):
    converted = []

    def spy(cache, extra):
        converted.append(preallocate(cache, extra))
        return converted[-1]

    monkeypatch.setattr(rollout, "preallocate", spy if in_place else (lambda cache, extra: False))
    ids, mask = encode_prompts(tokenizer, PROMPTS)
    # Many "EOS" tokens: rows finish at different steps, so finished rows are dropped from the
    # cache (batch_select_indices) several times.
    eos = [2] + [tokenizer.convert_tokens_to_ids(c) for c in "aeiou "]
    torch.manual_seed(0)
    settings = DecodeSettings(
        pad_token_id=tokenizer.pad_token_id,
        num_generations=4,
        max_new_tokens=24,
        temperature=temperature,
    )
    completions = decode(model, ids, mask, eos, settings).ids
    assert converted == ([True] if in_place else [])  # decode wrote this cache in place
    return completions


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_in_place_cache_samples_what_the_concatenating_cache_samples(
    tiny_model, char_tokenizer, monkeypatch, temperature
):
    ours = _decode(tiny_model, char_tokenizer, monkeypatch, True, temperature)
    reference = _decode(tiny_model, char_tokenizer, monkeypatch, False, temperature)
    assert torch.equal(ours, reference)
    lengths = (ours != char_tokenizer.pad_token_id).sum(dim=1)
    # rows did finish at different steps (greedy: the rows of one prompt finish together)
    assert len(set(lengths.tolist())) > (1 if temperature == 0 else 2)


def _prefilled_cache(model, ids):
    output = model(input_ids=ids, use_cache=True)
    return output.past_key_values if output.past_key_values is not None else output.cache


def test_layers_grow_past_their_reserve_and_keep_every_value(tiny_model):
    torch.manual_seed(1)
    ids = torch.randint(5, 60, (2, 7))
    plain, in_place = _prefilled_cache(tiny_model, ids), _prefilled_cache(tiny_model, ids)
    assert preallocate(in_place, 1)  # room for one token; the second and third grow it
    assert all(type(layer) is PreallocatedLayer for layer in in_place.layers)
    for _ in range(3):
        keys, values = torch.randn(2, 2, 1, 8), torch.randn(2, 2, 1, 8)
        for cache in (plain, in_place):
            returned = cache.layers[0].update(keys, values)
        assert torch.equal(returned[0], plain.layers[0].keys)
        assert torch.equal(returned[1], plain.layers[0].values)
    assert in_place.get_seq_length() == plain.get_seq_length() == 10
    keep = torch.tensor([1])
    plain.batch_select_indices(keep), in_place.batch_select_indices(keep)
    assert torch.equal(in_place.layers[0].keys, plain.layers[0].keys)
    in_place.crop(-2)
    assert in_place.get_seq_length() == 8
    assert torch.equal(in_place.layers[0].keys, plain.layers[0].keys[:, :, :8])
    assert torch.equal(in_place.layers[0].values, plain.layers[0].values[:, :, :8])


def test_crop_keeps_keys_values_and_length_together(tiny_model):
    torch.manual_seed(2)
    ids = torch.randint(5, 60, (2, 7))
    plain, in_place = _prefilled_cache(tiny_model, ids), _prefilled_cache(tiny_model, ids)
    assert preallocate(in_place, 4)
    layer, reference = in_place.layers[0], plain.layers[0]
    layer.crop(5)  # an absolute length (transformers 4's meaning): the first 5 tokens
    assert layer.length == 5 and in_place.get_seq_length() == 5
    assert torch.equal(layer.keys, reference.keys[:, :, :5])
    assert torch.equal(layer.values, reference.values[:, :, :5])
    layer.crop(0)  # nothing to remove
    assert layer.length == 5
    keys, values = torch.randn(2, 2, 1, 8), torch.randn(2, 2, 1, 8)
    returned_keys, returned_values = layer.update(keys, values)  # written right after the 5
    assert torch.equal(returned_keys, torch.cat([reference.keys[:, :, :5], keys], dim=2))
    assert torch.equal(returned_values, torch.cat([reference.values[:, :, :5], values], dim=2))
    layer.crop(-4)
    assert layer.length == 2 and torch.equal(layer.values, reference.values[:, :, :2])


def test_other_caches_are_left_alone():
    assert not preallocate(object(), 8)  # no layers
    assert not preallocate(DynamicCache(), 8)  # nothing cached yet

    class SlidingLayer(DynamicLayer):  # a layer kind with other update rules
        pass

    cache = DynamicCache()
    cache.layers = [SlidingLayer()]
    assert not preallocate(cache, 8) and type(cache.layers[0]) is SlidingLayer
