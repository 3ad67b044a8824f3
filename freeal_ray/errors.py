"""Errors a user can act on. Each message names the problem and, where there is one, the row."""


class FreeALError(Exception):
    """Base class: the CLI prints these as one clear line, never as a stack trace."""


class ConfigError(FreeALError):
    """The config file or a flag is wrong."""


class CorpusError(FreeALError):
    """The corpus cannot be read or lacks what the task needs."""
