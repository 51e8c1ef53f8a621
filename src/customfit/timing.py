"""StepTimer: per-epoch time waiting for data vs time in steps, for ManualLoop.

With a `StepTimer` among the callbacks, `ManualLoop` fetches each training
batch in Python (timed) and runs the same single step on it (timed); without
one, nothing here runs. A chunk of `steps_per_execution` steps runs one step
per call; validation, `evaluate` and `predict` are not timed.
docs/callbacks.md explains how to read the numbers.
"""

from __future__ import annotations

import time
from typing import Any

import keras
import tensorflow as tf

from customfit.errors import CustomFitError


class TimingUnavailableError(CustomFitError, RuntimeError):
    """A `StepTimer` was used where per-step timing cannot be measured."""


class StepTimer(keras.callbacks.Callback):
    """Adds `data_wait_s`, `step_s` and `samples_per_s` to each epoch's logs.

    Pass it in `callbacks` of `ManualLoop(model).fit(...)`. At the end of each
    epoch it writes, into the epoch logs every later callback receives:

    - `data_wait_s`: seconds spent waiting for the epoch's training batches;
    - `step_s`: seconds spent running the epoch's training steps;
    - `samples_per_s`: training samples divided by the sum of the two.

    History, the progress bar, `CSVLogger` and `TensorBoard` show them like
    any metric (put the timer before any of these you pass yourself). A
    large share of `data_wait_s` in `data_wait_s + step_s` means the input
    pipeline is the bottleneck.

    Attributes:
        epoch_timings: One dict of the three values per epoch trained.

    Raises:
        TimingUnavailableError: Under `keras.Model.fit`, whose compiled step
            fetches its own batches, after the first batch.

    Example:

    ```python
    from customfit import ManualLoop
    from customfit.timing import StepTimer

    history = ManualLoop(model).fit(dataset, epochs=3, callbacks=[StepTimer()])
    wait = history.history["data_wait_s"][-1]
    share = wait / (wait + history.history["step_s"][-1])
    print(f"{share:.0%} of the last epoch was spent waiting for data")
    ```
    """

    def __init__(self):
        super().__init__()
        self.epoch_timings: list[dict[str, float]] = []
        self._reset()

    def record(self, data_wait_s: float, step_s: float, samples: int) -> None:
        """Adds the measurements of one or more steps to the current epoch.

        `ManualLoop` calls this as it runs the steps it times.

        Args:
            data_wait_s: Seconds spent fetching the steps' batches.
            step_s: Seconds spent running the steps.
            samples: Samples in the steps' batches, over all replicas.
        """
        self._data_wait_s += data_wait_s
        self._step_s += step_s
        self._samples += samples
        self._steps += 1

    def result(self) -> dict[str, float]:
        """The current epoch's timing so far, as it goes into the logs."""
        busy = self._data_wait_s + self._step_s
        return {
            "data_wait_s": self._data_wait_s,
            "step_s": self._step_s,
            "samples_per_s": self._samples / busy if busy > 0 else 0.0,
        }

    def on_epoch_begin(self, epoch, logs=None):
        """Starts the epoch's measurements from zero."""
        self._reset()

    def on_train_batch_end(self, batch, logs=None):
        """Raises `TimingUnavailableError` if no step could be timed."""
        if self._steps == 0:
            raise TimingUnavailableError(
                "StepTimer can time steps only when ManualLoop drives "
                "training: under keras.Model.fit the compiled step "
                "fetches its own batches inside the graph.",
                expected="ManualLoop(model).fit(..., callbacks=[StepTimer()])",
                received=f"no step timed before batch {batch} "
                "(model.fit, or a loop that does not call "
                "customfit.timing.maybe_timed)",
                fix="train with ManualLoop(model).fit(...), which takes "
                "the same arguments, or remove StepTimer from "
                "`callbacks`",
            )

    def on_epoch_end(self, epoch, logs=None):
        """Adds the epoch's three values to `logs` and `epoch_timings`."""
        if self._steps == 0:
            return
        timing = self.result()
        self.epoch_timings.append(timing)
        if logs is not None:
            logs.update(timing)

    def _reset(self) -> None:
        self._data_wait_s = 0.0
        self._step_s = 0.0
        self._samples = 0
        self._steps = 0


def maybe_timed(
    step_function: Any,
    callbacks: keras.callbacks.CallbackList | None,
) -> Any:
    """Returns `step_function`, timed when `callbacks` hold a `StepTimer`.

    Args:
        step_function: A training `StepFunction` from `customfit.steps`.
        callbacks: The loop's callbacks (a `CallbackList`), or None.

    Returns:
        A callable taking the batch iterator, as `step_function` does.
    """
    for callback in getattr(callbacks, "callbacks", callbacks) or ():
        if isinstance(callback, StepTimer):
            return _TimedSteps(step_function, callback)
    return step_function


class _TimedSteps:
    """A `StepFunction` that runs its chunk one step at a time, timed."""

    def __init__(self, step_function: Any, timer: StepTimer):
        self._step_function = step_function
        self._timer = timer
        self._strategy = timer.model.distribute_strategy

    def __call__(self, iterator: Any) -> Any:
        logs = None
        for index in range(self._step_function.steps_per_execution):
            start = time.perf_counter()
            try:
                data = next(iterator)
            except (StopIteration, tf.errors.OutOfRangeError):
                if index == 0:
                    raise StopIteration from None
                break
            fetched = time.perf_counter()
            logs = self._step_function.one_step(data)
            _wait_until_ready(logs)
            self._timer.record(
                fetched - start,
                time.perf_counter() - fetched,
                _count_samples(data, self._strategy),
            )
        return logs


def _count_samples(data: Any, strategy: tf.distribute.Strategy) -> int:
    x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
    leaves = tf.nest.flatten(x)
    if not leaves:
        return 0
    parts = strategy.experimental_local_results(leaves[0])
    return sum(int(part.shape[0] or tf.shape(part)[0]) for part in parts)


def _wait_until_ready(logs: Any) -> None:
    """Blocks until the step's outputs are computed (GPU steps run async)."""
    for value in tf.nest.flatten(logs):
        if hasattr(value, "numpy"):
            value.numpy()
