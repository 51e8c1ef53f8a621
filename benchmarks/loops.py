"""The training loops the benchmark compares, each timed one epoch at a time.

Every loop trains its own fresh model (same seed, so the same initial
weights) on the same dataset: the tutorial's, or with `family` one of
`workload.FAMILIES` (then only `KerasFit` and `ManualLoopFit`):

- `BareStep`: `tf.function(model.train_step)` called in a plain Python loop
  over the prefetched dataset: the practical limit of a Python-driven loop;
- `KerasFit`: `model.fit(verbose=0)`, compiled or with `run_eagerly=True`;
- `ManualLoopFit`: `ManualLoop(model).fit(verbose=0)`, compiled or, with
  `run_eagerly=True`, eager (the debugging mode); eager steps run Keras' own
  optimizer update, op by op;
- `TutorialEager`: the tutorial's own `GradientTape` loop, run eagerly.

`start()` builds the model and runs the first batch, and returns how long a
user waits for that first batch (building, tracing, the step). `warm_up()`
runs an untimed epoch where the next `epoch()` would not. `epoch()` times
one epoch and returns its wall and CPU seconds: for the bare and tutorial
loops from the first batch to a host sync on the last logs; for `fit` and
`ManualLoop` (`epochs=1`) from `on_epoch_begin` to the return of the call,
so that the set-up of the call is left out but not its teardown. Each epoch
ends `tf.data` iterators (fit and ManualLoop make a spare one at the end of
each pass, to draw the same shuffle seeds), and deleting one can block for
tens of milliseconds while tf.data's autotuning thread stops: fit deletes
its iterators when the call returns (or when the next epoch begins),
ManualLoop one at the end of the epoch and one when the call returns. The
window holds both deletions for either, as an epoch of a long run does.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import keras
import tensorflow as tf

from benchmarks import workload
from customfit import ManualLoop


@dataclasses.dataclass
class Timing:
    """One timed epoch: wall seconds, and CPU seconds of this process."""

    seconds: float
    cpu_seconds: float


class _Clock:
    """Wall and process CPU time since it was started."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> Timing:
        return Timing(
            time.perf_counter() - self.wall, time.process_time() - self.cpu
        )


class EpochStart(keras.callbacks.Callback):
    """Starts a clock at `on_epoch_begin` (of the last epoch, if several).

    It overrides no batch hook, so it changes nothing in the batch loop it
    measures.
    """

    def __init__(self):
        super().__init__()
        self.clock: _Clock | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self.clock = _Clock()


class Loop:
    """One way of training a model; see the module docstring.

    Attributes:
        key: A short unique id, e.g. "manual_loop/spe=32" or, for a family,
            "lstm/manual_loop/spe=32".
        label: How the tables name it.
        family: The `workload.Family` trained, or None for the tutorial's.
        steps_per_execution: Steps per call of the compiled function.
        eager: Whether the step runs uncompiled.
    """

    key = ""
    label = ""
    eager = False

    def __init__(
        self,
        dataset: tf.data.Dataset,
        *,
        steps_per_execution: int = 1,
        jit_compile: bool | str = "auto",
        seed: int = 0,
        family: workload.Family | None = None,
    ):
        self.dataset = dataset
        self.steps_per_execution = steps_per_execution
        self.jit_compile = jit_compile
        self.seed = seed
        self.family = family
        self.model: keras.Model | None = None

    def start(self) -> float:
        """Builds a fresh model and runs one batch; returns its latency."""
        begin = time.perf_counter()
        self._start()
        return time.perf_counter() - begin

    def warm_up(self) -> None:
        """Runs one untimed epoch, for loops that need one (the bare step)."""

    def epoch(self) -> Timing:
        """Trains one epoch; returns its wall and CPU seconds."""
        raise NotImplementedError

    def _start(self) -> None:
        raise NotImplementedError

    def _build(self) -> keras.Model:
        options = {
            "seed": self.seed,
            "steps_per_execution": self.steps_per_execution,
            "jit_compile": self.jit_compile,
        }
        if self.family is not None:
            return workload.build_family_model(self.family, **options)
        return workload.build_model(**options)


class BareStep(Loop):
    """A compiled `model.train_step` driven by `for batch in dataset`."""

    key = "bare"
    label = "bare tf.function step"

    def _start(self) -> None:
        self.model = self._build()
        self.step = tf.function(
            self.model.train_step,
            reduce_retracing=True,
            jit_compile=self.model.jit_compile,
        )
        for batch in self.dataset.take(1):
            _to_floats(self.step(batch))

    def warm_up(self) -> None:
        self.epoch()

    def epoch(self) -> Timing:
        self.model.reset_metrics()
        clock = _Clock()
        for batch in self.dataset:
            logs = self.step(batch)
        _to_floats(logs)
        return clock.stop()


class KerasFit(Loop):
    """`model.fit(dataset, verbose=0)`, compiled or eager."""

    label = "model.fit"

    def __init__(self, *args: Any, run_eagerly: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.eager = run_eagerly
        if run_eagerly:
            self.label = f"{self.label}(run_eagerly=True)"
        if self.family is not None:
            self.label = f"{self.family.label}: {self.label}"

    @property
    def key(self) -> str:
        mode = "eager" if self.eager else f"spe={self.steps_per_execution}"
        family = f"{self.family.name}/" if self.family else ""
        return f"{family}{self.driver}/{mode}"

    driver = "fit"

    def _start(self) -> None:
        self.model = self._build()
        self.model.run_eagerly = self.eager
        self._fit(self.dataset.take(1))

    def epoch(self) -> Timing:
        start = EpochStart()
        self._fit(self.dataset, epochs=1, callbacks=[start])
        return start.clock.stop()

    def _fit(self, dataset: tf.data.Dataset, **kwargs: Any) -> None:
        self.model.fit(dataset, verbose=0, **kwargs)


class ManualLoopFit(KerasFit):
    """`ManualLoop(model).fit(dataset, verbose=0)`, compiled or eager."""

    label = "ManualLoop"
    driver = "manual_loop"

    def _start(self) -> None:
        self.model = self._build()
        self.loop = ManualLoop(self.model, run_eagerly=self.eager)
        self._fit(self.dataset.take(1))

    def _fit(self, dataset: tf.data.Dataset, **kwargs: Any) -> None:
        self.loop.fit(dataset, verbose=0, **kwargs)


class TutorialEager(Loop):
    """The tutorial's hand-written loop, eager, exactly as it reads there.

    One change: the tutorial prints the loss every 100 steps; this converts
    it to a float at the same points (the same host sync) without printing.
    """

    key = "tutorial/eager"
    label = "tutorial GradientTape loop (eager)"
    eager = True

    def _start(self) -> None:
        keras.utils.set_random_seed(self.seed)
        self.model = workload.Net()
        self.optimizer = keras.optimizers.Adam()
        self.loss_fn = workload.loss_function()
        self.train_acc_metric = workload.accuracy_metric()
        self._train(self.dataset.take(1))

    def epoch(self) -> Timing:
        clock = _Clock()
        self._train(self.dataset)
        return clock.stop()

    def _train(self, train_dataset: tf.data.Dataset) -> None:
        model, optimizer, loss_fn = self.model, self.optimizer, self.loss_fn
        train_acc_metric = self.train_acc_metric
        for step, (x_batch_train, y_batch_train) in enumerate(train_dataset):
            with tf.GradientTape() as tape:
                logits = model(x_batch_train, training=True)
                loss_value = loss_fn(y_batch_train, logits)
            grads = tape.gradient(loss_value, model.trainable_weights)
            optimizer.apply(grads, model.trainable_weights)
            train_acc_metric.update_state(y_batch_train, logits)
            if step % 100 == 0:
                self.last_loss = float(loss_value)
        self.last_accuracy = float(train_acc_metric.result())
        train_acc_metric.reset_state()


def _to_floats(logs: dict[str, Any]) -> dict[str, float]:
    """The host sync fit does once per epoch: logs to Python floats."""
    return {name: float(value) for name, value in logs.items()}
