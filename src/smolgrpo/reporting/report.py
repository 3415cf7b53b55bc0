"""`smolgrpo report RUN_DIR`: plots and a summary of a training run, as PNGs and one HTML page.

Reads what training wrote (`config.yaml`, `metrics.jsonl`, `samples/step_N.jsonl`) and writes to
`RUN_DIR/report/`: one PNG per group of metrics, `summary.json` (means over the first and last N
steps, the last periodic eval) and `report.html` (see `html.py`). A plot whose metrics
were not logged (no periodic eval, no KL) is skipped, not drawn empty.

    smolgrpo report runs/cpu-long --smooth 5
    smolgrpo report runs/cpu-long --eval runs/cpu-long/eval   # add a full eval's numbers
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from smolgrpo.errors import SmolGRPOError
from smolgrpo.reporting.format import (  # noqa: F401 (re-exported for compare.py and tests)
    EVAL_PREFIX,
    REWARD_PREFIX,
    format_value,
    is_number,
    moving_average,
    reward_components,
    series,
    window_headings,
)
from smolgrpo.reporting.plots import write_plots
from smolgrpo.runs.metrics_log import PERIODIC_EVAL_KEYS, read_metrics

# The headline training metrics (also the model card's), then the rest of the summary table in
# reading order; reward components follow.
HEADLINE_KEYS = (
    "reward_mean",
    "accuracy",
    "strict_format_rate",
    "soft_format_rate",
    "completion_length_mean",
    "truncation_rate",
)
SUMMARY_KEYS = HEADLINE_KEYS + (
    "frac_zero_std_groups",
    "kl",
    "clip_fraction",
    "entropy",
    "grad_norm",
    "tokens_per_s",
)
# What an `smolgrpo sft` run logs in place of rewards (teacher-forced on the reference solutions).
SFT_SUMMARY_KEYS = ("loss", "token_accuracy")
# The eval metrics worth a row when comparing or summarising (eval dirs and periodic eval).
EVAL_KEYS = PERIODIC_EVAL_KEYS + ("mean_total_reward",)


# ----------------------------------------------------------------------------- loading
@dataclass
class RunData:
    """Everything a report shows, read once from a run directory."""

    run_dir: Path
    config: dict
    rows: list[dict]
    samples: dict[int, list[dict]] = field(default_factory=dict)  # step -> sample records


def load_run(run_dir: Path | str) -> RunData:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SmolGRPOError(f"{run_dir}: no such run directory")
    rows = read_metrics(run_dir / "metrics.jsonl")
    if not rows:
        raise SmolGRPOError(f"{run_dir}: no metrics.jsonl with logged steps (is this a run?)")
    rows.sort(key=lambda row: row["step"])
    config = {}
    if (run_dir / "config.yaml").is_file():
        try:
            config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            raise SmolGRPOError(f"{run_dir / 'config.yaml'}: invalid YAML") from None
    return RunData(run_dir, config, rows, read_samples(run_dir / "samples"))


def read_samples(folder: Path) -> dict[int, list[dict]]:
    """step -> records of `samples/step_N.jsonl`; unreadable lines are skipped, not fatal."""
    samples: dict[int, list[dict]] = {}
    if not folder.is_dir():
        return samples
    for path in folder.glob("step_*.jsonl"):
        try:
            step = int(path.stem.split("_", 1)[1])
        except ValueError:
            continue
        records = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("completions"), list):
                records.append(record)
        if records:
            samples[step] = records
    return dict(sorted(samples.items()))


def load_eval_dir(eval_dir: Path | str) -> dict:
    """`metrics.json` of a `smolgrpo eval --output-dir` folder."""
    path = Path(eval_dir) / "metrics.json"
    if not path.is_file():
        raise SmolGRPOError(f"{eval_dir}: no metrics.json (not a `smolgrpo eval` output folder)")
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise SmolGRPOError(f"{path}: malformed JSON ({error.msg})") from None
    if not isinstance(metrics, dict):
        raise SmolGRPOError(f"{path}: expected a JSON object")
    return metrics


# ----------------------------------------------------------------------------- numbers
def is_sft_run(rows: list[dict]) -> bool:
    """An `smolgrpo sft` run logs token-level loss and accuracy and no reward."""
    return bool(rows) and "token_accuracy" in rows[-1] and "reward_mean" not in rows[-1]


def _mean(rows: list[dict], key: str) -> float | None:
    values = [row[key] for row in rows if is_number(row.get(key))]
    return sum(values) / len(values) if values else None


def last_eval(rows: list[dict]) -> tuple[int | None, dict]:
    """(step, {metric: value}) of the last periodic evaluation, (None, {}) without one."""
    for row in reversed(rows):
        values = {k[len(EVAL_PREFIX) :]: v for k, v in row.items() if k.startswith(EVAL_PREFIX)}
        if values:
            return row["step"], values
    return None, {}


def constant_metrics(config: dict) -> dict[str, str]:
    """Metrics that the run's config makes 0 at every step (metric -> why): shown as a note,
    not as a flat line or a row of zeros."""
    grpo = config.get("grpo") or {}
    notes = {}
    if grpo.get("beta") == 0:
        notes["kl"] = "not computed: grpo.beta is 0 (no KL term, no reference model)"
    if grpo.get("num_iterations") == 1:
        notes["clip_fraction"] = (
            "0 by construction: with grpo.num_iterations 1 the policy ratio is 1, so no token "
            "is clipped"
        )
    return notes


def summarize_run(rows: list[dict], window: int = 5, config: dict | None = None) -> dict:
    """Means over the first and the last `window` steps, and the last periodic eval.

    With fewer than 2 * window steps the two windows overlap; the step ranges say so (with at
    most `window` steps they are the same steps: `single_window`). `config` (the run's) turns
    the metrics it makes constant into `notes`."""
    if window < 1:
        raise SmolGRPOError(f"--window must be at least 1, got {window}")
    first, last = rows[:window], rows[-window:]
    logged = {key for row in rows for key in row}
    notes = {k: why for k, why in constant_metrics(config or {}).items() if k in logged}
    metrics = []
    sft_keys = SFT_SUMMARY_KEYS if is_sft_run(rows) else ()
    for key in sft_keys + SUMMARY_KEYS + tuple(reward_components(rows)):
        if key in notes:
            continue
        first_mean, last_mean = _mean(first, key), _mean(last, key)
        if first_mean is not None or last_mean is not None:
            metrics.append({"metric": key, "first": first_mean, "last": last_mean})
    eval_step, eval_values = last_eval(rows)
    return {
        "num_steps": len(rows),
        "window": window,
        "first_steps": [first[0]["step"], first[-1]["step"]],
        "last_steps": [last[0]["step"], last[-1]["step"]],
        "single_window": len(rows) <= window,
        "metrics": metrics,
        "notes": notes,
        "eval_step": eval_step,
        "eval": eval_values,
    }


# ----------------------------------------------------------------------------- plots
# ----------------------------------------------------------------------------- the report
def write_report(
    run_dir: Path | str,
    output_dir: Path | str | None = None,
    smooth: int = 1,
    window: int = 5,
    eval_dir: Path | str | None = None,
    include_text: bool = True,
) -> dict:
    """Plots, summary.json and report.html for a run; returns the summary (with `paths`).

    `include_text=False` (`--no-text`) leaves the problems and completions out of report.html,
    for a report kept where the data's text must not be copied."""
    from smolgrpo.reporting.html import render_report_html

    run = load_run(run_dir)
    if not include_text:
        run.samples = {}
    output_dir = Path(output_dir) if output_dir else run.run_dir / "report"
    summary = summarize_run(run.rows, window, run.config)
    summary["text_included"] = include_text
    if eval_dir is not None:
        summary["external_eval"] = {"path": str(eval_dir), "metrics": load_eval_dir(eval_dir)}
    plots = write_plots(run.rows, output_dir, smooth, summary["notes"])
    html_path = output_dir / "report.html"
    html_path.write_text(render_report_html(run, summary, plots, smooth), encoding="utf-8")
    summary_path = output_dir / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    summary["paths"] = {"html": html_path, "summary": summary_path, "plots": plots}
    return summary


def print_summary(console, summary: dict, title: str = "") -> None:
    from rich.table import Table

    table = Table(title=title or None)
    table.add_column("metric")
    for heading in window_headings(summary):
        table.add_column(heading, justify="right")
    for row in summary["metrics"]:
        metric = row["metric"]
        values = [row["first"]] if summary.get("single_window") else [row["first"], row["last"]]
        table.add_row(metric, *(format_value(metric, value) for value in values))
    console.print(table)
    for metric, why in summary.get("notes", {}).items():
        console.print(f"{metric}: {why}")
    evals = []
    if summary.get("eval"):
        evals.append((f"periodic eval at step {summary['eval_step']}", summary["eval"]))
    if summary.get("external_eval"):
        evals.append((summary["external_eval"]["path"], summary["external_eval"]["metrics"]))
    for name, metrics in evals:
        table = Table(title=name)
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in metrics.items():
            if is_number(value):
                table.add_row(key, format_value(key, value))
        console.print(table)
