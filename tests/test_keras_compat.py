"""Pins what each `_keras_compat` name does on a small model.

A Keras release that changes one of them fails here, plainly. The names
are read on whichever Keras is installed: `.ci/matrix.py` runs this file
on every supported TensorFlow x Keras pair.
"""

import re
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from customfit import _keras_compat
from tests.conftest import load_script
from tests.conftest import mirrored_strategy

REPO = Path(__file__).resolve().parent.parent


def compiled_model():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    return model


def test_keras_older_than_the_floor_gets_the_versions_and_the_pip_command():
    with pytest.raises(ImportError) as raised:
        _keras_compat.check_keras_version("3.7.0")
    assert str(raised.value) == (
        "customfit supports Keras >=3.8,<3.16 (each minor release tested "
        "with the TensorFlow of its time, >=2.16,<2.22).\n"
        "Expected: keras>=3.8,<3.16.\n"
        "Received: keras 3.7.0.\n"
        'Fix: pip install "keras>=3.8,<3.16" "tensorflow>=2.16,<2.22".'
    )
    with pytest.raises(ImportError, match="Received: keras 2.15.0"):
        _keras_compat.check_keras_version("2.15.0")


@pytest.mark.parametrize("version", ["3.8.0", "3.10.0rc1", "3.15.1"])
def test_supported_keras_versions_pass_the_check(version):
    _keras_compat.check_keras_version(version)


def test_declared_ranges_are_the_tested_ranges():
    pyproject = (REPO / "pyproject.toml").read_text()
    dependencies = re.search(r"\ndependencies = \[(.*?)\]", pyproject, re.S)[1]
    keras_range, tf_range = (
        ",".join(_keras_compat.KERAS),
        ",".join(_keras_compat.TENSORFLOW),
    )
    assert f"keras{keras_range}" in dependencies
    assert f"tensorflow{tf_range}" in dependencies
    # The matrix tests each end of both ranges.
    pairs = load_script(REPO / ".ci" / "matrix.py").PAIRS.values()
    minors = {
        "tensorflow": sorted(
            {tuple(map(int, t.split(".")[:2])) for t, *_ in pairs}
        ),
        "keras": sorted(
            {tuple(map(int, k.split(".")[:2])) for _, k, *_ in pairs}
        ),
    }
    for name, (low, high) in (
        ("keras", _keras_compat.KERAS),
        ("tensorflow", _keras_compat.TENSORFLOW),
    ):
        first, last = minors[name][0], minors[name][-1]
        assert low == f">={first[0]}.{first[1]}", name
        assert high == f"<{last[0]}.{last[1] + 1}", name


def test_the_installed_keras_is_in_the_declared_range():
    _keras_compat.check_keras_version(keras.__version__)
    below = _keras_compat._minor(_keras_compat.KERAS[1])
    assert _keras_compat._minor(keras.__version__) < below, (
        "untested Keras: add its pair to .ci/matrix.py"
    )


def test_batch_end_step_is_the_step_fit_passes_to_on_train_batch_end():
    class Steps(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            ends.append(batch)

    ends = []
    model = compiled_model()
    model.compile(optimizer="sgd", loss="mse", steps_per_execution=2)
    model.fit(
        np.zeros((8, 3)),
        np.zeros((8, 2)),
        batch_size=2,
        verbose=0,
        callbacks=[Steps()],
    )
    assert ends == [_keras_compat.batch_end_step(s, 2) for s in (0, 2)]


def test_maybe_symbolic_build_reads_one_batch_under_a_strategy():
    with mirrored_strategy().scope():
        model = compiled_model()
    dataset = tf.data.Dataset.from_tensors((tf.zeros((2, 3)), tf.zeros((2, 2))))
    iterator = iter(
        mirrored_strategy().experimental_distribute_dataset(dataset)
    )
    _keras_compat.maybe_symbolic_build(model, iter([(0, 0, iterator)]))
    assert model.optimizer.built and model.built


def test_call_has_training_arg_reads_the_call_signature():
    class WithTraining(keras.Model):
        def call(self, x, training=False):
            return x

    class WithoutTraining(keras.Model):
        def call(self, x):
            return x

    assert _keras_compat.call_has_training_arg(WithTraining()) is True
    assert _keras_compat.call_has_training_arg(WithoutTraining()) is False


def test_no_merge_call_outside_a_strategy_and_merge_call_under_mirrored():
    assert _keras_compat.strategy_supports_no_merge_call() is True
    with mirrored_strategy().scope():
        assert _keras_compat.strategy_supports_no_merge_call() is False


def test_debug_cap_reads_keras_config_where_keras_has_it():
    assert _keras_compat.debug_cap("max_epochs") is None
    if not hasattr(keras.config, "set_max_epochs"):
        return  # Keras < 3.10 has no debugging caps: always None.
    keras.config.set_max_epochs(2)
    try:
        assert _keras_compat.debug_cap("max_epochs") == 2
    finally:
        keras.config.set_max_epochs(None)


def test_data_adapter_yields_x_y_sample_weight_batches():
    adapter = _keras_compat.get_data_adapter(
        x=np.zeros((10, 3)),
        y=np.zeros((10, 2)),
        batch_size=4,
        class_weight=None,
    )
    assert adapter.num_batches == 3, "Keras changed data adapters"
    dataset = adapter.get_tf_dataset()
    assert isinstance(dataset, tf.data.Dataset)
    first = next(iter(dataset))
    assert len(first) == 2 and first[0].shape == (4, 3)
    for hook in ("on_epoch_begin", "on_epoch_end"):
        getattr(adapter, hook)()  # fit calls both on every adapter


def test_data_adapter_turns_class_weight_into_sample_weight():
    adapter = _keras_compat.get_data_adapter(
        x=np.zeros((4, 3)),
        y=np.array([0, 1, 0, 1]),
        batch_size=4,
        class_weight={0: 1.0, 1: 3.0},
    )
    _, _, sample_weight = next(iter(adapter.get_tf_dataset()))
    np.testing.assert_array_equal(sample_weight, [1.0, 3.0, 1.0, 3.0])


def test_train_validation_split_takes_the_tail():
    (x, y, sw), (vx, vy, vsw) = _keras_compat.train_validation_split(
        (np.arange(10), np.arange(10), None), validation_split=0.2
    )
    np.testing.assert_array_equal(vx, [8, 9])
    assert len(x) == 8 and sw is None and vsw is None


def test_pythonify_logs_flattens_and_converts():
    logs = _keras_compat.pythonify_logs(
        {"loss": tf.constant(1.5), "compile_metrics": {"mae": np.float32(2)}}
    )
    assert logs == {"loss": 1.5, "mae": 2.0}


def test_model_private_members_still_exist():
    model = compiled_model()
    tracker = _keras_compat.loss_tracker(model)
    assert isinstance(tracker, keras.metrics.Mean) and tracker.name == "loss"
    assert _keras_compat.compile_token(model) is tracker
    model.compile(optimizer="sgd", loss="mse")
    assert _keras_compat.compile_token(model) is not tracker, (
        "compile() no longer replaces the loss tracker: fix compile_token"
    )
    assert _keras_compat.initial_epoch_override(model) is None
    model.fit(np.zeros((4, 3)), np.zeros((4, 2)), verbose=0)
    logs = _keras_compat.epoch_logs(model, {"loss": 0.0})
    assert set(logs) == {"loss"}
    assert _keras_compat.flatten_metrics_in_order(model, {"loss": 1.0}) == 1.0


def test_symbolic_build_creates_every_variable_from_shapes():
    model = compiled_model()
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    spec = (tf.TensorSpec((None, 3)), tf.TensorSpec((None, 2)))
    _keras_compat.symbolic_build(model, spec)
    assert model.built and model.optimizer.built
    assert len(model.optimizer.variables) > 2  # iterations, rate, moments


def test_backup_and_restore_resumes_through_initial_epoch(tmp_path):
    class StopInSecondEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    model = compiled_model()
    data = (np.zeros((4, 3)), np.zeros((4, 2)))
    backup = keras.callbacks.BackupAndRestore(str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        model.fit(
            *data, epochs=3, verbose=0, callbacks=[backup, StopInSecondEpoch()]
        )
    restore = keras.callbacks.BackupAndRestore(str(tmp_path))
    restore.set_model(model)
    restore.on_train_begin()
    assert _keras_compat.initial_epoch_override(model) == 1


def test_model_init_rewrites_the_bases_of_a_functional_subclass():
    # If Keras stops rewriting classes, CustomModel's twin is not needed.
    class Base(keras.Model):
        pass

    inputs = keras.Input((3,))
    Base(inputs, keras.layers.Dense(1)(inputs))
    assert issubclass(Base, _keras_compat.Functional)
    assert _keras_compat.functional_init_arguments((inputs, inputs), {})
    assert not _keras_compat.functional_init_arguments((), {})


def test_init_functional_builds_without_rewriting_bases():
    class Plain(keras.Model):
        pass

    class Twin(Plain, _keras_compat.Functional):
        pass

    inputs = keras.Input((3,))
    model = Twin.__new__(Twin)
    _keras_compat.init_functional(
        model, (inputs, keras.layers.Dense(1)(inputs)), {}
    )
    assert Plain.__bases__ == (keras.Model,)
    assert model.predict(np.ones((2, 3)), verbose=0).shape == (2, 1)
