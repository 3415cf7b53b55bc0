"""`report.html`: one self-contained page per run (config, summary, plots, completions browser).

Everything is inline: plots are base64 PNGs, style and script live in the page, so the file can
be mailed or opened offline. Model text is untrusted: every string from the run is escaped with
`html.escape` when the page is built (the script never turns data into markup), and a Content
Security Policy lets only this page's own script run (by its hash) and loads nothing from
anywhere. The completions browser is rendered server-side; the script only shows one step at a
time and writes what it shows into `#browser-status`, which the browser test reads.
"""

from __future__ import annotations

import base64
import hashlib
import html
import time
from pathlib import Path

import yaml

from smolgrpo.reporting.format import format_value, is_number, window_headings
from smolgrpo.rewards import answers

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0;
  color: #1d2430; background: #f6f7f9; }
main { max-width: 1240px; margin: 0 auto; padding: 8px 24px 48px; }
h1 { font-size: 24px; margin: 20px 0 2px; } h2 { font-size: 19px; margin: 0 0 10px; }
h3 { font-size: 16px; margin: 8px 0; }
section { background: #fff; border: 1px solid #dde1e7; border-radius: 8px; padding: 16px 20px;
  margin: 16px 0; }
.subtitle { color: #5b6472; margin: 0 0 8px; }
nav a { margin-right: 14px; color: #2456a6; text-decoration: none; }
table { border-collapse: collapse; margin: 6px 0 12px; }
th, td { padding: 3px 10px; border-bottom: 1px solid #e6e9ee; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f0f2f5; }
td.up { color: #1a5fb4; } td.down { color: #9c4a00; }  /* direction only, not good or bad */
.plots { display: grid; grid-template-columns: 1fr; gap: 12px; }
figure { margin: 0; }
.plots img { max-width: 100%; border: 1px solid #eceef2; border-radius: 4px; }
.controls { display: flex; gap: 10px; align-items: center; flex-wrap: wrap; margin-bottom: 8px; }
select, button { font: inherit; padding: 3px 8px; }
#browser-status { color: #5b6472; }
.prompt { border-top: 1px solid #dde1e7; padding-top: 8px; margin-top: 12px; }
.prompt h4 { margin: 4px 0; font-size: 15px; }
.question { white-space: pre-wrap; background: #f6f7f9; padding: 6px 10px; border-radius: 4px;
  margin: 4px 0 8px; }
ol.completions { list-style: none; padding: 0; margin: 0; display: grid; gap: 8px;
  grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); }
.completion { border: 1px solid #dde1e7; border-left: 5px solid #c8ccd4; border-radius: 5px;
  padding: 6px 10px; background: #fff; min-width: 0; }
.completion.correct { border-left-color: #1f9d49; background: #f3fbf5; }
.meta { display: flex; gap: 12px; flex-wrap: wrap; font-size: 13px; margin-bottom: 4px; }
.badge { font-weight: 600; padding: 0 6px; border-radius: 3px; background: #e9ecf1; }
.correct .badge { background: #1f9d49; color: #fff; }
.rewards { display: flex; flex-wrap: wrap; gap: 4px; margin: 2px 0 6px; padding: 0;
  list-style: none; font-size: 12px; }
.rewards li { background: #eef1f5; border-radius: 3px; padding: 0 5px; }
.rewards li.full { background: #d9f0e0; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; margin: 0;
  font: 12.5px/1.4 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
.completion pre { max-height: 320px; overflow: auto; background: #fbfbfc; padding: 4px 6px; }
code { font-family: ui-monospace, Menlo, Consolas, monospace; }
"""

SCRIPT = """
(function () {
  "use strict";
  var select = document.getElementById("step-select");
  var status = document.getElementById("browser-status");
  var steps = Array.prototype.slice.call(document.querySelectorAll("div.step"));
  if (!select || steps.length === 0) { status.dataset.state = "empty"; return; }
  function show(value) {
    var shown = null;
    steps.forEach(function (element) {
      element.hidden = element.dataset.step !== value;
      if (!element.hidden) { shown = element; }
    });
    select.value = value;
    var prompts = shown.querySelectorAll(".prompt").length;
    var completions = shown.querySelectorAll(".completion").length;
    var correct = shown.querySelectorAll(".completion.correct").length;
    status.textContent = "step " + value + ": " + prompts + " prompts, " + completions +
      " completions, " + correct + " correct";
    status.dataset.state = "ready";
    status.dataset.step = value;
    status.dataset.completions = String(completions);
    return shown;
  }
  function move(offset) {
    var index = select.selectedIndex + offset;
    if (index >= 0 && index < select.options.length) { show(select.options[index].value); }
  }
  select.addEventListener("change", function () { show(select.value); });
  document.getElementById("step-prev").addEventListener("click", function () { move(-1); });
  document.getElementById("step-next").addEventListener("click", function () { move(1); });
  var wanted = /^#step-(\\d+)$/.exec(window.location.hash);
  var start = wanted && document.getElementById("step-" + wanted[1]) ? wanted[1] : select.value;
  var shown = show(start);
  // The browser scrolled to #step-N before the other steps were hidden: scroll again.
  if (wanted) { shown.scrollIntoView(); }
})();
"""


class _ReadableDumper(yaml.SafeDumper):
    """Multi-line strings (the system prompt) as `|` blocks, not quoted with doubled newlines."""


def _represent_str(dumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ReadableDumper.add_representer(str, _represent_str)


def e(value) -> str:
    return html.escape(str(value), quote=True)


def render_report_html(run, summary: dict, plots: dict[str, Path], smooth: int = 1) -> str:
    """The whole page as a string; `run` is a `report.RunData`."""
    script_hash = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    policy = (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{script_hash}'"
    )
    model = run.config.get("model", {}).get("name", "?")
    title = f"smolgrpo report: {run.run_dir.name}"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{STYLE}</style></head><body><main>",
        f"<h1>{e(run.run_dir.name)}</h1>",
        f'<p class="subtitle">GRPO run of <code>{e(model)}</code> · {summary["num_steps"]} '
        f"logged steps · report written {e(time.strftime('%Y-%m-%d %H:%M'))}</p>",
        '<nav><a href="#summary">Summary</a><a href="#plots">Plots</a>'
        '<a href="#samples">Completions</a><a href="#config">Config</a></nav>',
        _summary_section(summary),
        _plots_section(plots, smooth, summary.get("notes", {})),
        _samples_section(run.samples, run.config)
        if summary.get("text_included", True)
        else '<section id="samples"><h2>Completions</h2><p>Left out of this report '
        "(<code>smolgrpo report --no-text</code>): no problem or completion text is copied "
        "into it.</p></section>",
        '<section id="config"><h2>Config</h2>'
        f"<pre>{e(yaml.dump(run.config, Dumper=_ReadableDumper, sort_keys=False, allow_unicode=True))}</pre>"
        "</section>",
        f"</main><script>{SCRIPT}</script></body></html>",
    ]
    return "\n".join(parts) + "\n"


def _summary_section(summary: dict) -> str:
    single = summary.get("single_window")  # as few steps as the window: one column, no change
    rows = []
    for item in summary["metrics"]:
        metric, before, after = item["metric"], item["first"], item["last"]
        cells = [f"<td>{e(format_value(metric, before))}</td>"]
        if not single:
            change, css = "—", ""
            if is_number(before) and is_number(after):
                change = _signed(metric, after - before)
                css = "up" if after > before else "down" if after < before else ""
            cells.append(f"<td>{e(format_value(metric, after))}</td>")
            cells.append(f"<td class='{css}'>{e(change)}</td>")
        rows.append(f"<tr><td><code>{e(metric)}</code></td>{''.join(cells)}</tr>")
    over = (
        f"all {summary['num_steps']} logged steps"
        if single
        else f"the first and the last {summary['window']} logged steps"
    )
    headings = window_headings(summary, dash="–") + ([] if single else ["change"])
    parts = [
        '<section id="summary"><h2>Summary</h2>',
        f"<p class='subtitle'>Means over {over} (training samples, sampled at the training "
        "temperature).</p>",
        "<table><thead><tr><th>metric</th>",
        "".join(f"<th>{e(heading)}</th>" for heading in headings),
        "</tr></thead><tbody>",
        *rows,
        "</tbody></table>",
        *(
            f"<p class='subtitle'><code>{e(metric)}</code>: {e(why)}</p>"
            for metric, why in summary.get("notes", {}).items()
        ),
    ]
    if summary.get("eval"):
        parts.append(
            _eval_table(f"Last periodic eval (step {summary['eval_step']})", summary["eval"])
        )
    if summary.get("external_eval"):
        external = summary["external_eval"]
        parts.append(_eval_table(f"Evaluation: {external['path']}", external["metrics"]))
    parts.append("</section>")
    return "\n".join(parts)


def _signed(metric: str, delta: float) -> str:
    shown = format_value(metric, abs(delta))
    if shown.endswith("%"):
        shown = shown[:-1] + " pp"  # a change of a rate is in percentage points
    return ("+" if delta > 0 else "−" if delta < 0 else "±") + shown


def _eval_table(title: str, metrics: dict) -> str:
    rows = "".join(
        f"<tr><td><code>{e(key)}</code></td><td>{e(format_value(key, value))}</td></tr>"
        for key, value in metrics.items()
        if is_number(value)
    )
    return (
        f"<h3>{e(title)}</h3><table><thead><tr><th>metric</th><th>value</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def _plots_section(plots: dict[str, Path], smooth: int, notes: dict | None = None) -> str:
    note = f" Lines are {smooth}-step moving averages; the raw values are drawn faint." * (
        smooth > 1
    )
    note += "".join(f" Not plotted: {metric}, {why}." for metric, why in (notes or {}).items())
    figures = []
    for stem, path in plots.items():
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        figures.append(
            f'<figure><img alt="{e(stem.replace("_", " "))} plot" '
            f'src="data:image/png;base64,{data}"></figure>'
        )
    if not figures:
        figures.append("<p>No plottable metrics.</p>")
    return (
        f'<section id="plots"><h2>Plots</h2><p class="subtitle">x axis: training step.{note}</p>'
        f'<div class="plots">{"".join(figures)}</div></section>'
    )


def is_correct(completion: dict, gold) -> bool:
    """The logged correctness reward when there is one, else the reward's own check."""
    rewards = completion.get("rewards") or {}
    if is_number(rewards.get("correctness")):
        return answers.counts_as_correct(rewards["correctness"])
    text = str(completion.get("text", ""))
    return gold is not None and answers.is_correct(answers.extract_answer(text), str(gold))


def _samples_section(samples: dict[int, list[dict]], config: dict) -> str:
    head = '<section id="samples"><h2>Completions</h2>'
    if not samples:
        return head + "<p>No samples were logged (see run.log_samples_every).</p></section>"
    weights = (config.get("rewards") or {}).get("weights") or {}
    options = "".join(f'<option value="{step}">step {step}</option>' for step in samples)
    parts = [
        head,
        "<p class='subtitle'>The G completions of each logged prompt, with the prefill. "
        "Green: the answer block matches the gold answer.</p>",
        '<div class="controls"><label for="step-select">Training step</label>',
        f'<select id="step-select">{options}</select>',
        '<button id="step-prev" type="button">◀ previous</button>',
        '<button id="step-next" type="button">next ▶</button>',
        '<span id="browser-status" data-state="no-script">(script not run: all steps shown)</span>',
        "</div>",
    ]
    for step, records in samples.items():
        parts.append(f'<div class="step" id="step-{step}" data-step="{step}"><h3>Step {step}</h3>')
        for number, record in enumerate(records, 1):
            parts.append(_prompt_block(number, record, weights))
        parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts)


def _prompt_block(number: int, record: dict, weights: dict) -> str:
    gold = record.get("gold")
    completions = [c for c in record.get("completions", []) if isinstance(c, dict)]
    flags = [is_correct(c, gold) for c in completions]
    items = "".join(_completion_item(c, gold, ok, weights) for c, ok in zip(completions, flags))
    return (
        f'<article class="prompt"><h4>Prompt {number} · <code>{e(record.get("origin", "?"))}</code>'
        f" · gold <code>{e(gold)}</code> · {sum(flags)} of {len(completions)} correct</h4>"
        f'<pre class="question">{e(record.get("question", ""))}</pre>'
        f'<ol class="completions">{items}</ol></article>'
    )


def _completion_item(completion: dict, gold, correct: bool, weights: dict) -> str:
    text = str(completion.get("text", ""))
    extracted = answers.extract_answer(text)
    rewards = completion.get("rewards") or {}
    chips = "".join(
        f'<li class="{"full" if value == 1 else ""}" title="weight {e(weights.get(name, "?"))}">'
        f"{e(name)} <b>{e(_short(value))}</b></li>"
        for name, value in rewards.items()
    )
    badge = "✓ correct" if correct else "✗"
    return (
        f'<li class="completion{" correct" if correct else ""}"><div class="meta">'
        f'<span class="badge">{badge}</span>'
        f"<span>total reward <b>{e(_short(completion.get('total_reward')))}</b></span>"
        f"<span>extracted <code>{e(extracted if extracted is not None else '—')}</code></span>"
        f"<span>gold <code>{e(gold)}</code></span></div>"
        f'<ul class="rewards">{chips}</ul>'
        f"<pre>{e(text)}</pre></li>"
    )


def _short(value) -> str:
    return f"{value:.3g}" if is_number(value) else str(value)
