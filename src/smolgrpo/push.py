"""`smolgrpo push RUN_DIR --repo-id USER/NAME`: upload a run's `final/` model with its card.

`--dry-run` lists what would be uploaded and touches neither the hub nor the files. A real push
first rewrites the model card with the repo id in its loading snippet, then creates the repo
(if needed) and uploads the folder in one commit with `huggingface_hub.HfApi.upload_folder`.
A missing token or an unreachable hub is one `error:` line, not a traceback.
"""

from __future__ import annotations

import re
from pathlib import Path

from smolgrpo.errors import SmolGRPOError

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


def final_dir_of(run_dir: Path | str) -> Path:
    final = Path(run_dir) / "final"
    if not Path(run_dir).is_dir():
        raise SmolGRPOError(f"{run_dir}: no such run directory")
    if not (final / "config.json").is_file():
        raise SmolGRPOError(f"{final}: no trained model (train the run to its last step first)")
    return final


def upload_plan(final: Path) -> list[tuple[str, int]]:
    """(path relative to final/, size in bytes) of every file upload_folder would send."""
    return sorted(
        (path.relative_to(final).as_posix(), path.stat().st_size)
        for path in final.rglob("*")
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(final).parts)
    )


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
    plan = upload_plan(final)
    if dry_run:
        for relative, size in plan:
            log(f"{human_size(size):>10}  {relative}")
        total = sum(size for _, size in plan)
        visibility = "private" if private else "public"
        log(
            f"dry run: would upload {len(plan)} files ({human_size(total)}) from {final} "
            f"to the {visibility} model repo {repo_id}; nothing was uploaded"
        )
        return None

    from huggingface_hub import HfApi, get_token

    if not get_token():
        raise SmolGRPOError("no Hugging Face token: run `hf auth login` or set HF_TOKEN")
    from smolgrpo.model_card import refresh_model_card

    refresh_model_card(run_dir, repo_id=repo_id)  # the loading snippet names the repo
    api = HfApi()
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(
            folder_path=str(final),
            repo_id=repo_id,
            repo_type="model",
            commit_message=f"Upload {Path(run_dir).name} (smolgrpo)",
        )
    except _network_errors() as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise SmolGRPOError(f"push to {repo_id} failed: {first_line}") from None
    log(f"uploaded {len(plan)} files from {final} to {url}")
    return str(url)
