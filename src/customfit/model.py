"""CustomModel: Keras' default training step, written out and split into hooks.

`CustomModel.train_step` is the step `keras.Model.fit` runs by default on the
TensorFlow backend (Keras 3.15, `keras/src/backend/tensorflow/trainer.py`),
with each stage a small public method (docs/customizing.md draws the step).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from customfit import _keras_compat
from customfit import checks
from customfit import distribute
from customfit import errors


@keras.saving.register_keras_serializable(package="customfit")
class CustomModel(keras.Model):
    """A `keras.Model` whose training step is written out in small hooks.

    Use it as you would use `keras.Model`: subclass it (`__init__` + `call`)
    or call it functionally (`CustomModel(inputs, outputs)`). With no
    override it trains exactly as a plain `keras.Model` does, bitwise. To
    change one stage of the step, override its hook: `forward`,
    `compute_loss`, `track_loss`, `compute_gradients`, `apply_gradients`, or
    the whole `train_step` (docs/customizing.md: which hook for what).
    `keras.Model.fit` and `customfit.ManualLoop` both run these steps, so
    either driver gives the same weights.

    Example:

    ```python
    import keras
    import customfit

    class Clipped(customfit.CustomModel):
        def apply_gradients(self, gradients, variables):
            gradients = [
                None if g is None else keras.ops.clip(g, -1.0, 1.0)
                for g in gradients
            ]
            super().apply_gradients(gradients, variables)

    inputs = keras.Input((4,))
    model = Clipped(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer="sgd", loss="mse")
    ```
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> CustomModel:
        if cls.__init__ is CustomModel.__init__ and (
            _keras_compat.functional_init_arguments(args, kwargs)
        ):
            # Born the Functional twin, so Keras wraps Functional's `build`
            # (build_from_config needs it). A subclass's own __init__ takes
            # its own arguments (a GAN's two models), not functional ones.
            cls = _functional_twin(cls)
        return super().__new__(cls, *args, **kwargs)

    def __init__(self, *args: Any, **kwargs: Any):
        if _keras_compat.functional_init_arguments(args, kwargs):
            # A functional model: become this class's Functional twin, so
            # that no class's bases are rewritten (see _keras_compat).
            object.__setattr__(self, "__class__", _functional_twin(type(self)))
            _keras_compat.init_functional(self, args, kwargs)
        else:
            super().__init__(*args, **kwargs)

    def fit(self, *args: Any, **kwargs: Any) -> keras.callbacks.History:
        """`keras.Model.fit`, with a clear error where Keras cannot run.

        Keras 3's fit fails before its first step under a
        `MultiWorkerMirroredStrategy` spanning several workers
        (keras-team/keras#20585); `customfit.ManualLoop(model).fit` takes
        the same arguments and runs there.

        Raises:
            UnsupportedStrategyError: Under a multi-worker strategy.
        """
        strategy = self.distribute_strategy
        workers = distribute.num_workers(strategy)
        if workers > 1:
            raise errors.UnsupportedStrategyError(
                "Keras' model.fit cannot run under a "
                "MultiWorkerMirroredStrategy with several workers: it "
                "fails while building the model (keras-team/keras#20585).",
                expected="model.fit under one process's strategy",
                received=f"{type(strategy).__name__} over {workers} workers",
                fix="train with customfit.ManualLoop(model).fit(...) -- "
                "same arguments, same step",
            )
        return super().fit(*args, **kwargs)

    _skipped_steps = None

    def compile(
        self,
        *args: Any,
        skip_nonfinite_steps: bool = False,
        **kwargs: Any,
    ) -> None:
        """`keras.Model.compile`, plus an option of customfit's step.

        Args:
            *args: Passed to `keras.Model.compile`.
            skip_nonfinite_steps: Skip every training step whose loss or
                gradients hold a NaN or an infinity: the weights and the
                optimizer state (its step count included) stay as they
                were, the step's loss is not recorded, and the logs gain
                `skipped_steps`, the number skipped this epoch. Off by
                default, as in Keras: a NaN then reaches the weights, and
                `keras.callbacks.TerminateOnNaN` stops the run.
            **kwargs: Passed to `keras.Model.compile`.
        """
        checks.check_call(
            "compile", self, {"skip_nonfinite_steps": skip_nonfinite_steps}
        )
        super().compile(*args, **kwargs)
        self._skipped_steps = (
            keras.metrics.Sum(name="skipped_steps")
            if skip_nonfinite_steps
            else None
        )

    def get_compile_config(self) -> dict[str, Any] | None:
        """Keras' compile config, plus `skip_nonfinite_steps` when it is on."""
        config = super().get_compile_config()
        if config is not None and self._skipped_steps is not None:
            config = {**config, "skip_nonfinite_steps": True}
        return config

    def compile_from_config(self, config: dict[str, Any]) -> None:
        """Compiles a loaded model as it was saved, optimizer state included.

        Keras skips this for any model that overrides `compile`, so a saved
        CustomModel would come back uncompiled. A subclass that overrides
        `compile` again (with its own arguments) gets Keras' behaviour: a
        warning, and `compile()` is left to the caller.

        Args:
            config: What `get_compile_config` returned when the model was
                saved.
        """
        if type(self).compile is not CustomModel.compile:
            super().compile_from_config(config)
            return
        config = dict(config)
        skip_nonfinite_steps = bool(config.pop("skip_nonfinite_steps", False))
        # Saved by customfit 0.1, whose eager steps could compile Keras'
        # update; eager steps now always run Keras' own, so it is dropped.
        config.pop("eager_optimizer_update", None)
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config, skip_nonfinite_steps=skip_nonfinite_steps)
        if self.optimizer is not None and self.built:
            # Create the optimizer's variables, so the loader restores them.
            self.optimizer.build(self.trainable_variables)

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        """Keras' metrics, plus `skipped_steps` when steps may be skipped."""
        metrics = super().metrics
        skipped = self._skipped_steps
        if skipped is not None and all(m is not skipped for m in metrics):
            metrics = [*metrics, skipped]
        return metrics

    def train_step(self, data: Any) -> dict[str, Any]:
        """Runs one training step on one batch; returns the metric results.

        Args:
            data: One batch: `x`, `(x,)`, `(x, y)` or `(x, y, sample_weight)`.

        Returns:
            A dict of metric names to scalar tensors, as `compute_metrics`
            returns them.
        """
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = self.forward(x, training=True)
            checks.check_hook_result(self, "forward", y_pred)
            loss = _keras_compat.compute_loss(
                self, x, y, y_pred, sample_weight, True
            )
            checks.check_hook_result(self, "compute_loss", loss)
            if self._skipped_steps is None:
                self.track_loss(loss, x)
            scaled_loss = loss
            if self.optimizer is not None:
                scaled_loss = self.optimizer.scale_loss(loss)
        variables = self.trainable_weights
        if variables:
            gradients = self.compute_gradients(tape, scaled_loss, variables)
            checks.check_hook_result(
                self, "compute_gradients", gradients, variables
            )
            if self._skipped_steps is None:
                with checks.first_update(self, variables):
                    self.apply_gradients(gradients, variables)
            else:
                self._apply_if_finite(loss, x, gradients, variables)
        else:
            warnings.warn(
                "Nothing to train: the model has no trainable weights, so "
                "this step updates no weight.",
                stacklevel=2,
            )
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def test_step(self, data: Any) -> dict[str, Any]:
        """Runs one evaluation step (`training=False`); returns the metrics.

        Args:
            data: One batch: `x`, `(x,)`, `(x, y)` or `(x, y, sample_weight)`.

        Returns:
            A dict of metric names to scalar tensors.
        """
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred = self.forward(x, training=False)
        checks.check_hook_result(self, "forward", y_pred)
        loss = _keras_compat.compute_loss(
            self, x, y, y_pred, sample_weight, False
        )
        checks.check_hook_result(self, "compute_loss", loss)
        self.track_loss(loss, x)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def predict_step(self, data: Any) -> Any:
        """Returns the model's predictions for one batch.

        Args:
            data: One batch; only its `x` part is used.

        Returns:
            The model's output for `x`, called with `training=False`.
        """
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.forward(x, training=False)

    def forward(self, x: Any, training: bool) -> Any:
        """Calls the model on `x`; passes `training` when `call` accepts it.

        Args:
            x: The model's inputs for one batch.
            training: Whether this is a training step.

        Returns:
            The model's outputs (`y_pred`).
        """
        if _keras_compat.call_has_training_arg(self):
            return self(x, training=training)
        return self(x)

    def track_loss(self, loss: Any, x: Any) -> None:
        """Records `loss` in the "loss" metric, weighted by the batch size.

        Under `tf.distribute` the loss a replica computes is divided by the
        number of replicas; the metric records it undivided, as fit does.

        Args:
            loss: The scalar loss of this batch, as `compute_loss` returned it.
            x: The model's inputs, used only for the batch size (with
                `skip_nonfinite_steps`, only their first tensor is passed).
        """
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:
            loss = keras.ops.multiply(
                loss, keras.ops.cast(replicas, loss.dtype)
            )
        first_input = next(i for i in tf.nest.flatten(x) if i is not None)
        _keras_compat.loss_tracker(self).update_state(
            loss, sample_weight=tf.shape(first_input)[0]
        )

    def compute_gradients(
        self,
        tape: tf.GradientTape,
        loss: Any,
        variables: Sequence[keras.Variable],
    ) -> list[Any]:
        """Returns the gradients of `loss` with respect to `variables`.

        Args:
            tape: The `tf.GradientTape` that recorded the forward pass.
            loss: The (possibly scaled) loss to differentiate.
            variables: The variables to differentiate against.

        Returns:
            A list of gradients, one per variable (`None` where unconnected).
        """
        return tape.gradient(loss, variables)

    def _apply_if_finite(self, loss, x, gradients, variables) -> None:
        """apply_gradients and track_loss, only when all is finite.

        Replicas skip together (one replica's NaN reaches all through the
        all-reduced gradients), so the verdicts are all-reduced first. Where
        updates are merge_calls (MirroredStrategy; MultiWorkerMirroredStrategy
        on CPU) the condition runs in cross-replica context, as in Keras'
        LossScaleOptimizer: a `tf.cond` around a merge_call fails.
        """
        if not self.optimizer.built:  # no variable creation inside tf.cond
            self.optimizer.build(variables)
        checked = [loss, *(g for g in gradients if g is not None)]
        finite = tf.reduce_all(
            tf.stack([tf.reduce_all(tf.math.is_finite(t)) for t in checked])
        )
        context = tf.distribute.get_replica_context()
        if tf.distribute.get_strategy().num_replicas_in_sync > 1:
            nonfinite = context.all_reduce(
                tf.distribute.ReduceOp.SUM,
                tf.cast(tf.logical_not(finite), tf.float32),
            )
            finite = tf.equal(nonfinite, 0.0)

        def apply(loss, x, gradients, variables):
            self.track_loss(loss, x)
            with checks.first_update(self, variables):
                self.apply_gradients(gradients, variables)

        # Only the first input is needed (for the batch size).
        first_input = next(i for i in tf.nest.flatten(x) if i is not None)
        step = (loss, first_input, gradients, variables)
        if _keras_compat.strategy_supports_no_merge_call():
            tf.cond(finite, lambda: apply(*step), lambda: None)
        else:
            # merge_call runs the first replica's function once, so each
            # replica's own values must travel as arguments (a closure
            # would hand every replica the first replica's gradients).
            def in_cross_replica_context(strategy, finite, *step):
                def apply_on_each_replica():
                    strategy.extended.call_for_each_replica(apply, args=step)

                agreed = strategy.experimental_local_results(finite)[0]
                tf.cond(agreed, apply_on_each_replica, lambda: None)

            context.merge_call(in_cross_replica_context, args=(finite, *step))

        # The skipped step is counted once, not once per replica.
        skipped = tf.cast(tf.logical_not(finite), tf.float32)
        first_replica = tf.equal(context.replica_id_in_sync_group, 0)
        self._skipped_steps.update_state(
            skipped * tf.cast(first_replica, tf.float32)
        )

    def apply_gradients(
        self, gradients: Sequence[Any], variables: Sequence[keras.Variable]
    ) -> None:
        """Applies one optimizer update; override to clip or skip updates.

        Args:
            gradients: List of tensors, one per entry of `variables`.
            variables: The variables to update, usually
                `self.trainable_weights`.
        """
        self.optimizer.apply_gradients(zip(gradients, variables, strict=True))


@functools.cache
def _functional_twin(cls: type) -> type:
    """`cls` with Functional mixed in, created once per class.

    The twin keeps `cls`'s name, module and registered serialization name,
    so a saved `.keras` file loads back into a functional `cls`.
    """
    if issubclass(cls, _keras_compat.Functional):
        return cls
    twin = type(
        cls.__name__,
        (cls, _keras_compat.Functional),
        {"__module__": cls.__module__, "__qualname__": cls.__qualname__},
    )
    registered = keras.saving.get_registered_name(cls)
    if keras.saving.get_registered_object(registered) is cls:
        package, _, name = registered.rpartition(">")
        keras.saving.register_keras_serializable(package, name)(twin)
    return twin
