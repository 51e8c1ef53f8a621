"""ManualLoop: fit, evaluate and predict as plain Python loops."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import sys
import threading
from typing import Any

import keras
import tensorflow as tf

from customfit import _fast_callbacks
from customfit import _keras_compat
from customfit import checks
from customfit import data
from customfit import distribute
from customfit import steps
from customfit import timing
from customfit.backup import Backup
from customfit.backup import BackupCallback
from customfit.errors import WorkerLostError


class ManualLoop:
    """Trains, evaluates and predicts with a Keras model in a plain loop.

    `ManualLoop(model).fit(...)` takes the arguments of `model.fit(...)` and
    returns what it returns, but the epochs and batches are a Python loop you
    can read (and step through) in `customfit/loop.py`. Each batch runs the
    model's own `train_step`, compiled as fit compiles it, so with the same
    seeds and data order the two give bitwise-equal weights and History.
    Any compiled Keras 3 model on the TensorFlow backend works, not only a
    `customfit.CustomModel`.

    Args:
        model: The compiled Keras model to drive.
        run_eagerly: Run the steps uncompiled, so a breakpoint or a `print`
            in `train_step` fires on every batch. None (default) follows
            `model.run_eagerly`.
        backup: A `customfit.Backup` (or just its directory) to back the
            run up to, so that `fit` called again resumes exactly where a
            crashed or interrupted run stopped. See `customfit.backup`.

    Example:

    ```python
    import keras
    import numpy as np
    from customfit import ManualLoop

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.zeros((64, 4)), np.zeros((64, 1))
    history = ManualLoop(model).fit(x, y, batch_size=16, epochs=2, verbose=0)
    ```
    """

    def __init__(
        self,
        model: keras.Model,
        *,
        run_eagerly: bool | None = None,
        backup: Backup | str | None = None,
    ):
        checks.check_call("ManualLoop", model, locals())
        self.model = model
        self.run_eagerly = run_eagerly
        self.backup = (
            Backup(os.fspath(backup))
            if isinstance(backup, (str, os.PathLike))
            else backup
        )
        self._functions: dict[str, steps.StepFunction] = {}
        self._functions_key: Any = None

    def fit(
        self,
        x: Any = None,
        y: Any = None,
        batch_size: int | None = None,
        epochs: int = 1,
        verbose: int | str = "auto",
        callbacks: list[keras.callbacks.Callback] | None = None,
        validation_split: float = 0.0,
        validation_data: Any = None,
        shuffle: bool | str = True,
        class_weight: dict[int, float] | None = None,
        sample_weight: Any = None,
        initial_epoch: int = 0,
        steps_per_epoch: int | None = None,
        validation_steps: int | None = None,
        validation_batch_size: int | None = None,
        validation_freq: int | list[int] = 1,
    ) -> keras.callbacks.History:
        """Trains the model for `epochs` epochs; arguments as `Model.fit`.

        Returns:
            The `keras.callbacks.History` of the run (`model.history`).

        Raises:
            NotCompiledError: If the model was not compiled.
            InputValueError, InputTypeError: For input that cannot work,
                before any step runs.
        """
        checks.check_call("fit", self.model, locals())
        epochs = data.debug_cap(epochs, "max_epochs", "epochs")
        train, validation = self._check_fit(
            x,
            y,
            sample_weight,
            validation_split=validation_split,
            validation_data=validation_data,
            validation_batch_size=validation_batch_size or batch_size,
            validation_steps=validation_steps,
            batch_size=batch_size,
            steps_per_epoch=steps_per_epoch,
            shuffle=shuffle,
            class_weight=class_weight,
        )
        model = self.model
        self._prepare(train)
        backups = BackupCallback(self.backup, model, train)
        callbacks = self._callback_list(
            callbacks, verbose, epochs, train.num_batches, last=backups
        )
        model.stop_training = False
        callbacks.on_train_begin()
        start = backups.restore(
            _keras_compat.initial_epoch_override(model) or initial_epoch
        )
        logs = None
        with _stopping_on_signals(backups), _explaining_lost_workers(backups):
            for epoch in range(start.epoch, epochs):
                if not start.continues_epoch(epoch):
                    model.reset_metrics()
                callbacks.on_epoch_begin(epoch)
                logs = self.train_epoch(train, callbacks)
                if _should_validate(epoch, validation, validation_freq):
                    val_logs = self.evaluate_epoch(validation, callbacks)
                    logs.update({f"val_{k}": v for k, v in val_logs.items()})
                callbacks.on_epoch_end(epoch, logs)
                if model.stop_training:
                    break
        backups.finish()
        self._finalize_optimizer(epochs)
        callbacks.on_train_end(logs)
        return model.history

    def evaluate(
        self,
        x: Any = None,
        y: Any = None,
        batch_size: int | None = None,
        verbose: int | str = "auto",
        sample_weight: Any = None,
        steps: int | None = None,
        callbacks: list[keras.callbacks.Callback] | None = None,
        return_dict: bool = False,
    ) -> float | list[float] | dict[str, float]:
        """Evaluates the model in one pass; arguments as `Model.evaluate`.

        Returns:
            The loss as a float when it is the only metric, else a list in
            `model.metrics_names` order, or a dict when `return_dict=True`.
        """
        checks.check_call("evaluate", self.model, locals())
        batches = self._check_data(
            x, y, sample_weight, batch_size=batch_size, steps_per_epoch=steps
        )
        callbacks = self._callback_list(
            callbacks, verbose, 1, batches.num_batches
        )
        logs = self.evaluate_epoch(batches, callbacks)
        if return_dict:
            return logs
        return _keras_compat.flatten_metrics_in_order(self.model, logs)

    def predict(
        self,
        x: Any,
        batch_size: int | None = None,
        verbose: int | str = "auto",
        steps: int | None = None,
        callbacks: list[keras.callbacks.Callback] | None = None,
    ) -> Any:
        """Returns the model's predictions for `x`; arguments as `predict`.

        Returns:
            A numpy array, or a structure of them for multi-output models.
        """
        checks.check_call("predict", self.model, locals())
        batches = data.batches(
            x,
            batch_size=batch_size,
            steps_per_epoch=steps,
            steps_per_execution=self.model.steps_per_execution,
            strategy=self.model.distribute_strategy,
        )
        callbacks = self._callback_list(
            callbacks, verbose, 1, batches.num_batches
        )
        predict_function = self._function("predict")
        self.model.stop_predicting = False
        callbacks.on_predict_begin()
        outputs = []
        with batches.stop_when_exhausted():
            for first_step, last_step, iterator in batches:
                callbacks.on_predict_batch_begin(first_step)
                batch_outputs = predict_function(iterator)
                outputs.append(batch_outputs)
                callbacks.on_predict_batch_end(
                    last_step, {"outputs": batch_outputs}
                )
                if self.model.stop_predicting:
                    break
        callbacks.on_predict_end()
        return _keras_compat.concatenate_predictions(outputs)

    def train_epoch(
        self,
        batches: data.Batches,
        callbacks: keras.callbacks.CallbackList | None = None,
    ) -> dict[str, Any]:
        """Runs one epoch of training steps; returns the epoch's logs.

        A building block for writing your own outer loop. It does not reset
        the metrics: call `model.reset_metrics()` before each epoch, as
        `fit` does.

        Args:
            batches: The training data, from `customfit.data.batches(...)`.
            callbacks: A `keras.callbacks.CallbackList` to call per batch.

        Returns:
            The metric results after the epoch (tensors, not yet floats).
        """
        callbacks = callbacks or _fast_callbacks.CallbackList()
        train_function = timing.maybe_timed(self._function("train"), callbacks)
        logs = {}
        with batches.stop_when_exhausted():
            for first_step, last_step, iterator in batches:
                callbacks.on_train_batch_begin(first_step)
                logs = train_function(iterator)
                callbacks.on_train_batch_end(last_step, logs)
                if self.model.stop_training:
                    break
        return dict(_keras_compat.epoch_logs(self.model, logs))

    def evaluate_epoch(
        self,
        batches: data.Batches,
        callbacks: keras.callbacks.CallbackList | None = None,
    ) -> dict[str, float]:
        """Runs one evaluation pass (resetting the metrics first).

        A building block for writing your own outer loop; `fit` calls it for
        validation and `evaluate` for evaluation.

        Args:
            batches: The evaluation data, from `customfit.data.batches(...)`.
            callbacks: A `keras.callbacks.CallbackList` to call per batch.

        Returns:
            The metric results of the pass, as Python floats.
        """
        self._prepare(batches)
        callbacks = callbacks or _fast_callbacks.CallbackList()
        test_function = self._function("test")
        self.model.stop_evaluating = False
        callbacks.on_test_begin()
        self.model.reset_metrics()
        logs = {}
        with batches.stop_when_exhausted():
            for first_step, last_step, iterator in batches:
                callbacks.on_test_batch_begin(first_step)
                logs = test_function(iterator)
                callbacks.on_test_batch_end(last_step, logs)
                if self.model.stop_evaluating:
                    break
        logs = _keras_compat.epoch_logs(self.model, logs)
        logs = _keras_compat.pythonify_logs(logs)
        callbacks.on_test_end(logs)
        return logs

    def _prepare(self, batches: data.Batches) -> None:
        """Creates every variable before the first step; rewinds the data.

        Under a strategy this is what fit does before a pass. Without one, fit
        creates the metrics' and optimizer's variables while tracing the
        first step, tracing it twice; built up front, the step is traced
        once, and a backup holds the same variables on its first write as on
        resume. Rewound, each validation with validation_steps reads the same
        batches.
        """
        _keras_compat.maybe_symbolic_build(self.model, batches)
        batches.reset()
        try:
            _keras_compat.symbolic_build(self.model, batches.element_spec)
        except (RuntimeError, NotImplementedError, ValueError, TypeError):
            # A model with its own train_step may not be callable on a batch
            # (a GAN is two models): its variables then appear at the first
            # step, as under fit, and any real error surfaces there.
            pass

    def _function(self, kind: str) -> steps.StepFunction:
        """The compiled step function for `kind`, rebuilt after `compile()`."""
        model = self.model
        run_eagerly = (
            model.run_eagerly if self.run_eagerly is None else self.run_eagerly
        )
        key = (
            _keras_compat.compile_token(model),
            run_eagerly,
            model.jit_compile,
            model.steps_per_execution,
        )
        if key != self._functions_key:
            self._functions, self._functions_key = {}, key
        if kind not in self._functions:
            make = getattr(steps, f"make_{kind}_function")
            self._functions[kind] = make(model, run_eagerly=run_eagerly)
        return self._functions[kind]

    def _callback_list(
        self, callbacks, verbose, epochs, num_batches, last=None
    ):
        """fit's CallbackList (History and progress bar added), then `last`.

        `last` runs after every other callback, History included. Only fit
        passes one, and only fit gets a History.
        """
        if not isinstance(callbacks, keras.callbacks.CallbackList):
            callbacks = _fast_callbacks.CallbackList(
                callbacks,
                add_history=last is not None,
                add_progbar=verbose != 0,
                verbose=verbose,
                epochs=epochs,
                steps=num_batches,
                model=self.model,
            )
        if last is not None:
            last.set_model(self.model)
            last.set_params(callbacks.params)
            callbacks.callbacks.append(last)
        return callbacks

    def _finalize_optimizer(self, epochs: int) -> None:
        optimizer = self.model.optimizer
        if isinstance(optimizer, keras.optimizers.Optimizer) and epochs > 0:
            optimizer.finalize_variable_values(self.model.trainable_weights)

    def _check_fit(
        self,
        x,
        y,
        sample_weight,
        *,
        validation_split,
        validation_data,
        validation_batch_size,
        validation_steps,
        **options,
    ) -> tuple[data.Batches, data.Batches | None]:
        """Checks fit's data; returns its training and validation batches."""
        if validation_split:
            (x, y, sample_weight), validation_data = (
                _keras_compat.train_validation_split(
                    (x, y, sample_weight), validation_split=validation_split
                )
            )
        train = self._check_data(x, y, sample_weight, **options)
        if validation_data is None:
            return train, None
        validation = self._check_data(
            *keras.utils.unpack_x_y_sample_weight(validation_data),
            batch_size=validation_batch_size,
            steps_per_epoch=validation_steps,
            argument="validation_data",
        )
        return train, validation

    def _check_data(self, x, y, sample_weight, *, argument="x", **options):
        """`data.batches` of `x` for this model, checked against it."""
        batches = data.batches(
            x,
            y,
            sample_weight=sample_weight,
            steps_per_execution=self.model.steps_per_execution,
            strategy=self.model.distribute_strategy,
            argument=argument,
            **options,
        )
        checks.check_against_model(
            self.model, batches.element_spec, y=y, argument=argument
        )
        return batches


def _should_validate(epoch, validation, validation_freq) -> bool:
    if validation is None:
        return False
    if isinstance(validation_freq, int):
        return (epoch + 1) % validation_freq == 0
    return epoch + 1 in validation_freq


@contextlib.contextmanager
def _stopping_on_signals(backups: BackupCallback):
    """While training, a signal asks `backups` to stop after a step.

    A second signal after Ctrl-C raises `KeyboardInterrupt` at once. Only
    the main thread can handle signals; elsewhere this does nothing.
    """
    signums = backups.config.signals if backups.config else (signal.SIGINT,)
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum, frame):
        if signum == signal.SIGINT and backups.stop_signal is not None:
            raise KeyboardInterrupt
        backups.request_stop(signum)

    previous = {
        signum: signal.signal(signum, request_stop) for signum in signums
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(
                signum, signal.SIG_DFL if handler is None else handler
            )


@contextlib.contextmanager
def _explaining_lost_workers(backups: BackupCallback):
    """Says which worker was lost, where the backup is, and how to resume."""
    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.AbortedError) as error:
        lost = re.findall(r"/job:\w+/replica:\d+/task:\d+", str(error))
        strategy = backups.model.distribute_strategy
        if not lost or distribute.num_workers(strategy) == 1:
            raise
        path, epoch, step = backups.last or ("(none yet)", 0, 0)
        raise WorkerLostError(
            f"Worker {', '.join(sorted(set(lost)))} was lost (no "
            "heartbeat), so the other workers stopped training.",
            expected="every worker alive until fit returns",
            received=f"{type(error).__name__} from TensorFlow",
            fix="relaunch every worker with its TF_CONFIG: "
            f"{shlex.join([sys.executable, *sys.argv])}; fit resumes "
            f"from the backup {path} (epoch {epoch}, step {step})",
        ) from error
