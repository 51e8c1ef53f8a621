"""The error types customfit raises, and the one way their messages read.

Every message answers four questions, in this order: what is wrong (naming
the argument), what was expected, what was received, and how to fix it.
"""

from __future__ import annotations


class CustomFitError(Exception):
    """Base class of every error customfit raises on its own account.

    `InputValueError(what, expected=..., received=..., fix=...)` renders its
    message with `message`; given `what` alone, that is the message.
    """

    # Raised while a step is traced, it reaches the caller as it is (the
    # step's autograph would rewrite it into a StagingError otherwise).
    ag_pass_through = True

    def __init__(self, what: str, **parts: str) -> None:
        super().__init__(message(what, **parts) if parts else what)


class InputValueError(CustomFitError, ValueError):
    """An argument has the right type but an unusable value."""


class InputTypeError(CustomFitError, TypeError):
    """An argument has a type customfit cannot work with."""


class HookError(CustomFitError, TypeError):
    """A `CustomModel` hook returned what the training step cannot use."""


class NotCompiledError(CustomFitError, ValueError):
    """The model must be compiled before it can be trained or evaluated."""


class MissingDependencyError(CustomFitError, ImportError):
    """An optional dependency (an extra of customfit) is not installed."""


class UnsupportedStrategyError(CustomFitError, ValueError):
    """A driver cannot run under the model's `tf.distribute` strategy."""


class WorkerLostError(CustomFitError, RuntimeError):
    """A worker of a multi-worker run stopped answering; relaunch them all."""


class Preempted(SystemExit):
    """`fit` stopped on a termination signal after writing a backup.

    A `SystemExit` (not an `Exception`, so keras-tuner does not record the
    trial as failed): uncaught, it ends the program with `code` 143, the
    status of a process ended by SIGTERM (128 + 15), which schedulers
    requeue on. See docs/cluster.md.
    """

    EXIT_CODE = 143


def message(what: str, *, expected: str, received: str, fix: str) -> str:
    """Renders an error message in customfit's four-part form.

    Args:
        what: One sentence naming the argument and the problem.
        expected: What a valid value looks like.
        received: What was passed (keep it short: a repr or a type).
        fix: What the user can change to make the call work.

    Returns:
        The message, one part per line.

    Examples:
        >>> print(message("`epochs` must be positive.", expected="epochs >= 1",
        ...               received="epochs=0", fix="pass epochs=1 or more."))
        `epochs` must be positive.
        Expected: epochs >= 1.
        Received: epochs=0.
        Fix: pass epochs=1 or more.
    """
    return (
        f"{what}\n"
        f"Expected: {_sentence(expected)}\n"
        f"Received: {_sentence(received)}\n"
        f"Fix: {_sentence(fix)}"
    )


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "?", "!")) else text + "."
