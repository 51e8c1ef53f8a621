"""The optimizer's update as one compiled function while steps run eagerly.

With `run_eagerly=True` every op of a step runs one by one from Python, and
Keras' optimizer update is the slowest part: for each variable, a dozen
Keras ops, each dispatched through several Python layers. On the tutorial's
model (2-core CPU) Adam's update takes about 10 ms eagerly and 1 ms as one
`tf.function`, a third of the whole eager step.

`EagerUpdate` runs `optimizer.apply_gradients` as one `tf.function` when the
step runs eagerly, for Keras' own optimizers only. Your code stays eager:
the model's `call`, the loss, the metrics, `train_step` and its hooks,
`apply_gradients` included (it runs before the update), and any optimizer
or learning-rate schedule that is not one of Keras' own classes (a custom
`update_step`, a Python callable as learning rate).

- For Adam, SGD, Nadam, Adamax, Lion, clipping, EMA, Keras' learning-rate
  schedules and loss scaling the result is bitwise the eager update's
  (measured on CPU, op determinism on). For some optimizers (RMSprop,
  AdamW, Adagrad, ...) grappler's arithmetic rewrites change the last bits,
  as in a compiled `fit`.
- Settings read from Python are part of the trace: a change to one (a new
  learning-rate schedule, `clipnorm`, `weight_decay`, another optimizer, a
  layer frozen) traces a new function. More than `MAX_FUNCTIONS` different
  ones and the update runs eagerly again, with a warning.
- An optimizer without variables yet is left to Keras' eager path for that
  one update, which creates them (`fit` and `ManualLoop` build it before
  the first step, so there the first update is traced).
- An update that cannot be traced but runs eagerly (one that reads a
  tensor's value, say) runs eagerly from then on, with one warning.
- Under a `tf.distribute` strategy, and inside any graph, Keras' own path
  runs: there the update is a merge across replicas, or compiled already.

Turn it off with `model.compile(..., eager_optimizer_update=True)`.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Hashable
from typing import Any

import keras
import tensorflow as tf

from customfit import _keras_compat

MAX_FUNCTIONS = 8


class EagerUpdate:
    """Applies an optimizer's update compiled, when the step runs eagerly.

    One per model (`CustomModel.compile` creates it). See the module
    docstring for when it compiles and when it leaves the update eager.
    """

    def __init__(self) -> None:
        self._functions: dict[Hashable, Any] = {}
        self._eager_for: Any = None  # weakref to an optimizer left eager

    def apply(
        self,
        optimizer: keras.optimizers.Optimizer,
        gradients: list[Any],
        variables: list[keras.Variable],
    ) -> None:
        """Applies `gradients` to `variables` with `optimizer`.

        Args:
            optimizer: The model's optimizer.
            gradients: One gradient (or None) per variable.
            variables: The variables to update.
        """
        key = self._key(optimizer, variables)
        if key is None or len(gradients) != len(variables):
            _keras_update(optimizer, gradients, variables)
            return
        function = self._functions.get(key)
        if function is None:
            function = self._trace(optimizer, gradients, variables)
            if function is None:  # updated eagerly, and left eager
                return
            self._functions[key] = function
        function(gradients)

    def _key(
        self, optimizer: Any, variables: list[keras.Variable]
    ) -> Hashable | None:
        """What the traced update depends on, or None to run it eagerly."""
        if (
            optimizer is None
            or not optimizer.built
            or not tf.executing_eagerly()
            or tf.distribute.has_strategy()
            or (self._eager_for is not None and self._eager_for() is optimizer)
        ):
            return None
        settings = _keras_settings(optimizer)
        if settings is None:
            return None
        return (id(optimizer), settings, *map(id, variables))

    def _trace(
        self,
        optimizer: keras.optimizers.Optimizer,
        gradients: list[Any],
        variables: list[keras.Variable],
    ) -> Any:
        """A tf.function applying updates to `variables`, traced here.

        The variables are captured, not passed: as arguments Keras
        variables would arrive as tensors. Returns None when the update
        ran eagerly instead (see `_leave_eager`).
        """
        if len(self._functions) >= MAX_FUNCTIONS:
            self._leave_eager(
                optimizer,
                gradients,
                variables,
                f"its variables or settings changed {MAX_FUNCTIONS} times, "
                "and each change traces it anew",
            )
            return None

        function = tf.function(
            lambda gradients: _keras_update(optimizer, gradients, variables),
            autograph=False,
            reduce_retracing=True,
        )
        try:
            function.get_concrete_function(gradients)
        except Exception as error:  # noqa: BLE001 - decided just below
            # An error that eager execution raises too is the user's to see,
            # as Keras raises it; only a tracing-only failure goes eager.
            reason = f"{type(error).__name__}: {str(error)[:300]}"
            self._leave_eager(optimizer, gradients, variables, reason)
            return None
        return function

    def _leave_eager(self, optimizer, gradients, variables, reason) -> None:
        """Runs this update eagerly, then leaves the optimizer eager."""
        _keras_update(optimizer, gradients, variables)
        self._eager_for = weakref.ref(optimizer)
        self._functions.clear()
        warnings.warn(
            f"The optimizer's update could not be compiled ({reason}); it "
            "runs eagerly from now on. To run it eagerly from the start "
            "(and silence this), pass eager_optimizer_update=True to "
            "compile().",
            stacklevel=5,
        )


def _keras_update(optimizer: Any, gradients: list, variables: list) -> None:
    """Keras' own update, as `CustomModel.apply_gradients` runs it."""
    optimizer.apply_gradients(zip(gradients, variables, strict=True))


def _keras_settings(optimizer: Any) -> tuple | None:
    """The Python settings a trace of `optimizer`'s update bakes in.

    None when the optimizer (or one it wraps) or its learning rate is not
    one of Keras' own classes: code of yours then runs in the update, and
    it stays eager.
    """
    settings: tuple = ()
    while optimizer is not None:
        if not _is_keras_class(optimizer):
            return None
        rate = _keras_compat.learning_rate_object(optimizer)
        if not isinstance(rate, keras.Variable) and not _is_keras_class(rate):
            return None
        settings += (id(rate),) + tuple(
            value
            for name, value in vars(optimizer).items()
            if not name.startswith("_")
            and isinstance(value, int | float | bool | str | type(None))
        )
        optimizer = getattr(optimizer, "inner_optimizer", None)
    return settings


def _is_keras_class(value: Any) -> bool:
    return type(value).__module__.startswith("keras.")
