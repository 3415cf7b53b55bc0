"""GSM8K problems: load from the hub (`openai/gsm8k`) or from local JSONL, validate every row.

A source is resolved in this order:
  1. an existing file  -> read it as JSONL (the split name is ignored),
  2. an existing folder -> read `<folder>/<split>.jsonl`,
  3. anything else      -> a hub dataset id, loaded with `datasets` (config `main`).
With no source at all, `$SMOLGRPO_DATA_DIR` is used when set, else the hub.

Each row needs a `question` and an `answer`; the gold number is what follows the last `####` in
the answer (commas, `$` and a trailing `.` stripped). A bad row is a one-line `SmolGRPOError`
naming the file and line, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from smolgrpo.errors import SmolGRPOError

HUB_DATASET_ID = "openai/gsm8k"
DATA_DIR_ENV = "SMOLGRPO_DATA_DIR"
# GSM8K rows are under 2 KB; anything far beyond that is not a GSM8K row and must not be
# read whole into memory (a 1 GB line would otherwise be).
MAX_LINE_BYTES = 1_000_000
_GOLD_NUMBER_RE = re.compile(r"[-+]?(?:(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?|\.[0-9]+)")


@dataclass(frozen=True)
class Problem:
    question: str
    solution: str  # the reference solution text, including the `#### answer` line
    gold: str  # the gold number as a plain string, e.g. "72", "-3", "0.5"
    origin: str  # "file.jsonl:12" or "openai/gsm8k[test]:12", for error messages and samples


def parse_gold_answer(answer: str) -> str | None:
    """The gold number after the last `####`, normalised ("$1,000." -> "1000"); None if absent.

    Only a plain ASCII decimal counts: `float()` would also accept "inf", "nan", "1e3" and
    "1_000", none of which the rewards' `parse_number` reads, so such a gold could never be
    matched. Commas must group thousands ("1,000"; "1,2,3" is refused).
    """
    if not isinstance(answer, str) or "####" not in answer:
        return None
    text = answer.rsplit("####", 1)[1].strip()
    text = text.replace("$", "").strip().rstrip(".").strip()
    if not _GOLD_NUMBER_RE.fullmatch(text):
        return None
    return text.replace(",", "")


def _problem_from_row(row: object, origin: str) -> Problem:
    if not isinstance(row, dict):
        raise SmolGRPOError(f"{origin}: expected a JSON object, got {type(row).__name__}")
    for key in ("question", "answer"):
        if key not in row:
            raise SmolGRPOError(f"{origin}: missing field '{key}'")
        if not isinstance(row[key], str) or not row[key].strip():
            raise SmolGRPOError(f"{origin}: field '{key}' must be a non-empty string")
    if "####" not in row["answer"]:
        raise SmolGRPOError(f"{origin}: field 'answer' has no '#### <number>' gold answer")
    gold = parse_gold_answer(row["answer"])
    if gold is None:
        tail = row["answer"].rsplit("####", 1)[1].strip()[:40]
        raise SmolGRPOError(f"{origin}: gold answer after '####' is not a number: {tail!r}")
    return Problem(
        question=row["question"].strip(), solution=row["answer"], gold=gold, origin=origin
    )


def jsonl_rows(path: Path):
    """(line number, parsed value) for each non-blank line of a JSONL file, with a one-line
    error naming the file and line for an unreadable, oversized, binary or malformed line."""
    try:
        handle = open(path, "rb")
    except OSError as error:
        raise SmolGRPOError(f"{path}: cannot read ({error.strerror})") from None
    with handle:
        line_number = 0
        while True:
            raw = handle.readline(MAX_LINE_BYTES + 1)
            if not raw:
                break
            line_number += 1
            origin = f"{path}:{line_number}"
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                raise SmolGRPOError(f"{origin}: line longer than {MAX_LINE_BYTES:,} bytes")
            if b"\x00" in raw:
                raise SmolGRPOError(f"{origin}: binary data, not JSON text")
            try:  # utf-8-sig: a byte-order mark at the start of the file is not JSON
                text = raw.decode("utf-8-sig" if line_number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise SmolGRPOError(f"{origin}: not valid UTF-8 text") from None
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as error:
                raise SmolGRPOError(f"{origin}: malformed JSON ({error.msg})") from None
            except (ValueError, RecursionError) as error:  # huge integers, deep nesting
                raise SmolGRPOError(f"{origin}: malformed JSON ({type(error).__name__})") from None
            yield line_number, row


def read_jsonl(path: Path) -> list[Problem]:
    """Read and validate a GSM8K-style JSONL file; blank lines are skipped."""
    problems = [_problem_from_row(row, f"{path}:{number}") for number, row in jsonl_rows(path)]
    if not problems:
        raise SmolGRPOError(f"{path}: no problems found (empty file)")
    return problems


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_reachable(host: str | None = None, timeout: float = 3.0) -> bool:
    """A quick probe, so an offline machine fails in seconds instead of minutes of retries.

    Probes `$HF_ENDPOINT` (a mirror) when set, else huggingface.co; the offline switches count
    with any of the spellings huggingface_hub accepts (1, true, yes, on).
    """
    if _env_flag("HF_HUB_OFFLINE") or _env_flag("HF_DATASETS_OFFLINE"):
        return False
    port = 443
    if host is None:
        endpoint = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
        host = endpoint.hostname or "huggingface.co"
        try:
            port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
        except ValueError:  # a malformed port in HF_ENDPOINT
            return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _hub_offline(offline: bool):
    """Switch `datasets` and `huggingface_hub` to offline mode for the block (read at import
    time from the environment, so the module flags are patched), then restore them."""
    if not offline:
        yield
        return
    import datasets.config
    import huggingface_hub.constants

    saved = (datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE)
    datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE = saved


def _load_hub(dataset_id: str, split: str) -> list[Problem]:
    rows = load_hub_rows(dataset_id, split, "main")
    return [
        _problem_from_row(row, f"{dataset_id}[{split}]:{index}") for index, row in enumerate(rows)
    ]


def load_hub_rows(dataset_id: str, split: str, config_name: str | None = None):
    """The rows of one split of a hub dataset (a `datasets.Dataset`, indexable, of dicts)."""
    try:
        import datasets
    except ImportError:
        raise SmolGRPOError("the 'datasets' package is needed to load from the hub") from None
    # Probe first: offline, `datasets` would otherwise retry for ~25 s, printing every retry,
    # before failing. Unreachable -> offline mode, so a cached copy still loads.
    online = hub_reachable()
    try:
        with _hub_offline(not online):
            rows = datasets.load_dataset(dataset_id, config_name, split=split)
    except Exception as error:  # datasets raises many types; all mean "could not load"
        if not online:
            raise SmolGRPOError(
                f"cannot reach the hub to load '{dataset_id}' and it is not cached; "
                f"pass --data PATH to a folder with {split}.jsonl (or set ${DATA_DIR_ENV})"
            ) from None
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SmolGRPOError(
            f"cannot load dataset '{dataset_id}' split '{split}': {first_line}"
        ) from None
    return rows


def resolve_source(source: str | None) -> str:
    if source:
        return source
    return os.environ.get(DATA_DIR_ENV) or HUB_DATASET_ID


def load_problems(
    source: str | None = None,
    split: str = "train",
    limit: int | None = None,
    seed: int = 0,
    shuffle: bool = False,
) -> list[Problem]:
    """Problems of one split; shuffled with `seed` when asked, then cut to `limit`."""
    source = resolve_source(source)
    path = Path(source).expanduser()
    if path.is_file():
        problems = read_jsonl(path)
    elif path.is_dir():
        split_file = path / f"{split}.jsonl"
        if not split_file.is_file():
            raise SmolGRPOError(f"{path}: no '{split}.jsonl' in this folder")
        problems = read_jsonl(split_file)
    elif source.startswith((".", "/", "~")) or source.endswith(".jsonl"):
        raise SmolGRPOError(f"{source}: no such file or folder")
    else:
        problems = _load_hub(source, split)
    return shuffle_and_limit(problems, limit, seed, shuffle)


_CALCULATOR_STEP_RE = re.compile(r"<<[^<>]*>>")


def solution_steps(problem: Problem) -> int | None:
    """How many steps a problem's reference solution takes: its GSM8K calculator annotations
    (`<<48/2=24>>`), else its non-blank lines before `####`; None when it has no worked steps."""
    if "####" not in problem.solution:
        return None
    steps = problem.solution.rsplit("####", 1)[0]
    annotations = len(_CALCULATOR_STEP_RE.findall(steps))
    return annotations or sum(1 for line in steps.splitlines() if line.strip())


def keep_short_solutions(problems: list[Problem], max_steps: int | None) -> list[Problem]:
    """The problems whose reference solution takes at most `max_steps` steps (all when None):
    a difficulty cut for training (`data.max_solution_steps`), never applied to evaluation."""
    if max_steps is None:
        return problems
    kept = [p for p in problems if (solution_steps(p) or 0) <= max_steps]
    if not kept:
        raise SmolGRPOError(
            f"data.max_solution_steps {max_steps}: no train problem has that few solution steps"
        )
    return kept


def shuffle_and_limit(
    problems: list[Problem], limit: int | None, seed: int, shuffle: bool
) -> list[Problem]:
    """The problems shuffled with `seed` when asked, then cut to the first `limit`."""
    if shuffle:
        problems = list(problems)
        random.Random(seed).shuffle(problems)
    if limit is not None:
        if limit < 1:
            raise SmolGRPOError(f"--limit must be at least 1, got {limit}")
        problems = problems[:limit]
    return problems
