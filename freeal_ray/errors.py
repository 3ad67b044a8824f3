"""Errors a user can act on. Each message names the problem and, where there is one, the row."""


class FreeALError(Exception):
    """Base class: the CLI prints these as one clear line, never as a stack trace."""


class ConfigError(FreeALError):
    """The config file or a flag is wrong."""


class CorpusError(FreeALError):
    """The corpus cannot be read or lacks what the task needs."""


def short_reason(exc: BaseException) -> str:
    """The exception's type and last non-empty line: what a user needs, without the stack."""
    while getattr(exc, "cause", None) is not None and exc.cause is not exc:  # Ray wraps the task's own error
        exc = exc.cause
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1][:400]}" if lines else type(exc).__name__
