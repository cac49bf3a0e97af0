"""The one exception for data problems a user fixes by hand (missing files, no network, bad folders)."""

from __future__ import annotations

from cnnlab.errors import CnnlabError


class DataError(CnnlabError):
    """Its message is the whole explanation (what is wrong, where, what to do), so the CLI can print it
    without a traceback."""
