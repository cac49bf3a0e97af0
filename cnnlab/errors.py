"""The base of every error a user fixes by changing a command, a file or a folder."""

from __future__ import annotations


class CnnlabError(RuntimeError):
    """Its message is the whole explanation (what is wrong and what to do), so the CLI prints it on one
    line without a traceback."""


class ConfigError(CnnlabError, ValueError):
    """A config value is unknown, of the wrong type or out of range."""
