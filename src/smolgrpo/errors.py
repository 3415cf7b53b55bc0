"""One exception type for problems a user can fix (bad file, bad config key, missing model).

The CLI prints these as a single `error: ...` line and exits with status 2; anything else is a
bug and keeps its traceback. `is_disk_full` lives here, a leaf module, because checkpoint.py
(which must tell a full disk from a bug) and guards.py (which words the message, and reads the
checkpoints) both need it.
"""

import errno

# safetensors reports a full disk as a SafetensorError (not an OSError) holding this text.
_DISK_FULL_TEXTS = ("no space left on device", "disk quota exceeded")


class SmolGRPOError(Exception):
    """A user-facing error whose message is one line naming the file, line or key at fault."""


def warn(message: str) -> None:
    """One `warning: ...` line on stderr (no file/line noise as `warnings.warn` would add)."""
    import sys

    print(f"warning: {message}", file=sys.stderr, flush=True)


def is_disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(error, Exception) and any(t in str(error).lower() for t in _DISK_FULL_TEXTS)
