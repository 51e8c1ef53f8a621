"""Pins every private Keras name customfit uses: a Keras change fails here."""

import inspect

import keras
import numpy as np
import tensorflow as tf

from customfit import _keras_compat


def compiled_model():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    return model


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
        assert callable(getattr(adapter, hook)), f"adapter lost {hook}"


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


def test_optimizer_still_keeps_its_learning_rate_object():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    assert (
        _keras_compat.learning_rate_object(keras.optimizers.SGD(schedule))
        is schedule
    )
    rate = _keras_compat.learning_rate_object(keras.optimizers.SGD(0.1))
    assert isinstance(rate, keras.Variable)
    wrapped = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD())
    assert isinstance(wrapped.inner_optimizer, keras.optimizers.SGD)
    wrapped_rate = _keras_compat.learning_rate_object(wrapped)
    assert isinstance(wrapped_rate, keras.Variable)


def test_backup_and_restore_still_resumes_through_initial_epoch(tmp_path):
    # BackupAndRestore tells fit where to resume through `_initial_epoch`.
    source = inspect.getsource(keras.callbacks.BackupAndRestore)
    assert "_initial_epoch" in source


def test_model_init_still_rewrites_bases_for_functional_arguments():
    # If Keras stops rewriting classes, CustomModel's twin is no longer needed.
    source = inspect.getsource(keras.Model.__init__)
    assert "inject_functional_model_class" in source
    assert "functional.Functional.__init__" in source
    assert _keras_compat.functional_init_arguments((1, 2), {})
    assert not _keras_compat.functional_init_arguments((), {})
