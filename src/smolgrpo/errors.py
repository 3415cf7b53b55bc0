"""One exception type for problems a user can fix (bad file, bad config key, missing model).

The CLI prints these as a single `error: ...` line and exits with status 2; anything else is a
bug and keeps its traceback.
"""


class SmolGRPOError(Exception):
    """A user-facing error whose message is one line naming the file, line or key at fault."""


def warn(message: str) -> None:
    """One `warning: ...` line on stderr (no file/line noise as `warnings.warn` would add)."""
    import sys

    print(f"warning: {message}", file=sys.stderr, flush=True)
