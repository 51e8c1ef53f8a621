"""The optimizer's update as one compiled function while steps run eagerly.

With `run_eagerly=True` every op of a step runs one by one from Python, and
Keras' optimizer update is the slowest part: for each variable, a dozen
Keras ops, each dispatched through several Python layers. On the tutorial's
model (2-core CPU) Adam's update takes about 10 ms eagerly and 1 ms as one
`tf.function`, a third of the whole eager step.

`EagerUpdate` runs `optimizer.apply` as one `tf.function` when the step runs
eagerly. Everything a user debugs with `run_eagerly=True` still runs op by
op: the model's `call`, the loss, the metrics, `train_step` and its hooks,
`apply_gradients` included; only Keras' own update (`optimizer.apply`, after
your `apply_gradients` has clipped or filtered the gradients) is traced.

- For Adam, SGD, Nadam, Adamax, Lion, loss scaling, clipping, EMA and
  learning-rate schedules the result is bitwise the eager update's. For
  some optimizers (RMSprop, AdamW, Adagrad, ...) grappler's arithmetic
  rewrites change the last bits, exactly as in a compiled `fit`.
- It is traced on the first update (`fit` and `ManualLoop` build the
  optimizer before it); an optimizer without variables yet is left to
  Keras' eager path for that one update, which creates them.
- An update that cannot be traced (a custom optimizer that reads `.numpy()`
  in `update_step`, say) runs eagerly from then on, with one warning.
- Under a `tf.distribute` strategy, and inside any graph, Keras' own path
  runs: there the update is a merge across replicas, or compiled already.

Turn it off with `model.compile(..., eager_optimizer_update=True)`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf


class EagerUpdate:
    """Applies an optimizer's update compiled, when the step runs eagerly.

    One per model. `apply` returns False when the caller should run Keras'
    own `optimizer.apply_gradients` instead (see the module docstring).
    """

    def __init__(self) -> None:
        self._key: tuple[int, ...] | None = None
        self._function: Any = None
        self.disabled = False

    def apply(
        self,
        optimizer: keras.optimizers.Optimizer,
        gradients: Sequence[Any],
        variables: Sequence[keras.Variable],
    ) -> bool:
        """Runs `optimizer.apply(gradients, variables)` as one tf.function.

        Returns:
            Whether it did; False leaves the update to the caller.
        """
        if (
            self.disabled
            or not optimizer.built
            or not tf.executing_eagerly()
            or tf.distribute.has_strategy()
        ):
            return False
        gradients, variables = list(gradients), list(variables)
        if len(gradients) != len(variables):
            return False  # Keras' path raises its own error
        key = (id(optimizer), *map(id, variables))
        if key != self._key:
            function = self._trace(optimizer, gradients, variables)
            if function is None:
                return False
            self._key, self._function = key, function
        self._function(gradients)
        return True

    def _trace(
        self,
        optimizer: keras.optimizers.Optimizer,
        gradients: list[Any],
        variables: list[keras.Variable],
    ) -> Any:
        """A tf.function applying updates to `variables`, traced once here.

        The variables are captured, not passed: as arguments Keras
        variables would arrive as tensors. A new set of variables (a layer
        frozen, an optimizer swapped) gets a new function.
        """

        def update(gradients):
            optimizer.apply(gradients, variables)

        function = tf.function(update, reduce_retracing=True)
        try:
            function.get_concrete_function(gradients)
        except Exception as error:  # noqa: BLE001 - any failure: run eagerly
            self.disabled = True
            warnings.warn(
                f"The optimizer's update could not be compiled "
                f"({type(error).__name__}: {str(error)[:300]}); it runs "
                "eagerly from now on. To run it eagerly from the start "
                "(and silence this), pass eager_optimizer_update=True to "
                "compile().",
                stacklevel=4,
            )
            return None
        return function
