"""Exact resume: runs killed (SIGKILL, SIGINT, mid-write) continue bitwise.

Every run is a real subprocess (the script below), bounded in time. A run
that is killed and then started again with the same backup directory must
end with the weights and History of a run that was never interrupted, with
op determinism on, dropout in the model and a reshuffling dataset.
"""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import customfit
from customfit import Backup
from customfit import CustomModel
from customfit import ManualLoop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import argparse, importlib.util, json, os, signal, sys
import numpy as np
import tensorflow as tf
tf.config.experimental.enable_op_determinism()
import keras
import customfit
from customfit import Backup, CustomModel, ManualLoop

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="dense")
parser.add_argument("--backup-dir", required=True)
parser.add_argument("--out", required=True)
parser.add_argument("--kill-at-step", type=int, default=0)
parser.add_argument("--kill-in-write", type=int, default=0)
parser.add_argument("--announce", action="store_true")
args = parser.parse_args()

keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
if args.model == "gan":
    spec = importlib.util.spec_from_file_location(
        "gan", os.path.join(REPO, "examples", "gan.py"))
    gan = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gan)
    model = gan.build_gan(latent_dim=8)
    images = rng.random((48, 28, 28, 1), dtype="float32")
    train = tf.data.Dataset.from_tensor_slices(images)
    train = train.shuffle(48, seed=1).batch(8)
    validation = None
else:
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    hidden = keras.layers.Dropout(0.3, seed=2)(hidden)
    model = CustomModel(inputs, keras.layers.Dense(3)(hidden))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    x = rng.normal(size=(80, 6)).astype("float32")
    y = rng.integers(0, 3, size=(80,))
    train = tf.data.Dataset.from_tensor_slices((x, y))
    train = train.shuffle(80, seed=1).batch(8)
    validation = tf.data.Dataset.from_tensor_slices((x[:24], y[:24])).batch(8)

global_step = [0]

class Probe(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        global_step[0] += 1
        if args.announce:
            print(f"STEP {global_step[0]}", flush=True)
        if global_step[0] == args.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_end(self, logs=None):
        with open(args.out + ".train_end", "w") as f:
            f.write("called")  # fit calls it only when training completes

if args.kill_in_write:
    # Killed after a backup's files are written, before the manager's
    # `checkpoint` file names it.
    from tensorflow.python.checkpoint import checkpoint_management
    writes = [0]
    record = checkpoint_management.update_checkpoint_state_internal
    def dying_record(*args, **kwargs):
        writes[0] += 1
        if writes[0] == args_.kill_in_write:
            os.kill(os.getpid(), signal.SIGKILL)
        return record(*args, **kwargs)
    args_ = args
    checkpoint_management.update_checkpoint_state_internal = dying_record

loop = ManualLoop(model, backup=Backup(args.backup_dir, every_steps=4))
try:
    history = loop.fit(
        train, epochs=3, validation_data=validation, verbose=0,
        callbacks=[Probe()])
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
    sys.exit(130)
except customfit.errors.Preempted:
    print("PREEMPTED", flush=True)
    raise
np.savez(args.out + ".npz", *[v.numpy() for v in model.variables])
with open(args.out + ".json", "w") as f:
    json.dump({"history": history.history, "epoch": history.epoch}, f)
"""


def run(tmp_path, name, backup_dir, *flags, check=True):
    script = tmp_path / "train.py"
    script.write_text(f"REPO = {REPO!r}\n" + SCRIPT)
    out = str(tmp_path / name)
    done = subprocess.run(
        [sys.executable, str(script), "--backup-dir", str(backup_dir)]
        + ["--out", out, *flags],
        capture_output=True,
        text=True,
        timeout=240,
    )
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done, out


def load(out):
    arrays = np.load(out + ".npz")
    with open(out + ".json") as f:
        return [arrays[k] for k in sorted(arrays, key=lambda k: int(k[4:]))], (
            json.load(f)
        )


def assert_same_run(out_a, out_b):
    (weights_a, logs_a), (weights_b, logs_b) = load(out_a), load(out_b)
    assert len(weights_a) == len(weights_b)
    for a, b in zip(weights_a, weights_b, strict=True):
        np.testing.assert_array_equal(a, b)
    assert logs_a == logs_b
    assert len(logs_a["epoch"]) == 3


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted runs (with backups on), one per model."""
    tmp_path = tmp_path_factory.mktemp("reference")
    outs = {}
    for model in ("dense", "gan"):
        _, outs[model] = run(
            tmp_path, model, tmp_path / f"backup-{model}", "--model", model
        )
        # A finished run deletes its backups: the next run starts fresh.
        assert not [
            n
            for n in os.listdir(tmp_path / f"backup-{model}")
            if n.startswith("backup-")
        ]
    return outs


@pytest.mark.slow
@pytest.mark.parametrize("model", ["dense", "gan"])
def test_sigkill_mid_epoch_then_resume_is_exact(tmp_path, reference, model):
    backup_dir = tmp_path / "backup"
    # 10 steps per epoch, backups every 4: killed at global step 15
    # (epoch 1, step 5), the run resumes from step 4 of epoch 1.
    killed, _ = run(
        tmp_path,
        "killed",
        backup_dir,
        "--model",
        model,
        "--kill-at-step",
        "15" if model == "dense" else "11",
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL
    assert latest(backup_dir)[0] == 1  # a backup of epoch 1
    _, resumed = run(tmp_path, "resumed", backup_dir, "--model", model)
    assert_same_run(resumed, reference[model])


@pytest.mark.slow
def test_kill_while_writing_a_backup_resumes_from_the_previous(
    tmp_path, reference
):
    backup_dir = tmp_path / "backup"
    # Writes: e0 s4, e0 s8, e1 s0 (epoch end), e1 s4 -- killed in the 4th.
    # The manager records its state twice per save: call 7 is the 4th's 1st.
    killed, _ = run(
        tmp_path, "killed", backup_dir, "--kill-in-write", "7", check=False
    )
    assert killed.returncode == -signal.SIGKILL
    assert latest(backup_dir) == (1, 0)  # the half-done write is ignored
    assert (backup_dir / "backup-4.index").exists()
    _, resumed = run(tmp_path, "resumed", backup_dir)
    assert_same_run(resumed, reference["dense"])


def interrupt(tmp_path, backup_dir, signum, at_step=13):
    """Runs the script, sends `signum` after step `at_step`; returns outputs."""
    script = tmp_path / "train.py"
    script.write_text(f"REPO = {REPO!r}\n" + SCRIPT)
    out = str(tmp_path / "interrupted")
    process = subprocess.Popen(
        [sys.executable, str(script), "--backup-dir", str(backup_dir)]
        + ["--out", out, "--announce"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        for line in process.stdout:
            if line.strip() == f"STEP {at_step}" or time.monotonic() > deadline:
                break
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, stdout, stderr, out


@pytest.mark.slow
@pytest.mark.parametrize(
    "signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"]
)
def test_a_signal_stops_after_a_step_backs_up_and_resumes_exactly(
    tmp_path, reference, signum
):
    backup_dir = tmp_path / "backup"
    code, stdout, stderr, out = interrupt(tmp_path, backup_dir, signum)
    if signum == signal.SIGINT:
        assert code == 130, stderr[-3000:]
        assert "INTERRUPTED" in stdout
        assert "KeyboardInterrupt" not in stderr  # handled, no traceback
    else:
        assert code == customfit.errors.Preempted.EXIT_CODE == 143, stderr
        assert "PREEMPTED" in stdout
        assert "fit stopped by SIGTERM at epoch 1, step" in stderr
    assert not os.path.exists(out + ".train_end")  # as under fit
    epoch, step = latest(backup_dir)
    assert epoch == 1 and 3 <= step < 10  # mid-epoch, at or after step 13
    _, resumed = run(tmp_path, "resumed", backup_dir)
    assert_same_run(resumed, reference["dense"])


def position(path):
    """(epoch, step) of the backup at `path`, from its saved state."""
    reader = tf.train.load_checkpoint(str(path))
    state = json.loads(reader.get_tensor("state/.ATTRIBUTES/py_state"))
    return state["epoch"], state["step"]


def latest(directory):
    """(epoch, step) of the newest complete backup in `directory`."""
    return position(tf.train.latest_checkpoint(str(directory)))


def build(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    model = CustomModel(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer="sgd", loss="mse")
    return model


class Boom(Exception):
    pass


def failing_dataset(fail_at):
    """Batch `fail_at` fails inside the pipeline (a tf.debugging check)."""
    x = np.arange(8, dtype="float32").repeat(16).reshape(32, 4)

    def check(features):
        tf.debugging.assert_less(
            features, float(fail_at), message=f"bad batch {fail_at}"
        )
        return features, tf.ones((4, 1))

    return tf.data.Dataset.from_tensor_slices(x).batch(4).map(check)


class Recorder(keras.callbacks.Callback):
    """Records every training event, and the weights after each batch."""

    def __init__(self):
        super().__init__()
        self.events = []

    def on_train_batch_end(self, batch, logs=None):
        self.events.append("on_train_batch_end")
        self.weights = [w.copy() for w in self.model.get_weights()]


for _hook in (
    "on_train_begin",
    "on_train_end",
    "on_epoch_begin",
    "on_epoch_end",
    "on_train_batch_begin",
    "on_test_begin",
    "on_test_end",
    "on_test_batch_begin",
    "on_test_batch_end",
):
    setattr(
        Recorder,
        _hook,
        lambda self, *args, _hook=_hook, **kwargs: self.events.append(_hook),
    )


def events_of(driver, error, **fit_args):
    model, recorder = build(), Recorder()
    run = model.fit if driver == "fit" else ManualLoop(model).fit
    with pytest.raises(error[0], match=error[1]):
        run(callbacks=[*fit_args.pop("callbacks", []), recorder], **fit_args)
    return model, recorder


def test_an_error_mid_epoch_fires_the_events_fit_fires():
    # Keras' fit calls no on_train_end after an error (its terminate_on_nan
    # test checks that); neither does ManualLoop.
    error = (tf.errors.InvalidArgumentError, "bad batch 3")
    args = dict(x=failing_dataset(3).repeat(), steps_per_epoch=6, verbose=0)
    _, by_fit = events_of("fit", error, **args)
    args["x"] = failing_dataset(3).repeat()
    model, by_loop = events_of("manual", error, **args)
    assert by_loop.events == by_fit.events
    assert by_loop.events[-1] == "on_train_batch_begin"
    assert "on_train_end" not in by_loop.events
    for kept, now in zip(by_loop.weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(kept, now)  # the last completed step


def test_a_callback_error_reaches_the_user_unchanged_with_fits_events():
    class Failing(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise Boom("from a callback")

    error, data = (
        (Boom, "from a callback"),
        (np.zeros((8, 4)), np.zeros((8, 1))),
    )
    by = [
        events_of(
            driver,
            error,
            x=data[0],
            y=data[1],
            epochs=2,
            callbacks=[Failing()],
            validation_data=data,
            verbose=0,
        )[1]
        for driver in ("fit", "manual")
    ]
    assert by[1].events == by[0].events
    assert by[1].events[-1] == "on_test_end"


def test_backup_directory_keeps_the_newest_and_a_finished_run_restarts(
    tmp_path,
):
    model = build()
    x, y = np.zeros((40, 4), "float32"), np.ones((40, 1), "float32")
    backup = Backup(
        str(tmp_path), every_steps=2, keep=2, delete_when_finished=False
    )
    ManualLoop(model, backup=backup).fit(
        x, y, batch_size=8, epochs=2, verbose=0
    )
    kept = tf.train.get_checkpoint_state(str(tmp_path))
    positions = [position(p) for p in kept.all_model_checkpoint_paths]
    assert positions == [(1, 4), (2, 0)]  # epoch, step
    assert (tmp_path / "finished").exists()
    # A finished directory does not resume: the new run trains all epochs.
    history = ManualLoop(build(), backup=backup).fit(
        x, y, batch_size=8, epochs=2, verbose=0
    )
    assert history.epoch == [0, 1]


def test_a_resumed_run_backs_up_at_the_steps_of_an_uninterrupted_one(
    tmp_path,
):
    class StopsInStep7(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 6:
                raise Boom("stopped in epoch 0, step 7")

    x, y = np.zeros((64, 4), "float32"), np.ones((64, 1), "float32")
    backup = Backup(
        str(tmp_path), every_steps=3, keep=10, delete_when_finished=False
    )
    fit_args = dict(x=x, y=y, batch_size=8, epochs=2, verbose=0)
    with pytest.raises(Boom):
        ManualLoop(build(), backup=backup).fit(
            **fit_args, callbacks=[StopsInStep7()]
        )
    assert latest(tmp_path) == (0, 6)
    ManualLoop(build(), backup=backup).fit(**fit_args)
    kept = tf.train.get_checkpoint_state(str(tmp_path))
    positions = [position(p) for p in kept.all_model_checkpoint_paths]
    # 8 steps an epoch: every 3 steps, counted across the resume.
    assert positions == [(0, 3), (0, 6), (1, 0), (1, 3), (1, 6), (2, 0)]


def test_backup_accepts_a_directory_string(tmp_path):
    loop = ManualLoop(build(), backup=str(tmp_path))
    assert loop.backup == customfit.Backup(str(tmp_path))


@pytest.mark.slow
def test_a_grace_period_backs_up_at_once_then_again_before_it_ends(tmp_path):
    # TensorFlow's PreemptionCheckpointHandler (local mode) runs the grace
    # period: a backup soon after the signal, training on, a last backup
    # when the period is about to end, then the stop.
    class Terminate(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if self.model.optimizer.iterations == 2:
                os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.02)

    backup = Backup(str(tmp_path), every_epochs=10**6, grace_period=2.0)
    x, y = np.zeros((16, 4), "float32"), np.ones((16, 1), "float32")
    with pytest.raises(customfit.errors.Preempted) as stopped:
        ManualLoop(build(), backup=backup).fit(
            x, y, batch_size=4, epochs=500, verbose=0, callbacks=[Terminate()]
        )
    assert stopped.value.code == 143
    kept = tf.train.get_checkpoint_state(str(tmp_path))
    first, last = [position(p) for p in kept.all_model_checkpoint_paths]
    # (epoch, step), 4 steps an epoch: it trained on for 8 steps or more.
    assert last[0] - first[0] >= 2
