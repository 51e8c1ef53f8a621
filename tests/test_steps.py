"""The step compiler: traced once, ragged batches included; XLA honoured."""

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from customfit import CustomModel
from customfit import ManualLoop
from customfit import steps
from tests.conftest import mirrored_strategy

X = np.random.default_rng(0).normal(size=(50, 4)).astype("float32")
Y = np.random.default_rng(1).normal(size=(50, 1)).astype("float32")


def build(**compile_options):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = CustomModel(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer="sgd", loss="mse", **compile_options)
    return model


@pytest.mark.parametrize("steps_per_execution", [1, 4])
def test_ragged_last_batch_does_not_retrace(steps_per_execution):
    # 50 samples in batches of 16: 16, 16, 16 and a last batch of 2.
    model = build(steps_per_execution=steps_per_execution)
    loop = ManualLoop(model)
    loop.fit(X, Y, batch_size=16, epochs=3, verbose=0, validation_split=0.2)
    loop.evaluate(X, Y, batch_size=16, verbose=0)
    assert loop._function("train").tracing_count == 1
    assert loop._function("test").tracing_count == 1


def test_steps_per_execution_runs_several_steps_per_call():
    model = build(steps_per_execution=3)
    train_function = steps.make_train_function(model)
    iterator = iter(tf.data.Dataset.from_tensor_slices((X, Y)).batch(10))
    train_function(iterator)
    assert model.optimizer.iterations.numpy() == 3
    train_function(iterator)  # only 2 batches left
    assert model.optimizer.iterations.numpy() == 5
    with pytest.raises(StopIteration):
        train_function(iterator)


# Keras turns XLA off while op determinism is on (model_supports_jit), and
# this suite runs with determinism on: the XLA checks run in a fresh process.
XLA_SCRIPT = """
import keras, numpy as np
from customfit import CustomModel, ManualLoop, steps
x = np.random.default_rng(0).normal(size=(50, 4)).astype("float32")
y = np.random.default_rng(1).normal(size=(50, 1)).astype("float32")
results = []
for driver in ("keras", "manual"):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = CustomModel(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer="sgd", loss="mse", jit_compile=True)
    assert model.jit_compile is True
    kwargs = dict(x=x, y=y, batch_size=16, epochs=2, verbose=0)
    if driver == "keras":
        history = model.fit(**kwargs)
    else:
        loop = ManualLoop(model)
        history = loop.fit(**kwargs)
        function = loop._function("train")
        assert function.jit_compile is True
        batch = (x[:16], y[:16])
        hlo = function.compiled_step.experimental_get_compiler_ir(batch)(
            stage="hlo"
        )
        assert "HloModule" in hlo, hlo[:200]
    results.append((model.get_weights(), history.history))
for a, b in zip(results[0][0], results[1][0], strict=True):
    np.testing.assert_array_equal(a, b)
assert results[0][1] == results[1][1]


class PythonIfOnATensor(CustomModel):
    def predict_step(self, data):
        if keras.ops.sum(data) > 0:  # autograph would make this a tf.cond
            return self(data)
        return -self(data)


# As fit, the XLA predict step runs predict_step unconverted by autograph.
model = PythonIfOnATensor(inputs, keras.layers.Dense(1)(inputs))
model.compile(jit_compile=True)
errors = []
for predict in (model.predict, ManualLoop(model).predict):
    try:
        predict(x, batch_size=16, verbose=0)
    except TypeError as error:
        errors.append(type(error).__name__)
assert errors == ["OperatorNotAllowedInGraphError"] * 2, errors
print("XLA-OK")
"""


@pytest.mark.slow
def test_jit_compile_is_honoured_and_matches_fit(tmp_path):
    script = tmp_path / "xla_check.py"  # a file: autograph reads the source
    script.write_text(XLA_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert "XLA-OK" in done.stdout, done.stderr[-3000:]


def test_run_eagerly_compiles_nothing():
    model = build(run_eagerly=True)
    function = steps.make_train_function(model)
    assert not function.is_compiled
    assert function.tracing_count == 0
    function(iter(tf.data.Dataset.from_tensor_slices((X, Y)).batch(10)))
    assert model.optimizer.iterations.numpy() == 1


def test_reduce_per_replica_reduces_two_replicas_as_fit():
    strategy = mirrored_strategy()
    values = strategy.experimental_distribute_values_from_function(
        lambda context: {
            "loss": tf.constant(1.0 + 2.0 * context.replica_id_in_sync_group),
            "y": tf.fill([2, 1], float(context.replica_id_in_sync_group)),
        }
    )
    mean = steps.reduce_per_replica(values, strategy, "auto")
    assert float(mean["loss"]) == 2.0  # (1 + 3) / 2
    concat = steps.reduce_per_replica(values, strategy, "concat")
    np.testing.assert_array_equal(concat["y"], [[0.0], [0.0], [1.0], [1.0]])
