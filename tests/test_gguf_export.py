"""`smolgrpo export`: a GGUF read back by code we did not write (transformers' GGUF loader, and
llama.cpp through llama-cpp-python when installed) gives the original model's logits and token
ids; its metadata, the Ollama Modelfile, and one-line errors for bad input."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from smolgrpo.cli import main as cli
from smolgrpo.models.gguf_export import encode_tensor, interleave_rotary_halves
from smolgrpo.models.ollama import chat_pieces, modelfile_text, ollama_template
from smolgrpo.tasks.prompts import PromptTemplate, render_prompt
from smolgrpo.testing.tiny import (
    BPE_SPLITS,
    build_bpe_tokenizer,
    build_char_tokenizer,
    build_tiny_architecture,
)

TEXTS = [
    "Natalia sold 48 clips, then 123 more!",
    "<|im_start|>user\nHow many?<|im_end|>\n<|im_start|>assistant\n<reasoning>\n",
    "  two   spaces\n\nand tabs\tand café",
]
TEMPLATE = PromptTemplate(system_prompt="Be brief.", prefill="<reasoning>\n", num_few_shot=0)
# Largest |logit difference| allowed per weight type: the tiny models' logits are about +-1.
TOLERANCE = {"f32": 1e-5, "f16": 2e-3, "q8_0": 2e-2}
# llama.cpp keeps its KV cache in float16: about 1e-4 even from float32 weights. The Llama
# rotary layout written wrong (q/k rows not reordered) gives 0.1 on these models.
LLAMA_CPP_TOLERANCE = {"f32": 1e-3, "f16": 2e-3, "q8_0": 2e-2}
SPLIT_OF = {"llama": "smollm", "qwen2": "qwen2"}
SHARPEN = 10.0  # random init (std 0.02) gives near-uniform attention, whatever the positions


def save_model(folder: Path, architecture: str = "llama", split: str = "gpt-2", tied=True):
    """A folder as a run's final/ holds it: weights, tokenizer, prompt_template.json."""
    tokenizer = build_bpe_tokenizer(split)
    model = build_tiny_architecture(architecture, len(tokenizer) + 5)  # 5 padding rows
    if not tied:
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.lm_head.weight) * 0.1)
    with torch.no_grad():  # sharper attention: a wrong rotary layout then shows in the logits
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(SHARPEN)
            layer.self_attn.k_proj.weight.mul_(SHARPEN)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    TEMPLATE.save(folder / "prompt_template.json")
    return model.eval(), tokenizer


def run_main(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as exit_:
        return exit_.code


def export(folder: Path, out: Path, *flags: str) -> Path:
    assert run_main(["export", str(folder), "--gguf", str(out), *flags]) == 0
    return out


def original_logits(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def exported(request, tmp_path_factory):
    """(architecture, model, tokenizer, {outtype: gguf path}) for one tiny model."""
    folder = tmp_path_factory.mktemp(request.param)
    model, tokenizer = save_model(folder / "final", request.param, SPLIT_OF[request.param])
    paths = {t: export(folder / "final", folder / f"{t}.gguf", "--outtype", t) for t in TOLERANCE}
    return request.param, model, tokenizer, paths


# ----------------------------------------------------------------------------- transformers
@pytest.mark.parametrize("outtype", list(TOLERANCE))
def test_transformers_reads_back_the_same_logits(exported, outtype):
    from transformers import AutoModelForCausalLM

    architecture, model, tokenizer, paths = exported
    path = paths[outtype]
    back = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    ids = tokenizer(TEXTS[0])["input_ids"]
    assert type(back) is type(model)
    difference = np.abs(original_logits(back.eval(), ids) - original_logits(model, ids)).max()
    assert difference <= TOLERANCE[outtype], (architecture, outtype, difference)
    if outtype == "f32":
        assert difference < 1e-6  # float32 weights: the same numbers


def test_transformers_reads_back_the_same_token_ids(exported):
    from transformers import AutoTokenizer

    _, _, tokenizer, paths = exported
    back = AutoTokenizer.from_pretrained(paths["f16"].parent, gguf_file=paths["f16"].name)
    for text in TEXTS:
        assert back(text)["input_ids"] == tokenizer(text)["input_ids"], text
    assert back.chat_template == tokenizer.chat_template


def test_untied_output_head_is_written_and_read_back(tmp_path):
    import gguf
    from transformers import AutoModelForCausalLM

    model, tokenizer = save_model(tmp_path / "final", tied=False)
    path = export(tmp_path / "final", tmp_path / "m.gguf", "--outtype", "f32")
    names = {tensor.name for tensor in gguf.GGUFReader(path).tensors}
    assert "output.weight" in names
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf", dtype=torch.float32)
    ids = tokenizer(TEXTS[0])["input_ids"]
    assert np.abs(original_logits(back.eval(), ids) - original_logits(model, ids)).max() < 1e-6
    if importlib.util.find_spec("llama_cpp") is not None:
        difference = np.abs(llama_cpp_logits(path, ids) - original_logits(model, ids)).max()
        assert difference <= LLAMA_CPP_TOLERANCE["f32"]


def test_q8_0_quantizes_matrices_of_whole_blocks_only():
    assert encode_tensor(np.ones((2, 64), np.float32), "q8_0")[1].name == "Q8_0"
    assert encode_tensor(np.ones((2, 48), np.float32), "q8_0")[1].name == "F16"  # 48 = 1.5 blocks
    assert encode_tensor(np.ones(64, np.float32), "q8_0")[1].name == "F32"  # norms stay float32
    assert encode_tensor(np.ones((2, 64), np.float32), "f16")[0].dtype == np.float16


# ----------------------------------------------------------------------------- llama.cpp
def llama_cpp_logits(path: Path, ids: list[int]) -> np.ndarray:
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(
        str(path), n_ctx=128, n_threads=1, logits_all=True, verbose=False, n_gpu_layers=0
    )
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)])


@pytest.mark.parametrize("outtype", list(TOLERANCE))
def test_llama_cpp_gives_the_same_logits(exported, outtype):
    architecture, model, tokenizer, paths = exported
    ids = tokenizer(TEXTS[0])["input_ids"]
    theirs = llama_cpp_logits(paths[outtype], ids)
    ours = original_logits(model, ids)
    assert theirs.shape == ours.shape
    assert np.abs(theirs - ours).max() <= LLAMA_CPP_TOLERANCE[outtype], (architecture, outtype)


@pytest.mark.parametrize("split", BPE_SPLITS)
def test_llama_cpp_gives_the_same_token_ids(tmp_path, split):
    llama_cpp = pytest.importorskip("llama_cpp")
    _, tokenizer = save_model(tmp_path / "final", "llama", split)
    path = export(tmp_path / "final", tmp_path / "m.gguf")
    llm = llama_cpp.Llama(str(path), n_ctx=128, vocab_only=True, verbose=False)
    for text in TEXTS:
        ours = tokenizer(text)["input_ids"]
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == ours, text
        assert llm.detokenize(ours, special=True).decode() == text


# ----------------------------------------------------------------------------- metadata
def test_metadata_holds_the_tokenizer_prompt_and_weight_types(exported):
    import gguf

    architecture, model, tokenizer, paths = exported
    reader = gguf.GGUFReader(paths["q8_0"])

    def value(key):
        return reader.fields[key].contents()

    assert value("general.architecture") == architecture
    assert value("tokenizer.ggml.model") == "gpt2"
    assert value("tokenizer.ggml.pre") == SPLIT_OF[architecture]
    assert value("smolgrpo.system_prompt") == "Be brief."
    assert value("smolgrpo.prefill") == "<reasoning>\n"
    assert value("tokenizer.chat_template") == tokenizer.chat_template
    assert value("tokenizer.ggml.add_bos_token") is False
    ids = {name: value(f"tokenizer.ggml.{name}_token_id") for name in ("bos", "eos", "padding")}
    assert ids == {"bos": 1, "eos": 2, "padding": 0}
    tokens, types = value("tokenizer.ggml.tokens"), value("tokenizer.ggml.token_type")
    assert len(tokens) == model.config.vocab_size == len(tokenizer) + 5
    assert tokens[:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] and types[:3] == [3] * 3
    assert tokens[-1] == f"[PAD{len(tokens) - 1}]" and types[-5:] == [5] * 5
    kinds = {tensor.name: tensor.tensor_type.name for tensor in reader.tensors}
    assert kinds["blk.0.attn_q.weight"] == "Q8_0" and kinds["blk.0.attn_norm.weight"] == "F32"
    assert "output.weight" not in kinds  # tied: llama.cpp reuses token_embd.weight
    assert ("blk.0.attn_q.bias" in kinds) == (architecture == "qwen2")


def test_rotary_halves_are_interleaved_per_head():
    # one head of dimension 4: rows (x0, x1, y0, y1) -> (x0, y0, x1, y1); two heads apart
    weight = np.arange(8, dtype=np.float32).reshape(8, 1)
    assert interleave_rotary_halves(weight, 2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


# ----------------------------------------------------------------------------- Ollama
def test_modelfile_renders_the_trained_prompt(tmp_path):
    save_model(tmp_path / "final")
    export(tmp_path / "final", tmp_path / "out" / "tiny.gguf", "--ollama")
    text = (tmp_path / "out" / "Modelfile").read_text()
    assert text.splitlines()[0] == "FROM ./tiny.gguf"
    assert 'SYSTEM """Be brief."""' in text
    assert 'PARAMETER stop "<|im_end|>"' in text
    assert "PARAMETER temperature 0" in text.splitlines()
    expected_template = (
        "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
        "{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}"
        '{{ if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n'
        "{{ if $last }}<|im_start|>assistant\n<reasoning>\n{{ end }}"
        '{{ else if eq .Role "assistant" }}<|im_start|>assistant\n{{ .Content }}'
        "{{ if not $last }}<|im_end|>\n{{ end }}{{ end }}{{ end }}"
    )
    assert f'TEMPLATE """{expected_template}"""' in text


def test_chat_pieces_give_the_prompt_that_eval_builds():
    tokenizer = build_bpe_tokenizer()
    pieces = chat_pieces(tokenizer)
    question = "What is 2 + 3?"
    rendered = pieces.render(TEMPLATE.system_prompt, [("user", question)]) + TEMPLATE.prefill
    assert rendered == render_prompt(tokenizer, question, TEMPLATE)


def test_a_template_that_is_not_turn_by_turn_is_refused():
    from smolgrpo.errors import SmolGRPOError

    tokenizer = build_bpe_tokenizer()
    tokenizer.chat_template = "{{ messages[-1]['content'] }}"  # only the last message
    with pytest.raises(SmolGRPOError, match="cannot become an Ollama TEMPLATE"):
        chat_pieces(tokenizer)


def test_go_template_braces_and_quotes_in_the_prompt():
    from smolgrpo.errors import SmolGRPOError

    pieces = chat_pieces(build_bpe_tokenizer())
    assert '{{ "{{" }}x}}' in ollama_template(pieces, "{{x}}")
    with pytest.raises(SmolGRPOError, match="system prompt"):
        modelfile_text("m.gguf", pieces, PromptTemplate(system_prompt='say """'), [])


# ----------------------------------------------------------------------------- bad input
def error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


def test_a_folder_that_is_no_model_is_one_error_line(tmp_path, capsys):
    (tmp_path / "run" / "final").mkdir(parents=True)
    assert run_main(["export", str(tmp_path / "run"), "--gguf", str(tmp_path / "m.gguf")]) == 2
    assert error_line(capsys) == (
        f"error: {tmp_path / 'run'}: not a model folder (no config.json); for a run, pass RUN/final"
    )
    assert not (tmp_path / "m.gguf").exists()


def test_an_unsupported_architecture_names_the_supported_ones(tmp_path, capsys):
    build_tiny_architecture("phi3", 100).save_pretrained(tmp_path / "phi")
    assert run_main(["export", str(tmp_path / "phi"), "--gguf", str(tmp_path / "m.gguf")]) == 2
    assert error_line(capsys) == (
        "error: cannot export a 'phi3' model to GGUF; supported architectures: llama, qwen2"
    )


def test_existing_output_is_kept_without_overwrite(tmp_path, capsys):
    save_model(tmp_path / "final")
    out = tmp_path / "m.gguf"
    out.write_text("user work")
    assert run_main(["export", str(tmp_path / "final"), "--gguf", str(out)]) == 2
    assert error_line(capsys) == f"error: {out}: already exists (pass --overwrite to replace it)"
    assert out.read_text() == "user work"
    (tmp_path / "Modelfile").write_text("mine")
    argv = ["export", str(tmp_path / "final"), "--gguf", str(out), "--overwrite"]
    assert run_main(argv) == 0
    assert out.read_bytes()[:4] == b"GGUF"
    assert (tmp_path / "Modelfile").read_text() == "mine"  # no --ollama: not touched
    assert not list(tmp_path.glob(".m.gguf.*"))  # no staging file left


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--outtype", "q4_0"], "error: --outtype 'q4_0': choose one of f32, f16, q8_0"),
        (["--outtype", "F16"], "error: --outtype 'F16': choose one of f32, f16, q8_0"),
    ],
)
def test_bad_outtype_is_one_error_line(tmp_path, capsys, flags, message):
    save_model(tmp_path / "final")
    argv = ["export", str(tmp_path / "final"), "--gguf", str(tmp_path / "m.gguf"), *flags]
    assert run_main(argv) == 2
    assert error_line(capsys) == message


def test_output_name_must_end_in_gguf(tmp_path, capsys):
    save_model(tmp_path / "final")
    target = tmp_path / "final" / "model.safetensors"  # never overwritten by mistake
    before = target.read_bytes()
    argv = ["export", str(tmp_path / "final"), "--gguf", str(target), "--overwrite"]
    assert run_main(argv) == 2
    assert "must end in .gguf" in error_line(capsys)
    assert target.read_bytes() == before


def test_a_tokenizer_that_is_not_byte_level_bpe_is_refused(tmp_path, capsys):
    tokenizer = build_char_tokenizer()
    build_tiny_architecture("llama", len(tokenizer)).save_pretrained(tmp_path / "final")
    tokenizer.save_pretrained(tmp_path / "final")
    argv = ["export", str(tmp_path / "final"), "--gguf", str(tmp_path / "m.gguf")]
    assert run_main(argv) == 2
    assert "GGUF export needs a byte-level BPE" in error_line(capsys)
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".m.gguf.*"))


def test_a_lora_adapter_folder_is_refused(tmp_path, capsys):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps({"r": 8}))
    argv = ["export", str(tmp_path / "adapter"), "--gguf", str(tmp_path / "m.gguf")]
    assert run_main(argv) == 2
    assert "a LoRA adapter, not a whole model" in error_line(capsys)


def test_agreement_benchmark_runs_on_a_tiny_model(tmp_path):
    pytest.importorskip("llama_cpp")
    from conftest import load_benchmark

    save_model(tmp_path / "final", "llama", "smollm")
    rows = [{"question": f"What is {i} + 1?", "answer": f"so\n#### {i + 1}"} for i in range(3)]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    benchmark = load_benchmark("gguf_agreement")
    argv = ["--model", str(tmp_path / "final"), "--data", str(tmp_path / "data")]
    argv += ["--limit-agree", "3", "--limit-acc", "2", "--tokens", "8", "--max-new-tokens", "8"]
    argv += ["--outtypes", "f32"]
    result = benchmark.main(argv + ["--out", str(tmp_path / "out.json"), "--threads", "1"])
    assert json.loads((tmp_path / "out.json").read_text())["rows"] == result["rows"]
    f32 = result["rows"]["llama.cpp f32"]
    # the same float32 weights on both sides: the greedy tokens agree
    assert f32["agree_n"] == 3 and f32["agree"] == 3
    assert f32["prompts_tokenized_differently"] == 0
    assert result["rows"]["smolgrpo"]["accuracy"]["n"] == f32["accuracy"]["n"] == 2


@pytest.mark.integration
def test_embedded_model_runs_in_llama_cpp_as_in_smolgrpo(tmp_path):
    """SmolLM2-135M exported at q8_0: llama.cpp reads the eval prompt as the same token ids
    and its first greedy token is smolgrpo's; the Modelfile carries the default prompt."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from smolgrpo.models.loading import load_model_and_tokenizer

    path = export("embedded", tmp_path / "smollm2.gguf", "--outtype", "q8_0", "--ollama")
    model, tokenizer = load_model_and_tokenizer("embedded", device="cpu")
    prompt = render_prompt(
        tokenizer, "Tom has 12 apples and eats 5. How many are left?", PromptTemplate()
    )
    ours = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    llm = llama_cpp.Llama(str(path), n_ctx=512, n_threads=1, logits_all=True, verbose=False)
    assert llm.tokenize(prompt.encode(), add_bos=False, special=True) == ours
    llm.eval(ours)
    assert int(np.argmax(llm.scores[len(ours) - 1])) == int(
        original_logits(model, ours)[-1].argmax()
    )
    modelfile = (tmp_path / "Modelfile").read_text()
    assert f'SYSTEM """{PromptTemplate().system_prompt}"""' in modelfile
