"""Helpers of gpu_proof.py: the tiny model and toy problems of `--tiny`, and the Markdown report."""

from __future__ import annotations

import datetime
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpo_vs_trl
from grpo_vs_trl_workload import RESULT_KEYS

PROMISE_MB = 8 * 1024  # "sized for one 8 GB GPU" (recipes/smollm2-135m-gsm8k.yaml)
PARTS = ("benchmark", "memory", "decode", "graphs", "recipe")


# ----------------------------------------------------------------------------- --tiny
def build_tiny_model(target: Path) -> Path:
    """A random 2-layer Llama and a character tokenizer (`smolgrpo.testing.tiny`, as the tests use),
    saved to `target`; positions up to 4,096 (the one-shot prompt is ~1,500 characters)."""
    from smolgrpo.testing.tiny import build_char_tokenizer
    from smolgrpo.testing.tiny import build_tiny_model as build_model

    tokenizer = build_char_tokenizer()
    model = build_model(len(tokenizer), seed=0, max_position_embeddings=4096)
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    return target


ROOT = Path(__file__).resolve().parents[1]
STOP_MARGIN_S = 25  # a part told to stop by SIGTERM has run.stop_grace_s (20 s) to exit


def write_toy_data(folder: Path) -> Path:
    """Short GSM8K-style problems (the tiny model reads characters, so prompts stay short)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, numbers in (("train", range(16)), ("test", range(100, 108))):
        rows = [
            {
                "question": f"Tom has {i} apples and buys {i + 2} more. How many?",
                "answer": f"{i} + {i + 2} = <<{i}+{i + 2}={2 * i + 2}>>{2 * i + 2}\n#### {2 * i + 2}",
            }
            for i in numbers
        ]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


# ----------------------------------------------------------------------------- the report
def markdown(result: dict) -> str:
    parts = result["parts"]
    title = (
        "GPU proof (--tiny: a CPU plumbing check, not a measurement)"
        if result["tiny"]
        else "GPU proof"
    )
    lines = [
        f"# {title}",
        "",
        f"{result['date']}, {result.get('device', 'device not recorded')}, `{result['command']}`, "
        f"{result.get('elapsed_s', 0):.0f} s of {result['time_limit_s']:g} s.",
        "",
        "| part | result |",
        "| --- | --- |",
    ]
    for name in PARTS:
        lines.append(f"| {name} | {summary(name, parts[name])} |")
    bench = parts["benchmark"]
    ours, theirs = bench.get("smolgrpo", {}), bench.get("trl", {})
    if ours.get("status") == "done":
        lines += [
            "",
            f"Benchmark on {ours.get('device')} (TRL vLLM: {bench['trl_vllm']}):",
            "",
            "| metric | smolgrpo | TRL GRPOTrainer | smolgrpo / TRL |",
            "| --- | ---: | ---: | ---: |",
        ]
        for key in RESULT_KEYS:
            other = theirs.get(key) if theirs.get("status") == "done" else None
            ratio = f"{ours[key] / other:.2f}×" if other else "-"
            shown = f"{other:.3f}" if other is not None else theirs.get("reason", "-")
            lines.append(f"| {key} | {ours[key]:.3f} | {shown} | {ratio} |")
    return "\n".join(lines) + "\n"


def summary(name: str, part: dict) -> str:
    status = part.get("status")
    if status in ("skipped", "pending") or (status != "done" and name != "recipe"):
        return f"{status}: {part.get('reason', '')}".rstrip(": ")
    if name == "benchmark":
        trl = part.get("trl", {})
        ratio = (
            f"{part['smolgrpo']['steps_per_s'] / trl['steps_per_s']:.2f}× TRL's steps/s"
            if trl.get("status") == "done"
            else f"TRL {trl.get('status')}: {trl.get('reason')}"
        )
        return f"smolgrpo {part['smolgrpo']['steps_per_s']:.3f} steps/s; {ratio}"
    if name == "memory":
        fits = "within" if part["fits_promise"] else "OVER"
        return (
            f"peak {part['peak_memory_mb']:,} MiB allocated, {fits} the {PROMISE_MB:,} MiB "
            f"promise ({part['steps']} steps, {part['step_time_s']} s each)"
        )
    if name == "decode":
        text = f"{part['decode_tokens_per_s']:,.0f} tokens/s over {part['rows']} rows"
        if part.get("fraction_of_bound") is not None:
            return text + (
                f", {part['fraction_of_bound']:.1%} of the bandwidth bound "
                f"({part['bandwidth_gbs']:g} GB/s)"
            )
        return f"{text}; {part.get('reason', '')}"
    if name == "graphs":
        return graphs_summary(part)
    sft, grpo, evaluation = (part.get(k, {}) for k in ("sft", "grpo", "eval"))
    text = f"{status}. SFT: {sft.get('status')}"
    if "steps_done" in sft:
        text += f", {sft['steps_done']} of {sft['recipe_steps']} steps in {sft['seconds']} s"
    else:
        text += f" ({sft.get('reason')})"
    text += peak_text(sft)
    text += f"; GRPO: {grpo.get('steps_done', 0)} of {grpo.get('steps_planned')} steps "
    text += f"(the recipe has {grpo.get('recipe_steps')}; time limit {grpo.get('time_limit_s')} s)"
    if grpo.get("time_per_step_s"):
        text += f", {grpo['time_per_step_s']} s/step"
    text += peak_text(grpo)
    for label, record in (("SFT model", part.get("sft_eval")), ("model", evaluation)):
        if not record:
            continue
        label = f"{record.get('model_stage', 'grpo').upper()} model" if label == "model" else label
        if record.get("accuracy") is not None:
            text += (
                f"; {label} on {record['num_problems']} test problems: accuracy "
                f"{record['accuracy']:.1%}, strict format {record['strict_format_rate']:.1%} "
                f"({record.get('seconds')} s)"
            )
        else:
            text += f"; {label} eval {record.get('status')}: {record.get('reason')}"
    return text


def peak_text(record: dict) -> str:
    if "peak_memory_mb" not in record:
        return ""
    fits = "within" if record["fits_promise"] else "OVER"
    return f", peak {record['peak_memory_mb']:,} MiB ({fits} {PROMISE_MB:,})"


def graphs_summary(part: dict) -> str:
    modes = part.get("modes", {})
    eager, graph = modes.get("eager", {}), modes.get("graph", {})
    text = f"{part.get('rows')} rows x {part.get('tokens')} tokens, greedy: eager "
    text += f"{eager.get('ms_per_token_step')} ms a token step"
    if graph.get("status") == "done":
        text += (
            f", CUDA graph {graph['ms_per_token_step']} ms ({part['speedup_graph_over_eager']}x)"
        )
    else:
        text += f", CUDA graph {graph.get('status')}: {graph.get('reason')}"
    for key, label in (
        ("graph_vs_static", "the static loop"),
        ("graph_vs_eager", "the eager loop"),
    ):
        if key in part:
            text += f"; {part[key]['identical_rows']}/{part[key]['rows']} rows as {label}"
    return f"{text}; {part.get('decision', '')}".rstrip("; ")


# ----------------------------------------------------------------------------- bookkeeping
class Proof:
    """The results so far, the clock, and the subprocesses that produce them."""

    def __init__(self, args):
        self.args, self.started = args, time.monotonic()
        self.output_dir, self.work_dir = Path(args.output_dir), Path(args.work_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.log = self.output_dir / "gpu_proof.log"
        self.log.write_text("")
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "SMOLGRPO_DATA_DIR": args.data}
        self.result = {
            "command": " ".join(["python", *sys.argv]),
            "date": datetime.date.today().isoformat(),
            "tiny": args.tiny,
            "time_limit_s": args.time_limit_s,
            "versions": grpo_vs_trl.versions(),
            "parts": {part: {"status": "pending"} for part in PARTS},
        }

    def left(self) -> float:
        return self.args.time_limit_s - (time.monotonic() - self.started)

    def part(self, name: str) -> dict:
        return self.result["parts"][name]

    def skip(self, name: str, reason: str) -> None:
        self.part(name).update(status="skipped", reason=reason)
        self.write()

    def run(self, name: str, command: list[str], budget_s: float | None = None) -> dict:
        """Run one command with at most `budget_s` (and what is left); SIGTERM when it runs out."""
        timeout = min(budget_s or math.inf, self.left() - STOP_MARGIN_S)
        record = {"command": " ".join(command[1:] if command[0] == sys.executable else command)}
        if timeout < 5:
            return record | {"status": "skipped", "reason": "time limit reached"}
        with open(self.log, "a") as log:
            log.write(f"\n===== {name}: {record['command']}\n")
            log.flush()
            started = time.monotonic()
            process = subprocess.Popen(command, env=self.env, stdout=log, stderr=log, cwd=ROOT)
            try:
                code = process.wait(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGTERM)  # smolgrpo checkpoints and stops
                try:
                    code = process.wait(timeout=STOP_MARGIN_S - 2)
                except subprocess.TimeoutExpired:
                    process.kill()
                    code = process.wait()
                timed_out = True
        record["seconds"] = round(time.monotonic() - started, 1)
        record["exit_status"] = code
        if timed_out:
            record |= {"status": "timed out", "reason": f"stopped after {timeout:.0f} s"}
        elif code != 0:
            record |= {"status": "failed", "reason": f"exit {code}; see gpu_proof.log"}
        else:
            record["status"] = "done"
        return record

    def write(self) -> None:
        self.result["elapsed_s"] = round(time.monotonic() - self.started, 1)
        path = self.output_dir / "gpu_proof.json"
        path.write_text(json.dumps(self.result, indent=1) + "\n")
        (self.output_dir / "gpu_proof.md").write_text(markdown(self.result))

    def cli(self, *arguments: str) -> list[str]:
        return [sys.executable, "-m", "smolgrpo.cli.main", *arguments]
