"""Typed exceptions raised by the library; only the CLI turns them into messages and exit codes."""


class StopError(Exception):
    """Base class for every error the library raises on purpose."""


class BadInput(StopError):
    """The user's input cannot be used (missing file, bad flag value, unreachable server)."""


class BudgetExhausted(StopError):
    """A language-model or utility budget, enforced by the host, has run out."""


class ModelError(StopError):
    """The language model failed after the SDK's own retries."""


class SandboxError(StopError):
    """The sandbox itself (not the code inside it) failed to run."""


class Interrupted(StopError):
    """Ctrl-C: the message says what was kept and, where it can, how to go on."""
