"""Every private Keras name customfit uses, in one place.

Keras 3 has no public API for these. Each one is used exactly as
`keras.Model.fit` uses it, which is what makes ManualLoop give the same
batches and the same logs as fit. `tests/test_keras_compat.py` pins the shape
of each, so a Keras release that changes one fails there, plainly, and not
somewhere deep in a training run.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

# predict concatenates its outputs with these: a chunk's steps with
# `concat`, then the chunks with `potentially_ragged_concat` (a
# tf.RaggedTensor where the shapes differ) and numpy for all but ragged.
from keras.src.backend.tensorflow.trainer import concat  # noqa: F401
from keras.src.backend.tensorflow.trainer import convert_to_np_if_not_ragged
from keras.src.backend.tensorflow.trainer import potentially_ragged_concat

# fit reduces the outputs of `strategy.run` over the replicas with this.
from keras.src.backend.tensorflow.trainer import reduce_per_replica  # noqa: F401

# Model.__init__, for functional arguments, runs the backend trainer's
# __init__ and then Functional.__init__ -- after rewriting the `__bases__` of
# every class above the model's class to insert Functional. For a shared base
# such as CustomModel that rewrite is global: once `CustomModel(inputs,
# outputs)` ran, `class Net(CustomModel)` could no longer call
# `super().__init__()`. CustomModel runs the same two initializers without the
# rewrite (see `init_functional`).
from keras.src.models.functional import Functional  # noqa: F401
from keras.src.models.model import Trainer as _BackendTrainer
from keras.src.models.model import functional_init_arguments  # noqa: F401

# The data adapters turn arrays, tf.data, generators and PyDatasets into a
# tf.data.Dataset of (x, y, sample_weight) batches; they also turn
# class_weight into sample weights. fit builds its batches with them.
from keras.src.trainers.data_adapters import get_data_adapter  # noqa: F401
from keras.src.trainers.data_adapters.array_slicing import (  # noqa: F401
    train_validation_split,
)

# CallbackList flattens logs and turns tensors into floats with this; evaluate
# returns logs passed through it.
from keras.src.utils.python_utils import pythonify_logs  # noqa: F401


def concatenate_predictions(outputs: list[Any]) -> Any:
    """predict's return value from its chunks' outputs, as fit's predict."""
    parts = keras.tree.map_structure(lambda *chunks: list(chunks), *outputs)
    outputs = keras.tree.map_structure_up_to(
        outputs[-1], potentially_ragged_concat, parts
    )
    return keras.tree.map_structure(convert_to_np_if_not_ragged, outputs)


def learning_rate_object(optimizer) -> Any:
    """What the optimizer was given as learning rate, before evaluation.

    A Keras variable (for a number), a schedule, or a callable; the public
    `optimizer.learning_rate` returns the schedule's current value instead.
    """
    return optimizer._learning_rate


def loss_tracker(model) -> Any:
    """The `keras.metrics.Mean` named "loss" that fit reports as `loss`."""
    return model._loss_tracker


def initial_epoch_override(model) -> int | None:
    """The epoch a callback asked to resume from (BackupAndRestore sets it)."""
    return getattr(model, "_initial_epoch", None)


def epoch_logs(model, step_logs: Any) -> Any:
    """The model's metric results when a step returned exactly those keys.

    fit reports metric results read at the end of an epoch, not the last
    step's logs, unless a custom step returned other keys.
    """
    return model._get_metrics_result_or_logs(step_logs)


def flatten_metrics_in_order(model, logs: dict) -> Any:
    """evaluate's non-dict return: metric values in `model.metrics` order."""
    return model._flatten_metrics_in_order(logs)


def compile_token(model) -> Any:
    """An object `compile()` replaces on every call (compiled steps expire).

    `compile()` resets fit's cached train function; ManualLoop compares this
    token to know when its own compiled steps must be rebuilt.
    """
    return model._loss_tracker


def init_functional(model, args: tuple, kwargs: dict) -> None:
    """`keras.Model.__init__` for functional arguments, minus class surgery.

    `model` must already be an instance of a class deriving from Functional.
    """
    _BackendTrainer.__init__(model)
    Functional.__init__(model, *args, **kwargs)


def maybe_symbolic_build(model, batches) -> None:
    """Builds model, metrics and optimizer variables first, as fit does.

    Under a `tf.distribute` strategy, fit creates every variable before the
    first step, from one batch it reads off an iterator (`batches` yields
    `(first_step, last_step, iterator)` as fit's epoch iterator does), so
    that no variable is created inside `strategy.run`. Without a strategy it
    does nothing, and variables are created while the step is traced.
    """
    strategy = model.distribute_strategy
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        # fit's way fails under MultiWorkerMirroredStrategy: it reduces the
        # first distributed batch with strategy.reduce(axis=None), which
        # raises "Attempt to convert a value (PerReplica...)"
        # (keras-team/keras#20585). Shapes and dtypes are all the build
        # needs, and the dataset's element_spec has them.
        if model._distribute_strategy is not None:
            symbolic_build(model, batches.element_spec)
        return
    model._maybe_symbolic_build(iterator=batches)


def symbolic_build(model, element_spec) -> None:
    """Creates the model's, metrics' and optimizer's variables from shapes.

    `element_spec` is one batch's structure of `tf.TensorSpec` (batch
    dimension None is fine): fit's `_symbolic_build` reads only shapes and
    dtypes.
    """
    element_spec = keras.tree.map_structure(none_if_optional, element_spec)
    with model.distribute_strategy.scope():
        model._symbolic_build(data_batch=element_spec)


def configure_coordination_service(cluster_spec, heartbeat_timeout_s) -> None:
    """Configures TensorFlow's coordination service as MWMS would, plus one
    setting: the heartbeat timeout after which a silent worker is lost.

    MultiWorkerMirroredStrategy keeps a configuration made before it is
    created; TensorFlow has no public setting for the timeout.
    """
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    jobs = [
        coordination_config_pb2.CoordinatedJob(
            name=job, num_tasks=cluster_spec.num_tasks(job)
        )
        for job in ("chief", "worker")
        if job in cluster_spec.jobs
    ]
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=multi_worker_util.coordination_leader(cluster_spec),
        coordinated_jobs=jobs,
        heartbeat_timeout_in_ms=int(heartbeat_timeout_s * 1000),
    )


def none_if_optional(value: Any) -> Any:
    """None for an input given None, as fit's step sees it; else `value`.

    Arrays carry a `keras.Input(optional=True)` given None as None (spec
    `tf.NoneTensorSpec`), a generator as an empty `tf.experimental.Optional`;
    fit's step gets None (`_autoconvert_optionals`).
    """
    none = (tf.experimental.Optional, tf.OptionalSpec, tf.NoneTensorSpec)
    return None if isinstance(value, none) else value
