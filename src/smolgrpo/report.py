"""`smolgrpo report RUN_DIR`: plots and a summary of a training run, as PNGs and one HTML page.

Reads what training wrote (`config.yaml`, `metrics.jsonl`, `samples/step_N.jsonl`) and writes to
`RUN_DIR/report/`: one PNG per group of metrics, `summary.json` (means over the first and last N
steps, the last periodic eval) and `report.html` (see `report_html.py`). A plot whose metrics
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
from smolgrpo.metrics import PERIODIC_EVAL_KEYS, read_metrics
from smolgrpo.report_format import format_value, is_number, window_headings  # noqa: F401

EVAL_PREFIX = "eval/"
REWARD_PREFIX = "reward/"
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
def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the rows that logged `key` as a finite number."""
    pairs = [(row["step"], row[key]) for row in rows if is_number(row.get(key))]
    return [step for step, _ in pairs], [float(value) for _, value in pairs]


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over up to `window` values: no lag-free trick, but no invented points."""
    averaged, total = [], 0.0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        averaged.append(total / min(index + 1, window))
    return averaged


def reward_components(rows: list[dict]) -> list[str]:
    names: dict[str, None] = {}
    for row in rows:
        names.update((key, None) for key in row if key.startswith(REWARD_PREFIX))
    return list(names)


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
    for key in SUMMARY_KEYS + tuple(reward_components(rows)):
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
@dataclass
class Panel:
    title: str
    ylabel: str
    keys: list[tuple[str, str]]  # (metrics key, legend label)
    percent: bool = False
    skip_if_zero: bool = False  # e.g. KL, logged as 0 when beta = 0 (no reference model)
    smooth: bool = True  # False for a schedule (learning rate): averaging would distort it


def plot_specs(rows: list[dict]) -> dict[str, list[Panel]]:
    """file stem -> its panels; keys that were never logged are dropped later."""
    components = [(key, key[len(REWARD_PREFIX) :]) for key in reward_components(rows)]
    return {
        "reward": [
            Panel("Total reward (weighted sum)", "reward", [("reward_mean", "reward mean")]),
            Panel("Reward components (unweighted)", "mean reward per completion", components),
        ],
        "accuracy_format": [
            Panel(
                "Accuracy and format (training samples)",
                "share of completions",
                [
                    ("accuracy", "accuracy"),
                    ("strict_format_rate", "strict format"),
                    ("soft_format_rate", "soft format"),
                ],
                percent=True,
            ),
            Panel(
                "Periodic eval (greedy, eval split)",
                "share of problems",
                [
                    ("eval/accuracy", "accuracy"),
                    ("eval/accuracy_last_number", "accuracy (last number)"),
                    ("eval/strict_format_rate", "strict format"),
                    ("eval/soft_format_rate", "soft format"),
                ],
                percent=True,
            ),
        ],
        "length": [
            Panel(
                "Completion length",
                "tokens",
                [
                    ("completion_length_mean", "mean (training)"),
                    ("completion_length_max", "max (training)"),
                    ("eval/mean_completion_tokens", "mean (eval)"),
                ],
            ),
            Panel(
                "Truncated completions (hit the length limit)",
                "share of completions",
                [("truncation_rate", "training"), ("eval/truncation_rate", "eval")],
                percent=True,
            ),
        ],
        "kl_clip": [
            Panel(
                "KL to the reference model (k3 estimator)",
                "KL per token (nats)",
                [("kl", "KL")],
                skip_if_zero=True,
            ),
            Panel(
                "Clipped tokens",
                "share of tokens",
                [("clip_fraction", "clip fraction")],
                percent=True,
            ),
        ],
        "optimizer": [
            Panel("Learning rate", "learning rate", [("learning_rate", "lr")], smooth=False),
            Panel("Gradient norm (before clipping)", "L2 norm", [("grad_norm", "grad norm")]),
        ],
        "throughput": [
            Panel(
                "Generation throughput",
                "generated tokens per second",
                [("tokens_per_s", "tokens/s")],
            ),
        ],
    }


def write_plots(
    rows: list[dict], output_dir: Path, smooth: int = 1, notes: dict | None = None
) -> dict[str, Path]:
    """One PNG per entry of `plot_specs` that has data; returns stem -> path. A panel whose
    metrics are all in `notes` (constant by construction) is left out."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never open a window, work without a display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    if smooth < 1:
        raise SmolGRPOError(f"--smooth must be at least 1, got {smooth}")
    output_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for stem, panels in plot_specs(rows).items():
        panels = [
            p
            for p in panels
            if _has_data(rows, p) and not all(key in (notes or {}) for key, _ in p.keys)
        ]
        if not panels:
            continue
        figure, axes = plt.subplots(1, len(panels), figsize=(5.8 * len(panels), 3.6), squeeze=False)
        for axis, panel in zip(axes[0], panels):
            _draw_panel(axis, rows, panel, smooth)
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
            if panel.percent:
                axis.yaxis.set_major_formatter(PercentFormatter(1.0))
                axis.set_ylim(*_rate_limits(rows, panel))
        figure.tight_layout()
        path = output_dir / f"{stem}.png"
        figure.savefig(path, dpi=100)  # 2 panels ≈ 1160 px: shown unscaled
        plt.close(figure)
        written[stem] = path
    return written


def _has_data(rows: list[dict], panel: Panel) -> bool:
    values = [v for key, _ in panel.keys for v in series(rows, key)[1]]
    return bool(values) and not (panel.skip_if_zero and not any(values))


def _rate_limits(rows: list[dict], panel: Panel) -> tuple[float, float]:
    """0 at the bottom, room above the highest value: a flat 0% line is not centred on 0."""
    highest = max(v for key, _ in panel.keys for v in series(rows, key)[1])
    top = min(1.0, max(0.1, highest * 1.15)) + 0.02
    return -0.02 * top / 1.02, top


def _draw_panel(axis, rows: list[dict], panel: Panel, smooth: int) -> None:
    smooth = smooth if panel.smooth else 1
    for index, (key, label) in enumerate(panel.keys):
        steps, values = series(rows, key)
        if not steps:
            continue
        color = f"C{index}"
        if key.startswith(EVAL_PREFIX):  # a few points far apart: markers, never smoothed
            axis.plot(steps, values, "o--", color=color, label=label, markersize=5)
        elif smooth > 1 and len(values) > 1:
            axis.plot(steps, values, color=color, alpha=0.25, linewidth=1)
            axis.plot(steps, moving_average(values, smooth), color=color, label=label)
        else:
            axis.plot(
                steps, values, color=color, label=label, marker="." if len(steps) < 30 else ""
            )
    smoothed = smooth > 1 and any(not key.startswith(EVAL_PREFIX) for key, _ in panel.keys)
    title = panel.title + (f" — {smooth}-step moving average" if smoothed else "")
    axis.set_title(title, fontsize=10)
    axis.set_xlabel("training step")
    axis.set_ylabel(panel.ylabel)
    axis.grid(alpha=0.3)
    if len(panel.keys) > 1:  # below the axes: inside, it hides the lines it names
        axis.legend(
            fontsize=8,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.2),
            ncol=min(3, len(panel.keys)),
            frameon=False,
        )


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
    from smolgrpo.report_html import render_report_html

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
