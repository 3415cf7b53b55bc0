"""Shared fixtures: a tiny random Llama with a character-level tokenizer, built in-process.

No network, no files: the tokenizer maps printable ASCII characters to ids, so any text
round-trips, and the model is two layers of width 32, which trains a step in milliseconds.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

import pytest
import torch

DATA_DIR = Path(
    os.environ.get("SMOLGRPO_DATA_DIR", Path(__file__).parents[2] / "shared/data/gsm8k")
)
SPECIAL_TOKENS = ["<pad>", "<|im_start|>", "<|im_end|>", "<unk>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_char_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    characters = [c for c in string.printable if c not in "\x0b\x0c\r"]
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + characters)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    from tokenizers import decoders

    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        unk_token="<unk>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    return tokenizer


def build_tiny_model(vocab_size: int, seed: int = 0):
    """A two-layer Llama of width 32 (SmolLM2's architecture)."""
    return build_tiny_architecture("llama", vocab_size, seed)


TINY_ARCHITECTURES = {  # name -> (config class, model class, extra config keys)
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {}),  # fused qkv_proj and gate_up_proj
    "gemma": ("GemmaConfig", "GemmaForCausalLM", {"head_dim": 8}),  # scaled embeddings
}


def build_tiny_architecture(name: str, vocab_size: int, seed: int = 0):
    """A two-layer, width-32 model of one of TINY_ARCHITECTURES, random weights from `seed`."""
    import transformers

    config_class, model_class, extra = TINY_ARCHITECTURES[name]
    torch.manual_seed(seed)
    config = getattr(transformers, config_class)(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=True,
        **extra,
    )
    model = getattr(transformers, model_class)(config)
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 0
    return model


def install_fake_gguf(monkeypatch, folder: Path) -> Path:
    """Make `embedded` a tiny model: transformers' GGUF reader is replaced by one that yields
    a tiny Llama and the character tokenizer (and draws a tqdm bar, as the real one does); the
    rest of the one-time conversion (a model built from the config, saved) runs for real."""
    import transformers
    from tqdm.auto import tqdm

    from smolgrpo import modeling

    gguf = folder / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    tokenizer = build_char_tokenizer()
    with torch.random.fork_rng(devices=[]):  # reading a file draws no random numbers
        quantized = build_tiny_model(len(tokenizer), seed=1)
    load_model = transformers.AutoModelForCausalLM.from_pretrained
    load_tokenizer = transformers.AutoTokenizer.from_pretrained

    def fake_load_model(*args, **kwargs):
        if "gguf_file" not in kwargs:
            return load_model(*args, **kwargs)
        for _ in tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."):
            pass
        return quantized

    def fake_load_tokenizer(*args, **kwargs):
        return tokenizer if "gguf_file" in kwargs else load_tokenizer(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_load_model)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake_load_tokenizer)
    monkeypatch.setattr(modeling, "embedded_gguf_path", lambda: gguf)
    return gguf


@pytest.fixture
def one_thread():
    """The models in tests are tiny: one thread is faster, and far faster on a busy 2-core
    machine. Used by a module with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def char_tokenizer():
    return build_char_tokenizer()


@pytest.fixture
def tiny_model(char_tokenizer):
    return build_tiny_model(len(char_tokenizer))


@pytest.fixture(scope="session")
def gsm8k_dir() -> Path:
    if not (DATA_DIR / "test.jsonl").is_file():
        pytest.skip(f"GSM8K not found at {DATA_DIR}; set SMOLGRPO_DATA_DIR")
    return DATA_DIR
