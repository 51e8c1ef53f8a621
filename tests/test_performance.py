"""Performance properties that do not need a clock.

Throughput is measured by `python -m benchmarks.run`, never here: timings on
a shared machine are too noisy for a unit test. What is asserted here is what
makes the loop fast: the step is compiled and traced once (ragged last batch
included), and no per-batch host sync or log conversion happens when no
callback listens to the batch hooks, and that finished dataset iterators are
deleted off the training thread.
"""

import dis
import json
import os
import subprocess
import sys
import threading
import time
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf
from benchmarks.checks import StepCounting

from customfit import CustomModel
from customfit import ManualLoop
from customfit import _fast_callbacks
from customfit import data
from customfit.backup import BackupCallback

# 50 samples in batches of 16: three full batches and a ragged one of 2.
X = np.random.default_rng(0).normal(size=(50, 4)).astype("float32")
Y = np.random.default_rng(1).integers(0, 3, size=(50,)).astype("int32")


class CountingModel(StepCounting, CustomModel):
    """Counts how often the Python body of each step runs (= traces)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(3)

    def call(self, x, training=False):
        return self.dense(x)


def build(**compile_options):
    keras.utils.set_random_seed(0)
    model = CountingModel()
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        **compile_options,
    )
    return model


def dataset(x=X, y=Y):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


@pytest.mark.parametrize("steps_per_execution", [1, 32])
def test_each_step_is_compiled_and_traced_once(steps_per_execution):
    model = build(steps_per_execution=steps_per_execution)
    loop = ManualLoop(model)
    loop.fit(dataset(), epochs=3, validation_data=dataset(), verbose=0)
    loop.evaluate(dataset(), verbose=0)
    assert model.optimizer.iterations.numpy() == 12  # 3 epochs x 4 batches
    # A compiled step runs its Python body only while being traced.
    assert model.train_step_runs == 1
    assert model.test_step_runs == 1
    for kind in ("train", "test"):
        function = loop._function(kind)
        assert function.is_compiled
        assert function.tracing_count == 1


def test_array_input_with_ragged_last_batch_traces_once():
    model = build()
    loop = ManualLoop(model)
    loop.fit(X, Y, batch_size=16, epochs=2, validation_split=0.2, verbose=0)
    assert model.train_step_runs == 1
    assert model.test_step_runs == 1


def test_run_eagerly_runs_the_step_body_on_every_batch():
    model = build()
    ManualLoop(model, run_eagerly=True).fit(dataset(), epochs=2, verbose=0)
    assert model.train_step_runs == 8
    assert (
        not ManualLoop(model, run_eagerly=True)._function("train").is_compiled
    )


class _CountingKerasHooks:
    """Counts calls reaching keras.callbacks.CallbackList's batch hooks."""

    def __init__(self, monkeypatch):
        self.calls = []
        for hook in ("on_train_batch_begin", "on_train_batch_end"):
            original = getattr(keras.callbacks.CallbackList, hook)
            monkeypatch.setattr(
                keras.callbacks.CallbackList, hook, self._wrap(hook, original)
            )

    def _wrap(self, hook, original):
        def counted(callback_list, batch, logs=None):
            self.calls.append(hook)
            return original(callback_list, batch, logs)

        return counted


def test_no_batch_hook_work_when_no_callback_listens(monkeypatch):
    # verbose=0: History (no batch hooks) and customfit's BackupCallback
    # (ignores the logs): Keras' per-batch log conversion is skipped.
    counting = _CountingKerasHooks(monkeypatch)
    ManualLoop(build()).fit(dataset(), epochs=2, verbose=0)
    assert counting.calls == []


class _BatchRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.logs = []

    def on_batch_end(self, batch, logs=None):  # the old name still counts
        self.logs.append((batch, logs))


def test_a_listening_callback_gets_what_it_gets_under_fit(monkeypatch):
    recorders = {}
    for driver in ("keras", "manual"):
        recorder = _BatchRecorder()
        model = build()
        trainer = model if driver == "keras" else ManualLoop(model)
        trainer.fit(dataset(), epochs=2, verbose=0, callbacks=[recorder])
        recorders[driver] = recorder.logs
    assert len(recorders["manual"]) == 8
    assert recorders["manual"] == recorders["keras"]
    assert all(
        type(value) is float
        for _, logs in recorders["manual"]
        for value in logs.values()
    )


def test_the_progress_bar_listens(monkeypatch):
    counting = _CountingKerasHooks(monkeypatch)
    ManualLoop(build()).fit(dataset(), epochs=1, verbose=1)
    assert counting.calls.count("on_train_batch_end") == 4


def test_listens_sees_overrides_old_names_and_instance_attributes():
    plain = keras.callbacks.Callback()
    assert not any(
        _fast_callbacks.listens(plain, hook)
        for hook in _fast_callbacks._REACHES
    )
    assert not _fast_callbacks.listens(
        keras.callbacks.History(), "on_train_batch_end"
    )
    assert _fast_callbacks.listens(
        keras.callbacks.ProgbarLogger(), "on_train_batch_end"
    )
    old_name = _BatchRecorder()
    assert _fast_callbacks.listens(old_name, "on_train_batch_end")
    assert not _fast_callbacks.listens(old_name, "on_test_batch_end")
    patched = keras.callbacks.Callback()
    patched.on_test_batch_end = lambda batch, logs=None: None
    assert _fast_callbacks.listens(patched, "on_test_batch_end")


def test_backup_callback_never_reads_batch_logs():
    # _fast_callbacks hands BackupCallback the raw logs, unconverted, on
    # the promise (reads_batch_logs = False) that its batch hooks do not
    # read `logs`.
    assert BackupCallback.reads_batch_logs is False
    for hook in ("on_train_batch_begin", "on_train_batch_end"):
        method = getattr(BackupCallback, hook)
        if method is getattr(keras.callbacks.Callback, hook):
            continue
        reads = [
            instruction
            for instruction in dis.get_instructions(method)
            if instruction.argval == "logs"
            and instruction.opname.startswith("LOAD")
        ]
        assert reads == [], f"BackupCallback.{hook} reads `logs`"


@pytest.mark.parametrize("run_eagerly", [False, True])
def test_finished_iterators_are_deleted_off_the_training_thread(
    run_eagerly, monkeypatch
):
    # Deleting a tf.data iterator can wait seconds for tf.data's autotuning
    # thread; the loop hands finished iterators to a reaper thread instead
    # (those older than a tenth of a second: here, all of them).
    monkeypatch.setattr(data.Batches, "_REAPER_MIN_AGE_S", 0.0)
    model = build()
    loop = ManualLoop(model, run_eagerly=run_eagerly)
    loop.fit(X, Y, batch_size=16, verbose=0)  # builds the model
    batches = data.batches(dataset().prefetch(2))
    loop.train_epoch(batches)  # ends by creating the next pass's iterator
    deleted_on = []
    weakref.finalize(
        batches.iterator,
        lambda: deleted_on.append(threading.current_thread().name),
    )
    loop.train_epoch(batches)  # starts a fresh pass: retires that one
    del batches  # retires the iterator created at the end of this pass
    deadline = time.monotonic() + 30
    while not deleted_on and time.monotonic() < deadline:
        time.sleep(0.01)
    assert deleted_on == ["customfit-iterator-reaper"]
    assert threading.main_thread().name != deleted_on[0]


EXIT_SCRIPT = """
import atexit
import threading

def report():  # registered first, so it runs after customfit's own handler
    alive = [t.name for t in threading.enumerate() if "reaper" in t.name]
    print("reaper threads at exit:", alive)

atexit.register(report)

import tensorflow as tf
from customfit import data

dataset = tf.data.Dataset.range(1000).map(lambda x: x + 1).prefetch(2)
held = iter(dataset)  # also held here: the reaper keeps polling it
next(held)
data._reaper.retire(held)
print("reaper started:", data._reaper._thread.is_alive())
"""


@pytest.mark.slow
def test_reaper_thread_is_ended_before_the_interpreter_exits(tmp_path):
    # Python unwinds a daemon thread still running at exit; inside
    # TensorFlow's C++ (deleting an iterator) that aborts the process with
    # "terminate called ... FATAL: exception not rethrown". customfit's
    # atexit handler ends the reaper first.
    script = tmp_path / "exit.py"
    script.write_text(EXIT_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "reaper started: True" in done.stdout
    assert "reaper threads at exit: []" in done.stdout


@pytest.mark.slow
def test_benchmark_command_runs_and_writes_its_tables(tmp_path):
    # The smoke run of `python -m benchmarks.run`: too short for its ratios
    # to mean anything (they are not asserted), long enough to prove that
    # every loop runs and both tables and the checks are written.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick"]
        + ["--families", "lstm", "--out", str(tmp_path)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode in (0, 1), done.stderr[-3000:]  # 1: targets
    results = json.loads((tmp_path / "results.json").read_text())
    compiled = {f"{d}/spe={n}" for d in ("fit", "manual_loop") for n in (1, 32)}
    assert set(results["loops"]) == {
        "bare",
        "fit/eager",
        "manual_loop/eager",
        "tutorial/eager",
        *compiled,
        *(f"lstm/{key}" for key in compiled),
    }
    # Traces are counted exactly; RSS growth over a --quick run is noise on a
    # busy machine, so the full benchmark, not this smoke run, judges it.
    traces = [c for c in results["checks"] if c["name"].startswith("traces")]
    assert traces and all(check["met"] for check in traces)
    table = (tmp_path / "results.md").read_text()
    assert "| Embedding + LSTM: ManualLoop / fit, spe=32 |" in table
