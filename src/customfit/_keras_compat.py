"""Every private or version-dependent Keras and TensorFlow name, in one place.

Keras 3 has no public API for these. Each is used exactly as `keras.Model.fit`
uses it, so ManualLoop gives fit's batches and logs. Their tests
(`tests/test_keras_compat.py`) fail plainly when a Keras release changes one;
`.ci/matrix.py` tests each minor release in `KERAS`.
"""

from __future__ import annotations

import re
from typing import Any

import keras
import tensorflow as tf

from customfit.errors import message

# The tested ranges; pyproject.toml declares exactly these.
KERAS = (">=3.8", "<3.16")
TENSORFLOW = (">=2.16", "<2.22")


def _minor(version: str) -> tuple[int, int]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:2])


def check_keras_version(version: str) -> None:
    """Raises ImportError, with the pip fix, below 3.8 (the oldest tested).

    Older ones lack names used below: customfit would fail later, obscurely.
    """
    if _minor(version) < (3, 8):
        keras_range, tf_range = ",".join(KERAS), ",".join(TENSORFLOW)
        raise ImportError(
            message(
                f"customfit supports Keras {keras_range} (each minor release "
                f"tested with the TensorFlow of its time, {tf_range}).",
                expected=f"keras{keras_range}",
                received=f"keras {version}",
                fix=f'pip install "keras{keras_range}" "tensorflow{tf_range}"',
            )
        )


check_keras_version(keras.__version__)
# Before Keras 3.11 fit's epoch iterator yields (step, iterator), and fit
# passes that first step of an execution to on_*_batch_end as well.
_EPOCH_ITERATOR_YIELDS_PAIRS = _minor(keras.__version__) < (3, 11)

# predict concatenates its outputs with these: a chunk's steps with
# `concat`, then the chunks with `potentially_ragged_concat` (a
# tf.RaggedTensor where the shapes differ) and numpy for all but ragged.
from keras.src.backend.tensorflow.trainer import concat  # noqa: E402, F401
from keras.src.backend.tensorflow.trainer import convert_to_np_if_not_ragged  # noqa: E402
from keras.src.backend.tensorflow.trainer import potentially_ragged_concat  # noqa: E402

# fit reduces the outputs of `strategy.run` over the replicas with this.
from keras.src.backend.tensorflow.trainer import reduce_per_replica  # noqa: E402, F401

# Model.__init__, given functional arguments, rewrites the `__bases__` of each
# class above the model's to insert Functional, then runs the backend trainer's
# and Functional's __init__. For a shared base such as CustomModel the rewrite
# is global (`class Net(CustomModel)` could no longer call `super().__init__`),
# so CustomModel runs the two initializers without it (`init_functional`).
from keras.src.models.functional import Functional  # noqa: E402
from keras.src.models.model import Trainer as _BackendTrainer  # noqa: E402
from keras.src.models.model import functional_init_arguments  # noqa: E402, F401

# The data adapters turn arrays, tf.data, generators and PyDatasets into a
# tf.data.Dataset of (x, y, sample_weight) batches; they also turn
# class_weight into sample weights. fit builds its batches with them.
from keras.src.trainers.data_adapters import get_data_adapter  # noqa: E402, F401
from keras.src.trainers.data_adapters.array_slicing import (  # noqa: E402, F401
    train_validation_split,
)

# CallbackList flattens logs and turns tensors into floats with this; evaluate
# returns logs passed through it.
from keras.src.utils.python_utils import pythonify_logs  # noqa: E402, F401


def batch_end_step(first_step: int, steps_per_execution: int) -> int:
    """The step fit passes to `on_*_batch_end`: the execution's last step
    from Keras 3.11 on, its first before."""
    if _EPOCH_ITERATOR_YIELDS_PAIRS:
        return first_step
    return first_step + steps_per_execution - 1


def call_has_training_arg(model) -> bool:
    """Whether the model's `call` takes `training` (Keras' own test; the
    public-looking `call_signature_parameters` came only in Keras 3.10)."""
    return model._call_has_training_arg


def strategy_supports_no_merge_call() -> bool:
    """Whether replicas may apply updates without `merge_call`, as Keras'
    optimizer decides (TensorFlow exports it only under `__internal__`)."""
    return tf.__internal__.distribute.strategy_supports_no_merge_call()


def debug_cap(setting: str) -> int | None:
    """`keras.config.max_epochs()` or `.max_steps_per_epoch()` (the debugging
    caps, by `setting`); None before Keras 3.10, which added them."""
    read_cap = getattr(keras.config, setting, None)
    return read_cap() if read_cap is not None else None


def concatenate_predictions(outputs: list[Any]) -> Any:
    """predict's return value from its chunks' outputs, as fit's predict."""
    parts = keras.tree.map_structure(lambda *chunks: list(chunks), *outputs)
    outputs = keras.tree.map_structure_up_to(
        outputs[-1], potentially_ragged_concat, parts
    )
    return keras.tree.map_structure(convert_to_np_if_not_ragged, outputs)


def compute_loss(model, x, y, y_pred, sample_weight, training) -> Any:
    """`model.compute_loss`, passing `training` only to an override that
    takes it (pre-3.3 overrides do not), as fit's default step calls it."""
    return model._compute_loss(x, y, y_pred, sample_weight, training)


def loss_tracker(model) -> Any:
    """The `keras.metrics.Mean` named "loss" that fit reports as `loss`."""
    return model._loss_tracker


def initial_epoch_override(model) -> int | None:
    """The epoch a callback asked to resume from (BackupAndRestore sets it)."""
    return getattr(model, "_initial_epoch", None)


def epoch_logs(model, step_logs: Any) -> Any:
    """The metric results read at the end of an epoch, as fit reports them,
    or the last step's logs if a custom step returned other keys."""
    return model._get_metrics_result_or_logs(step_logs)


def flatten_metrics_in_order(model, logs: dict) -> Any:
    """evaluate's non-dict return: metric values in `model.metrics` order."""
    return model._flatten_metrics_in_order(logs)


def compile_token(model) -> Any:
    """An object `compile()` replaces on every call, as it resets fit's
    cached train function: ManualLoop's compiled steps expire with it."""
    return model._loss_tracker


def init_functional(model, args: tuple, kwargs: dict) -> None:
    """`keras.Model.__init__` for functional arguments, minus class surgery
    (`model`'s class must already derive from Functional)."""
    _BackendTrainer.__init__(model)
    Functional.__init__(model, *args, **kwargs)


def maybe_symbolic_build(model, batches) -> None:
    """Builds model, metrics and optimizer variables first, as fit does.

    Under a `tf.distribute` strategy fit creates every variable from one
    batch of its epoch iterator (as `batches`), so that none is created
    inside `strategy.run`; without one, variables appear at tracing.
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
    if _EPOCH_ITERATOR_YIELDS_PAIRS:
        batches = ((first_step, it) for first_step, _, it in batches)
    model._maybe_symbolic_build(iterator=batches)


def symbolic_build(model, element_spec) -> None:
    """Creates the model's, metrics' and optimizer's variables from one
    batch's `tf.TensorSpec`s: fit's `_symbolic_build` reads only those."""
    element_spec = optionals_as_none(element_spec)
    with model.distribute_strategy.scope():
        model._symbolic_build(data_batch=element_spec)


def configure_coordination_service(cluster_spec, heartbeat_timeout_s) -> None:
    """Configures TensorFlow's coordination service as MWMS would, plus the
    heartbeat timeout after which a silent worker is lost (no public setting;
    MultiWorkerMirroredStrategy keeps a configuration made before it)."""
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


def optionals_as_none(structure: Any) -> Any:
    """`structure` with None for each optional input given None (an array's
    `tf.NoneTensorSpec`, a generator's empty Optional), as fit's step sees it
    (`_autoconvert_optionals`)."""
    none = (tf.experimental.Optional, tf.OptionalSpec, _NoneTensorSpec)
    return keras.tree.map_structure(
        lambda value: None if isinstance(value, none) else value, structure
    )


# Exported as tf.NoneTensorSpec only by newer TensorFlow releases.
from tensorflow.python.framework.none_tensor import (  # noqa: E402
    NoneTensorSpec as _NoneTensorSpec,
)
