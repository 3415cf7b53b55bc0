"""`smolgrpo export`: a trained model as one GGUF file for llama.cpp, Ollama and LM Studio
(the command line of models/gguf_export.py; docs/export.md shows how to run the result)."""

from __future__ import annotations

from pathlib import Path


def add_export_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a trained model as a GGUF file (llama.cpp, Ollama, LM Studio)",
        description="Write MODEL (a run's final/ folder, or 'embedded') as one GGUF file: "
        "weights, byte-level BPE tokenizer, chat template, and the system prompt and prefill it "
        "was trained with (keys smolgrpo.system_prompt, smolgrpo.prefill). Llama-family "
        "(SmolLM2) and Qwen2 models. --ollama also writes a Modelfile beside it; then run "
        "`ollama create NAME -f Modelfile`. See docs/export.md.",
    )
    parser.add_argument("model", metavar="MODEL", help="a model folder (RUN/final) or 'embedded'")
    parser.add_argument("--gguf", required=True, metavar="OUT.gguf", help="the file to write")
    parser.add_argument(
        "--outtype",
        default="f16",
        metavar="TYPE",
        help="weights as f32, f16 or q8_0 (8-bit, about half of f16's size) (default: f16)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace OUT.gguf (and the Modelfile)"
    )
    parser.add_argument(
        "--ollama",
        action="store_true",
        help="also write a Modelfile next to OUT.gguf (template, system prompt, prefill, stop "
        "tokens, temperature 0)",
    )


def run_export(args) -> int:
    from smolgrpo.models.gguf_export import export_model

    written = export_model(args.model, Path(args.gguf), args.outtype, args.overwrite, args.ollama)
    for path in written:
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if args.ollama:
        print(f"run it: cd {written[0].parent} && ollama create NAME -f Modelfile")
    return 0
