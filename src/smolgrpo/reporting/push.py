"""`smolgrpo push RUN_DIR --repo-id USER/NAME`: upload a run's `final/` model with its card.

The upload is an explicit list of files (`upload_plan`), sent in one commit with
`huggingface_hub.HfApi.create_commit`; `--dry-run` prints that same list and touches neither
the hub nor the files. What is never sent: dot-files and dot-folders (`final/.env`), symlinks
(a link may point anywhere on the machine) and anything that is not a regular file. Three files
are sent as their public form, not as they lie on disk: the model card (`README.md`, with the
repo id in its loading snippet), `task.json` and `eval_results.json`, which name no absolute
local path (public_paths.py). The local card is rewritten with the repo id only once the upload
has succeeded. A missing token or an unreachable hub is one `error:` line, not a traceback.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from smolgrpo.config.tools import TOOLS_FILE
from smolgrpo.errors import SmolGRPOError

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
CARD_FILE = "README.md"
TASK_FILE = "task.json"
EVAL_RESULTS_FILE = "eval_results.json"


@dataclass(frozen=True)
class Upload:
    """One file of the commit: sent from `source` on disk, or as `content` (its public form)."""

    path_in_repo: str
    size: int
    source: Path | None = None
    content: bytes | None = None


def final_dir_of(run_dir: Path | str) -> Path:
    final = Path(run_dir) / "final"
    if not Path(run_dir).is_dir():
        raise SmolGRPOError(f"{run_dir}: no such run directory")
    if not (final / "config.json").is_file():
        raise SmolGRPOError(f"{final}: no trained model (train the run to its last step first)")
    return final


def local_files(final: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """(the regular files under final/ that may be sent, relative and sorted; (path, why) of
    what is left out). Symlinks are never followed."""
    kept, skipped = [], []
    for folder, dirnames, filenames in os.walk(final, followlinks=False):
        relative = Path(folder).relative_to(final)
        for name in sorted(dirnames):
            path = Path(folder) / name
            if name.startswith(".") or path.is_symlink():
                why = "a symlink" if path.is_symlink() else "a dot-folder"
                skipped.append(((relative / name).as_posix() + "/", why))
                dirnames.remove(name)
        for name in filenames:
            shown = (relative / name).as_posix()
            mode = os.lstat(Path(folder) / name).st_mode
            if name.startswith("."):
                skipped.append((shown, "a dot-file"))
            elif stat.S_ISLNK(mode):
                skipped.append((shown, "a symlink"))
            elif not stat.S_ISREG(mode):
                skipped.append((shown, "not a regular file"))
            else:
                kept.append(shown)
    return sorted(kept), sorted(skipped)


def upload_plan(run_dir: Path | str, repo_id: str) -> tuple[list[Upload], list[tuple[str, str]]]:
    """(every file the upload sends, what it leaves out and why)."""
    from smolgrpo.reporting.model_card import model_card_text
    from smolgrpo.reporting.public_paths import (
        public_eval_metrics,
        public_task_fields,
        public_tool_fields,
    )

    final = final_dir_of(run_dir)
    run = final.parent
    names, skipped = local_files(final)
    public: dict[str, bytes] = {CARD_FILE: model_card_text(run_dir, repo_id).encode("utf-8")}
    for name, make_public in (
        (TASK_FILE, public_task_fields),
        (EVAL_RESULTS_FILE, public_eval_metrics),
        (TOOLS_FILE, public_tool_fields),
    ):
        if name in names:
            try:
                saved = json.loads((final / name).read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                raise SmolGRPOError(f"{final / name}: unreadable ({error})") from None
            if not isinstance(saved, dict):
                raise SmolGRPOError(f"{final / name}: not a JSON object")
            shown = make_public(saved, run)
            public[name] = (json.dumps(shown, indent=2) + "\n").encode("utf-8")
    uploads = [
        Upload(name, len(public[name]), content=public[name])
        if name in public
        else Upload(name, (final / name).stat().st_size, source=final / name)
        for name in sorted(set(names) | set(public))
    ]
    return uploads, skipped


def human_size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


def _network_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a failed hub call can raise (huggingface_hub's HTTP stack has changed)."""
    errors: list[type[BaseException]] = [OSError, ValueError]
    for module_name in ("httpx", "httpx2", "requests"):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        for name in ("HTTPError", "RequestException"):
            if isinstance(getattr(module, name, None), type):
                errors.append(getattr(module, name))
    return tuple(errors)


def push_run(
    run_dir: Path | str,
    repo_id: str,
    private: bool = False,
    dry_run: bool = False,
    log=print,
) -> str | None:
    """Upload final/; returns the repo URL (None for a dry run)."""
    if not REPO_ID.match(repo_id or ""):
        raise SmolGRPOError(f"--repo-id '{repo_id}': expected USER/NAME (letters, digits, -_.)")
    final = final_dir_of(run_dir)
    plan, skipped = upload_plan(run_dir, repo_id)
    if dry_run:
        for upload in plan:
            note = "  (its public form: no local paths)" if upload.content is not None else ""
            log(f"{human_size(upload.size):>10}  {upload.path_in_repo}{note}")
        for shown, why in skipped:
            log(f"   skipped  {shown} ({why}: never uploaded)")
        total = sum(upload.size for upload in plan)
        visibility = "private" if private else "public"
        log(
            f"dry run: would upload {len(plan)} files ({human_size(total)}) from {final} "
            f"to the {visibility} model repo {repo_id}; nothing was uploaded"
        )
        return None

    from huggingface_hub import CommitOperationAdd, HfApi, get_token

    if not get_token():
        raise SmolGRPOError("no Hugging Face token: run `hf auth login` or set HF_TOKEN")
    operations = [
        CommitOperationAdd(
            path_in_repo=upload.path_in_repo,
            path_or_fileobj=upload.content if upload.content is not None else str(upload.source),
        )
        for upload in plan
    ]
    api = HfApi()
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.create_commit(
            repo_id=repo_id,
            operations=operations,
            repo_type="model",
            commit_message=f"Upload {Path(run_dir).name} (smolgrpo)",
        )
    except _network_errors() as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise SmolGRPOError(f"push to {repo_id} failed: {first_line}") from None
    card = next(upload for upload in plan if upload.path_in_repo == CARD_FILE)
    local_card = final / CARD_FILE
    if local_card.is_symlink():  # never written through a link
        local_card.unlink()
    local_card.write_bytes(card.content)  # the card now names the repo it is in
    log(f"uploaded {len(plan)} files from {final} to {url}")
    return str(url)
