"""Turning a model's step into the function the loop calls once per chunk.

`make_train_function(model)` returns a `StepFunction`: called with an
iterator over batches, it runs up to `model.steps_per_execution` steps
(`model.train_step` under `strategy.run`, outputs reduced across replicas)
and returns the last step's logs. Built as `keras.Model.fit` builds its train
function, so the two drivers run the same graph: the single step is a
`tf.function(reduce_retracing=True, jit_compile=model.jit_compile)`, the
chunk a second `tf.function` looping over it; with `run_eagerly` nothing is
compiled, so a breakpoint in `train_step` fires on every batch.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from customfit import _keras_compat


class StepFunction:
    """A compiled (or eager) chunk of steps; the loop calls it per chunk.

    Attributes:
        steps_per_execution: The most steps one call runs.
        one_step: The single step taking one batch (`StepTimer` runs it);
            None for predict.
        compiled_step: The single step as a `tf.function` taking one batch,
            or None when steps run eagerly.
        is_compiled: Whether the step runs as a `tf.function`.
        jit_compile: Whether the step is compiled with XLA.
    """

    def __init__(
        self,
        run: Callable[[Any], Any] | None,
        *,
        steps_per_execution: int,
        one_step: Callable[[Any], Any] | None = None,
        compiled_step: Any = None,
        jit_compile: bool = False,
        counts_steps: bool = False,
    ):
        self._run = run or self._eager_steps  # None: eager, a Python loop
        self.one_step = one_step
        self.compiled_step = compiled_step
        self.steps_per_execution = steps_per_execution
        self.is_compiled = compiled_step is not None
        self.jit_compile = bool(jit_compile) and self.is_compiled
        self._counts_steps = counts_steps  # a graph chunk: (steps, outputs)

    def __call__(self, iterator: Any) -> Any:
        """Runs up to `steps_per_execution` steps; returns the last logs.

        Raises:
            StopIteration: If `iterator` had no batch left.
        """
        try:
            outputs = self._run(iterator)
        except tf.errors.OutOfRangeError:
            raise StopIteration from None
        if not self._counts_steps:
            return outputs
        steps_run, outputs = outputs
        if int(steps_run) == 0:  # one host sync per chunk of steps
            raise StopIteration
        return outputs

    def _eager_steps(self, iterator: Any) -> Any:
        """A chunk of steps as a Python loop, for `run_eagerly=True`."""
        outputs = self.one_step(next(iterator))
        for data in itertools.islice(iterator, self.steps_per_execution - 1):
            outputs = self.one_step(data)
        return outputs

    @property
    def tracing_count(self) -> int:
        """How many times the single step was traced (0 when eager)."""
        if self.compiled_step is None:
            return 0
        return self.compiled_step.experimental_get_tracing_count()


def make_train_function(
    model: keras.Model, *, run_eagerly: bool | None = None
) -> StepFunction:
    """Returns the function that runs `model.train_step` over a chunk.

    Args:
        model: A compiled Keras model; its `run_eagerly`, `jit_compile`,
            `steps_per_execution` and `distribute_strategy` are honoured.
        run_eagerly: Overrides `model.run_eagerly` when not None.

    Returns:
        A `StepFunction` returning the last step's logs (a dict of tensors).
    """
    return _make_function(model, model.train_step, run_eagerly)


def make_test_function(
    model: keras.Model, *, run_eagerly: bool | None = None
) -> StepFunction:
    """Returns the function that runs `model.test_step` over a chunk.

    Takes and returns what `make_train_function` does.
    """
    return _make_function(model, model.test_step, run_eagerly)


def make_predict_function(
    model: keras.Model, *, run_eagerly: bool | None = None
) -> StepFunction:
    """Returns the function that runs `model.predict_step` over a chunk.

    As in fit, the step is XLA-compiled only when `jit_compile` is True.

    Args:
        model: A Keras model (it need not be compiled).
        run_eagerly: Overrides `model.run_eagerly` when not None.

    Returns:
        A `StepFunction` returning the chunk's outputs (the structure of the
        model's output), its steps' and replicas' concatenated as fit does.
    """
    strategy = model.distribute_strategy
    steps_per_execution = model.steps_per_execution or 1
    eager = _is_eager(model, run_eagerly)

    # As in fit, autograph never converts predict_step, XLA or not.
    one_step = tf.autograph.experimental.do_not_convert(model.predict_step)
    if not eager and model.jit_compile:
        one_step = tf.function(
            one_step, reduce_retracing=True, jit_compile=True
        )

    def distributed_step(iterator):
        step = _optionals_to_none(one_step)  # as fit, outside the XLA step
        outputs = strategy.run(step, args=(next(iterator),))
        return reduce_per_replica(outputs, strategy, "concat")

    compiled = None
    if not eager:
        distributed_step = compiled = tf.function(
            distributed_step, reduce_retracing=True, autograph=False
        )

    def run(iterator):
        outputs = distributed_step(iterator)
        for _ in range(steps_per_execution - 1):
            try:
                step_outputs = distributed_step(iterator)
            except (StopIteration, tf.errors.OutOfRangeError):
                break
            outputs = keras.tree.map_structure(
                lambda a, b: _keras_compat.concat([a, b]), outputs, step_outputs
            )
        return outputs

    return StepFunction(
        run,
        steps_per_execution=steps_per_execution,
        compiled_step=compiled,
        jit_compile=model.jit_compile,
    )


def _is_eager(model: keras.Model, run_eagerly: bool | None) -> bool:
    return model.run_eagerly if run_eagerly is None else run_eagerly


def _make_function(
    model: keras.Model, step: Callable, run_eagerly: bool | None
) -> StepFunction:
    strategy = model.distribute_strategy
    steps_per_execution = model.steps_per_execution or 1

    @tf.autograph.experimental.do_not_convert
    def one_step(data):
        outputs = strategy.run(step, args=(data,))
        return reduce_per_replica(outputs, strategy, "auto")

    if _is_eager(model, run_eagerly):
        if _is_default_strategy(strategy):
            # Eagerly, a step under the default strategy's `run` pays for a
            # replica context: every optimizer update becomes a merge_call,
            # about 8% of an eager step of the tutorial's model. Outside it,
            # the step runs the same ops (a one-replica all-reduce is the
            # identity), so the weights are the same, bitwise.
            one_step = step
        return StepFunction(
            None,
            steps_per_execution=steps_per_execution,
            one_step=_optionals_to_none(one_step),
        )
    compiled = tf.function(
        one_step, reduce_retracing=True, jit_compile=model.jit_compile
    )
    chunk = tf.function(
        _graph_chunk(compiled, steps_per_execution),
        reduce_retracing=True,
        autograph=False,  # as fit: a step error reads as raised
    )
    return StepFunction(
        chunk,
        steps_per_execution=steps_per_execution,
        one_step=_optionals_to_none(compiled),
        compiled_step=compiled,
        jit_compile=model.jit_compile,
        counts_steps=steps_per_execution > 1,
    )


def _is_default_strategy(strategy: tf.distribute.Strategy) -> bool:
    """Whether `strategy` is TensorFlow's default, no-distribution one."""
    if tf.distribute.has_strategy():  # inside some scope: can't tell cheaply
        return False
    return strategy is tf.distribute.get_strategy()


def _graph_chunk(one_step: Callable, steps_per_execution: int) -> Callable:
    """A chunk of steps as one graph: the first step, then a while loop."""

    compiled_step, one_step = one_step, _optionals_to_none(one_step)
    if steps_per_execution == 1:

        def single(iterator):
            return one_step(iterator.get_next())

        return single

    def several(iterator):
        # No tf.cond may wrap a step: under MirroredStrategy the optimizer's
        # merge_call inside a cond fails ("You must feed a value for
        # placeholder"), which also breaks fit's own steps_per_execution > 1
        # there. So whether another step runs is the loop's condition, and
        # the loop starts with no step run: an exhausted iterator runs none
        # (optimizer.iterations included), as in fit.
        def should_continue(step, outputs, next_data):
            return tf.logical_and(
                step < steps_per_execution, next_data.has_value()
            )

        def run_step(step, outputs, next_data):
            outputs = one_step(next_data.get_value())
            next_data = tf.cond(
                step + 1 < steps_per_execution,
                iterator.get_next_as_optional,
                lambda: next_data,
            )
            return step + 1, outputs, next_data

        first = iterator.get_next_as_optional()
        outputs = _zero_outputs(compiled_step, first.element_spec)
        step = tf.constant(0)
        if outputs is None:  # outputs of unknown shape: run one step first
            outputs, step = one_step(iterator.get_next()), tf.constant(1)
            first = iterator.get_next_as_optional()
        steps_run, outputs, _ = tf.while_loop(
            should_continue, run_step, (step, outputs, first)
        )
        return steps_run, outputs

    return several


def _zero_outputs(one_step: Callable, element_spec: Any) -> Any:
    """Zeros shaped like one step's outputs, or None if a shape is unknown."""
    element_spec = _keras_compat.optionals_as_none(element_spec)
    concrete = one_step.get_concrete_function(element_spec)
    specs = tf.nest.flatten(concrete.structured_outputs)
    if not all(spec.shape.is_fully_defined() for spec in specs):
        return None
    return tf.nest.map_structure(
        lambda spec: tf.zeros(spec.shape, spec.dtype),
        concrete.structured_outputs,
    )


def _optionals_to_none(one_step: Callable) -> Callable:
    def call(data):
        return one_step(_keras_compat.optionals_as_none(data))

    return call


def reduce_per_replica(
    values: Any, strategy: tf.distribute.Strategy, reduction: str
) -> Any:
    """Reduces the per-replica outputs of `strategy.run` as fit does.

    Args:
        values: A structure of tensors or `PerReplica` values.
        strategy: The strategy that produced them.
        reduction: `"auto"` (fit's: the mean, or the first replica's on
            TPU), `"mean"`, `"first"`, `"sum"` or `"concat"` (predictions).

    Returns:
        The same structure with one tensor per leaf.
    """
    multi_worker = isinstance(
        strategy, tf.distribute.MultiWorkerMirroredStrategy
    )
    if multi_worker and reduction in ("auto", "mean", "sum"):
        # Keras' reduces across workers along axis 0, which fails on scalars.
        reduction = "MEAN" if reduction == "auto" else reduction.upper()
        return tf.nest.map_structure(
            lambda value: strategy.reduce(reduction, value, axis=None), values
        )
    return _keras_compat.reduce_per_replica(values, strategy, reduction)
