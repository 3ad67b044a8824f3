"""Errors a user can act on. Each message names the problem and, where there is one, the row."""


class FreeALError(Exception):
    """Base class: the CLI prints these as one clear line, never as a stack trace."""


class ConfigError(FreeALError):
    """The config file or a flag is wrong."""


class CorpusError(FreeALError):
    """The corpus cannot be read or lacks what the task needs."""


def short_reason(exc: BaseException) -> str:
    """The innermost cause's type and last non-empty line: what a user needs, without the stack.
    Ray wraps a task's own error (`cause`), and Ray Data wraps that again (`__cause__`) in an
    exception whose message is only advice on retries."""
    while (inner := getattr(exc, "cause", None) or exc.__cause__) is not None and inner is not exc:
        exc = inner
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1][:400]}" if lines else type(exc).__name__
