"""The documentation agrees with the code and with the committed result files.

- README stays one screen per question (at most 320 lines) and its test command is `.ci/run`'s.
- Every table in README and docs/results.md with a `source` column is checked against the file
  it names: an eval's `metrics.json`, or a column of a `compare.json` named in backticks.
- docs/configuration.md is what tools/configuration_doc.py generates from the config dataclasses.
- No page cites issue numbers or commit hashes.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"

# column header -> the metric of metrics.json / compare.json it shows
COLUMNS = {
    "accuracy": "accuracy",
    "strict format": "strict_format_rate",
    "truncated": "truncation_rate",
}


def _rows(page: Path):
    """(header cells, row cells) of every Markdown table with a `source` column."""
    lines = page.read_text().splitlines()
    for i, line in enumerate(lines[:-1]):
        if not (line.startswith("|") and lines[i + 1].startswith("| ---")):
            continue
        header = _cells(line)
        if "source" not in header:
            continue
        for row in lines[i + 2 :]:
            if not row.startswith("|"):
                break
            yield header, _cells(row)


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _source_values(page: Path, cell: str) -> dict:
    """The metrics of the file the source cell links to (a compare.json: the named column)."""
    link = re.search(r"\]\(([^)]+\.json)\)", cell)
    assert link, f"{page.name}: a source cell without a .json link: {cell}"
    path = (page.parent / link.group(1)).resolve()
    data = json.loads(path.read_text())
    if "rows" not in data:  # an eval's metrics.json
        return {key: (data[key], data.get(f"{key}_ci95")) for key in COLUMNS.values()}
    name = re.search(r"`([^`]+)`", cell)
    assert name, f"{page.name}: a compare.json source names no column: {cell}"
    index = [source["name"] for source in data["sources"]].index(name.group(1))
    values = {}
    for row in data["rows"]:
        metric = row["metric"].removeprefix("eval ")
        if metric in COLUMNS.values():
            ci = row.get("ci95")
            values[metric] = (row["values"][index], ci[index] if ci else None)
    return values


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def _expected(value: float, ci) -> str:
    text = f"{_percent(value)}%"
    if ci is not None:
        text += f" [{_percent(ci[0])}, {_percent(ci[1])}]"
    return text


def _checked_rows():
    for page in (README, DOCS / "results.md"):
        for header, row in _rows(page):
            yield page, header, row


def test_pages_have_source_tables():
    pages = {page.name for page, _, _ in _checked_rows()}
    assert pages == {"README.md", "results.md"}


@pytest.mark.parametrize(
    "page, header, row",
    list(_checked_rows()),
    ids=lambda value: value.name if isinstance(value, Path) else None,
)
def test_table_numbers_match_result_files(page, header, row):
    values = _source_values(page, row[header.index("source")])
    checked = 0
    for title, cell in zip(header, row, strict=True):
        metric = COLUMNS.get(re.sub(r"\s*\[95% CI\]", "", title))
        if metric is None:
            continue
        value, ci = values[metric]
        shown = cell.replace("*", "")
        expected = _expected(value, ci) if "[" in shown else f"{_percent(value)}%"
        assert shown == expected, f"{page.name}, {row[0]}, {title}: {shown} != file's {expected}"
        checked += 1
    assert checked >= 2, f"{page.name}, {row[0]}: no number checked"


def test_readme_headline_table_has_base_cpu_and_gpu_rows():
    labels = [row[0] for _, row in _rows(README)]
    assert any("as released" in label for label in labels)
    assert any("CPU hour chain" in label for label in labels)
    assert any("GPU 10-minute chain" in label for label in labels)


def test_readme_is_short():
    lines = README.read_text().count("\n")
    assert lines <= 320, f"README.md has {lines} lines (at most 320)"


def test_readme_test_command_is_ci_command():
    ci_line = (ROOT / ".ci/run").read_text().strip().splitlines()[-1]
    assert ci_line.endswith("python3 -m pytest -q")
    assert f"```bash\n{ci_line}\n```" in README.read_text()


def test_configuration_reference_is_generated_from_the_config():
    spec = importlib.util.spec_from_file_location(
        "configuration_doc", ROOT / "tools" / "configuration_doc.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = module.generate()
    committed = (DOCS / "configuration.md").read_text()
    assert committed == expected, (
        "docs/configuration.md differs from the config dataclasses: "
        "run python tools/configuration_doc.py and commit it"
    )


def test_configuration_reference_names_every_key():
    from dataclasses import fields

    from smolgrpo.config.schema import Config

    text = (DOCS / "configuration.md").read_text()
    for section in fields(Config):
        assert f"## `{section.name}`" in text
        for key in fields(section.default_factory):
            assert f"| `{key.name}` |" in text, f"{section.name}.{key.name} missing"


def test_no_page_cites_issues_or_commits():
    pages = [README, *DOCS.glob("*.md")]
    for page in pages:
        text = page.read_text()
        for pattern in (r"\bissue #?\d+", r"\bcommits? [0-9a-f]{7,40}\b", r"\bsession\b"):
            match = re.search(pattern, text, flags=re.IGNORECASE)
            assert match is None, f"{page.name}: '{match.group(0)}'"
