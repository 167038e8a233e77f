"""Exceptions that carry a one-line, user-facing message."""


class BiolabError(Exception):
    """Base class: scripts print ``str(err)`` as one line and exit non-zero."""


class ConfigError(BiolabError, ValueError):
    """A configuration value or key is invalid; raised before any work starts."""


class DataFileError(BiolabError, ValueError):
    """A shipped or user-supplied data file is missing or malformed (message names file:line)."""


class ReportError(BiolabError):
    """A run folder the report reads is missing, unfinished or inconsistent (message names the path)."""


class GenerationError(BiolabError):
    """A model could not write what was asked within its tries (the message names the item)."""
