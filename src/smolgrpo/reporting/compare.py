"""`smolgrpo compare A B ...`: one table over runs and eval folders, and overlaid training curves.

A source is a run directory (`metrics.jsonl`) or a `smolgrpo eval` output folder
(`metrics.json`); they mix freely, e.g. the base model's eval, the trained model's eval and the
run itself. Training numbers (means over a run's last N steps, on sampled training completions)
and evaluation numbers (held-out problems) get separate rows, so a training accuracy is never
read as a test accuracy. Consecutive eval folders with samples.jsonl are
also compared problem by problem (paired.py: the exact McNemar test). Writes compare.md,
compare.json and, when a run is among the sources, compare.png.

    smolgrpo compare runs/eval-base runs/cpu-long/eval runs/cpu-long --output-dir runs/compare
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from smolgrpo.errors import SmolGRPOError
from smolgrpo.evaluation.paired import PairedResult, paired_comparison
from smolgrpo.reporting.report import (
    EVAL_KEYS,
    SUMMARY_KEYS,
    format_value,
    is_number,
    last_eval,
    load_eval_dir,
    load_run,
    moving_average,
    reward_components,
    series,
)

CURVE_KEYS = (
    ("reward_mean", "total reward", False),
    ("accuracy", "accuracy (training samples)", True),
    ("strict_format_rate", "strict format rate", True),
    ("completion_length_mean", "mean completion length (tokens)", False),
)


@dataclass
class Source:
    name: str
    path: Path
    kind: str  # "run" or "eval"
    values: dict  # row label -> number
    rows: list[dict] | None = None  # a run's metrics.jsonl rows, for curves
    intervals: dict = field(default_factory=dict)  # row label -> 95% Wilson interval (eval rates)


def load_source(path: Path | str, window: int) -> Source:
    path = Path(path)
    if (path / "metrics.jsonl").is_file():
        run = load_run(path)
        last = run.rows[-window:]
        values: dict = {"steps": run.rows[-1]["step"]}
        for key in SUMMARY_KEYS + tuple(reward_components(run.rows)):
            numbers = [row[key] for row in last if is_number(row.get(key))]
            if numbers:
                values[f"train {key}"] = sum(numbers) / len(numbers)
        _, evaluated = last_eval(run.rows)
        values.update({f"eval {key}": value for key, value in evaluated.items()})
        return Source(path.name, path, "run", values, run.rows)
    if (path / "metrics.json").is_file():
        metrics = load_eval_dir(path)
        prefixes = ("pass@", "maj@", "reward/")  # maj@k: self-consistency (majority.py)
        keys = [k for k in metrics if k in EVAL_KEYS or k.startswith(prefixes)]
        values = {f"eval {key}": metrics[key] for key in keys if is_number(metrics[key])}
        if is_number(metrics.get("num_problems")):
            values["eval num_problems"] = metrics["num_problems"]
        intervals = {
            f"eval {key}": metrics[f"{key}_ci95"]
            for key in keys
            if isinstance(metrics.get(f"{key}_ci95"), list)
        }
        return Source(path.name, path, "eval", values, intervals=intervals)
    raise SmolGRPOError(f"{path}: neither a run (metrics.jsonl) nor an eval folder (metrics.json)")


def _unique_names(sources: list[Source]) -> None:
    """Two folders named `eval` under different runs are shown as `run-a/eval`, `run-b/eval`."""
    names = [s.name for s in sources]
    for source in sources:
        if names.count(source.name) > 1:
            source.name = f"{source.path.parent.name}/{source.path.name}"


def compare_table(sources: list[Source]) -> tuple[list[str], list[list]]:
    """(row labels, values per row in source order); eval rows first, then training rows."""
    labels: dict[str, None] = {}
    for prefix in ("eval ", "train ", "steps"):
        for source in sources:
            labels.update((k, None) for k in source.values if k.startswith(prefix))
    rows = [[source.values.get(label) for source in sources] for label in labels]
    return list(labels), rows


def paired_results(sources: list[Source]) -> list[PairedResult]:
    """Each eval folder against the next eval folder in the list, on the problems both scored."""
    evals = [source for source in sources if source.kind == "eval"]
    pairs = [
        paired_comparison((a.name, a.path), (b.name, b.path)) for a, b in zip(evals, evals[1:])
    ]
    return [pair for pair in pairs if pair is not None]


PAIRED_NOTE = (
    "Paired, problem by problem (each eval folder against the next): the problems only one "
    "model got right decide; p is the exact two-sided McNemar test (are such splits likely if "
    "the two models were equally good?)."
)


def show(source: Source, label: str, value) -> str:
    """A table cell: the formatted value, with its 95% interval where the source has one."""
    interval = source.intervals.get(label)
    if interval and is_number(value):
        from smolgrpo.evaluation.evaluate import format_rate_with_interval

        return format_rate_with_interval(value, interval)
    return format_value(label.split()[-1], value)


def write_compare(
    paths: list[str], output_dir: Path | str, window: int = 5, smooth: int = 1
) -> tuple[list[Source], list[str], list[list], dict]:
    if len(paths) < 1:
        raise SmolGRPOError("compare needs at least one run or eval folder")
    if window < 1:
        raise SmolGRPOError(f"--window must be at least 1, got {window}")
    sources = [load_source(path, window) for path in paths]
    _unique_names(sources)
    labels, rows = compare_table(sources)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = {"md": output_dir / "compare.md", "json": output_dir / "compare.json"}
    paired = paired_results(sources)
    markdown = _markdown(sources, labels, rows, window)
    if paired:
        markdown += "\n" + PAIRED_NOTE + "\n\n" + "".join(f"- {p.summary()}\n" for p in paired)
    written["md"].write_text(markdown, encoding="utf-8")
    document = {
        "window": window,
        "sources": [{"name": s.name, "path": str(s.path), "kind": s.kind} for s in sources],
        "rows": [
            {
                "metric": label,
                "values": values,
                "ci95": [source.intervals.get(label) for source in sources],
            }
            for label, values in zip(labels, rows)
        ],
        "paired": [pair.as_dict() for pair in paired],
    }
    written["json"].write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    runs = [source for source in sources if source.rows]
    if runs:
        written["png"] = write_curves(runs, output_dir / "compare.png", smooth)
    return sources, labels, rows, written


def _markdown(sources: list[Source], labels: list[str], rows: list[list], window: int) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    header = "| metric | " + " | ".join(cell(f"{s.name} ({s.kind})") for s in sources) + " |"
    lines = [header, "|" + " --- |" * (len(sources) + 1)]
    for label, values in zip(labels, rows):
        shown = [show(source, label, value) for source, value in zip(sources, values)]
        lines.append(f"| {cell(label)} | " + " | ".join(shown) + " |")
    paths = "\n".join(f"- {cell(s.name)}: `{s.path}`" for s in sources)
    return "\n".join(lines) + "\n\n" + table_note(window, sources) + "\n\n" + paths + "\n"


def table_note(window: int, sources: list[Source] = ()) -> str:
    return (
        f"`train` rows: mean over {_averaged_steps(window, sources)} (sampled completions of "
        "training problems). `eval` rows: a run's last periodic eval, or an eval folder's "
        "metrics.json (held-out problems), with the 95% Wilson interval of each rate in "
        "brackets where the eval folder has one."
    )


def _averaged_steps(window: int, sources: list[Source]) -> str:
    """`a run's last 5 logged steps`, with the real count when a run logged fewer."""
    counts = {source.name: min(window, len(source.rows)) for source in sources if source.rows}
    if len(set(counts.values())) > 1:
        each = ", ".join(f"{count} for {name}" for name, count in counts.items())
        return f"a run's last logged steps ({each})"
    count = next(iter(counts.values()), window)
    return f"a run's last {count} logged step{'s' * (count != 1)}"


def write_curves(runs: list[Source], path: Path, smooth: int = 1) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    panels = [spec for spec in CURVE_KEYS if any(series(r.rows, spec[0])[0] for r in runs)]
    columns = 2 if len(panels) > 1 else 1
    lines_count = (len(panels) + columns - 1) // columns
    figure, axes = plt.subplots(
        lines_count, columns, figsize=(6.2 * columns, 3.6 * lines_count), squeeze=False
    )
    for axis, (key, title, percent) in zip(axes.flat, panels):
        for index, run in enumerate(runs):
            steps, values = series(run.rows, key)
            if not steps:
                continue
            color = f"C{index}"
            if smooth > 1 and len(values) > 1:
                axis.plot(steps, values, color=color, alpha=0.2, linewidth=1)
                values = moving_average(values, smooth)
            axis.plot(steps, values, color=color, label=run.name)
        axis.set_title(
            title + (f" ({smooth}-step moving average)" if smooth > 1 else ""), fontsize=10
        )
        axis.set_xlabel("training step")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        if percent:
            axis.yaxis.set_major_formatter(PercentFormatter(1.0))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    for axis in list(axes.flat)[len(panels) :]:
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def print_compare(
    console, sources: list[Source], labels: list[str], rows: list[list], window: int
) -> None:
    from rich.table import Table

    table = Table(title="compare", caption=table_note(window, sources))
    table.add_column("metric")
    for source in sources:
        table.add_column(f"{source.name}\n({source.kind})", justify="right")
    for label, values in zip(labels, rows):
        table.add_row(label, *(show(s, label, v) for s, v in zip(sources, values)))
    console.print(table)
    paired = paired_results(sources)
    if paired:
        console.print(PAIRED_NOTE)
        for pair in paired:
            console.print(f"- {pair.summary()}", markup=False, highlight=False)
