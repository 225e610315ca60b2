"""Errors a user can act on.

Every error raised on bad input names what is wrong, where (a file, a setting, a category) and what to
do. The command line prints the message without a traceback and exits non-zero.
"""


class CutswapError(Exception):
    """Base class of errors caused by input or settings rather than by a bug."""


class DatasetError(CutswapError):
    """A dataset on disk is missing, malformed or unsafe; the message lists every problem found."""


class SettingsError(CutswapError):
    """A preset or override is invalid; the message names the setting and the file it came from."""


class StoreError(CutswapError):
    """A store is missing, incomplete, or cannot be written (disk full, permissions)."""


class RunFailed(CutswapError):
    """The run itself failed (a stage or job raised, not its input): the message names the stage, the
    category or job, and the cause; the command exits 1."""


class StageFailed(RunFailed):
    """A stage raised something other than a ``CutswapError`` (a bug, a resource failure) on one item."""

    def __init__(self, stage: str, item: str, cause: str) -> None:
        super().__init__(f"{stage} {item} failed: {cause}")
        self.stage, self.item, self.cause = stage, item, cause

    def __reduce__(self) -> tuple:
        return type(self), (self.stage, self.item, self.cause)


def one_line(exc: BaseException) -> str:
    """An exception as one line: its message's first line (obstore's, for one, carry a debug dump on the
    lines after it), after its type unless it is ours."""
    text = str(exc).strip().split("\n", 1)[0] or repr(exc)
    return text if isinstance(exc, CutswapError) else f"{type(exc).__name__}: {text}"
