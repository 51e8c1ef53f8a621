"""A CallbackList that skips the per-batch work no callback asks for.

`keras.callbacks.CallbackList` turns the step's logs into Python floats on
every batch hook (one host sync per batch) even when no callback overrides
the hook: with `verbose=0`, fit's list holds only `History`, which has no
batch hook. ManualLoop's list skips a batch hook no callback overrides (nor
the old name it falls back to: `on_train_batch_end` calls `on_batch_end`),
calls the callbacks marked `reads_batch_logs = False` (customfit's
`BackupCallback`) with the logs unconverted, and otherwise does exactly what
Keras' list does. Listeners are looked up on every call, so callbacks added
to `.callbacks` later are honoured.
"""

from __future__ import annotations

from functools import partialmethod
from typing import Any

import keras

_BASE = keras.callbacks.Callback

# The Callback methods a CallbackList batch hook reaches: Callback's own
# on_train_batch_begin/end call on_batch_begin/end, the pre-TF2 names.
_REACHES = {
    "on_batch_begin": ("on_batch_begin",),
    "on_batch_end": ("on_batch_end",),
    "on_train_batch_begin": ("on_train_batch_begin", "on_batch_begin"),
    "on_train_batch_end": ("on_train_batch_end", "on_batch_end"),
    "on_test_batch_begin": ("on_test_batch_begin",),
    "on_test_batch_end": ("on_test_batch_end",),
    "on_predict_batch_begin": ("on_predict_batch_begin",),
    "on_predict_batch_end": ("on_predict_batch_end",),
}


def listens(callback: keras.callbacks.Callback, hook: str) -> bool:
    """Whether `callback` overrides the batch `hook`, or the old name that
    `keras.callbacks.Callback`'s no-op for it calls."""
    return any(_overrides(callback, name) for name in _REACHES[hook])


def _overrides(callback: keras.callbacks.Callback, name: str) -> bool:
    method = getattr(callback, name, None)
    return getattr(method, "__func__", None) is not getattr(_BASE, name)


class CallbackList(keras.callbacks.CallbackList):
    """`keras.callbacks.CallbackList` (same arguments), minus batch hooks
    nobody listens to; see the module docstring."""

    def _dispatch(self, hook: str, batch: int, logs: Any = None) -> None:
        listeners = [c for c in self.callbacks if listens(c, hook)]
        if not listeners:
            return
        if not any(getattr(c, "reads_batch_logs", True) for c in listeners):
            for callback in listeners:
                getattr(callback, hook)(batch, logs=logs)
            return
        getattr(super(), hook)(batch, logs)

    on_batch_begin = partialmethod(_dispatch, "on_batch_begin")
    on_batch_end = partialmethod(_dispatch, "on_batch_end")
    on_train_batch_begin = partialmethod(_dispatch, "on_train_batch_begin")
    on_train_batch_end = partialmethod(_dispatch, "on_train_batch_end")
    on_test_batch_begin = partialmethod(_dispatch, "on_test_batch_begin")
    on_test_batch_end = partialmethod(_dispatch, "on_test_batch_end")
    on_predict_batch_begin = partialmethod(_dispatch, "on_predict_batch_begin")
    on_predict_batch_end = partialmethod(_dispatch, "on_predict_batch_end")
