"""Shared fixtures: a tiny random Llama with a character-level tokenizer (`smolgrpo.testing.tiny`),
built in-process, a fake embedded GGUF, the GSM8K folder, toy rewards for the trainer tests, and
a loader for the scripts under benchmarks/."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
from pathlib import Path

# The checkout's own src/ first, for this process and the CLI subprocesses the tests start, so
# a second checkout (a git worktree) tests its own code, not the editable install's.
_SRC = str(Path(__file__).resolve().parents[1] / "src")
sys.path.insert(0, _SRC)
os.environ["PYTHONPATH"] = os.pathsep.join(
    [_SRC] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
)

# The stop-signal tests send SIGHUP and expect a run to take it as a stop. Under `nohup pytest`
# SIGHUP arrives ignored, and a run (rightly) leaves an ignored SIGHUP ignored: give this
# process and its subprocesses the default disposition back so those tests test the handler.
if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)

import pytest  # noqa: E402
import torch  # noqa: E402

# Re-exported: test modules import the builders from conftest.
from smolgrpo.testing.tiny import (  # noqa: F401, E402
    TINY_ARCHITECTURES,
    build_char_tokenizer,
    build_tiny_architecture,
    build_tiny_model,
)

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
ANALYSIS = Path(__file__).parents[1] / "analysis"


def load_analysis(name: str):
    """analysis/<name>.py imported as a module."""
    return load_benchmark(name, ANALYSIS)


def load_benchmark(name: str, folder: Path = BENCHMARKS):
    """benchmarks/<name>.py imported as a module (the folder is no package)."""
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DATA_DIR = Path(
    os.environ.get("SMOLGRPO_DATA_DIR", Path(__file__).parents[2] / "shared/data/gsm8k")
)


def install_fake_gguf(monkeypatch, folder: Path) -> Path:
    """Make `embedded` a tiny model: transformers' GGUF reader is replaced by one that yields
    a tiny Llama and the character tokenizer (and draws a tqdm bar, as the real one does); the
    rest of the one-time conversion (a model built from the config, saved) runs for real."""
    import transformers
    from tqdm.auto import tqdm

    from smolgrpo.models import loading as modeling

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


# ----------------------------------------------------------------------------- toy rewards
def digits_reward(completions, answers, **fields):
    """Fraction of the characters that are digits: varied from the first step, easy to raise."""
    return [sum(c.isdigit() for c in text) / len(text) if text else 0.0 for text in completions]


def gated_reward(completions, answers, **fields):
    """Constant for problems whose gold is 'c' (zero-std groups), digit fraction otherwise."""
    varied = digits_reward(completions, answers)
    return [0.5 if gold == "c" else value for gold, value in zip(answers, varied)]


def constant_reward(completions, answers, **fields):
    return [1.0] * len(completions)


@pytest.fixture
def toy_rewards(monkeypatch):
    """Registers the toy rewards above under the names the trainer tests' configs use."""
    from smolgrpo.rewards import builtin as rewards

    monkeypatch.setitem(rewards.REWARDS, "digits", rewards.RewardSpec(digits_reward))
    monkeypatch.setitem(rewards.REWARDS, "gated", rewards.RewardSpec(gated_reward))
    monkeypatch.setitem(rewards.REWARDS, "constant", rewards.RewardSpec(constant_reward))


def prepare_run_dir(run_dir, config, resume: bool, overwrite: bool) -> None:
    """The trainer's run-folder set-up at once: check and lock, replace, write the run files."""
    from smolgrpo.training.run_setup import open_run_folder, write_run_files

    folder = open_run_folder(run_dir, config, resume, overwrite)
    try:
        folder.replace()
        write_run_files(run_dir, config)
    finally:
        folder.release()
