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
