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
            f.write("called")

if args.kill_in_write:
    import customfit.backup
    writes = [0]
    commit = customfit.backup._commit
    def dying_commit(temporary, final):
        writes[0] += 1
        if writes[0] == args.kill_in_write:
            os.kill(os.getpid(), signal.SIGKILL)  # files written, not renamed
        commit(temporary, final)
    customfit.backup._commit = dying_commit

loop = ManualLoop(model, backup=Backup(args.backup_dir, every_steps=4))
try:
    history = loop.fit(
        train, epochs=3, validation_data=validation, verbose=0,
        callbacks=[Probe()])
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
    sys.exit(130)
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
    latest = (backup_dir / "latest").read_text()
    assert latest.startswith("backup-e00001-s000000")
    _, resumed = run(tmp_path, "resumed", backup_dir, "--model", model)
    assert_same_run(resumed, reference[model])


@pytest.mark.slow
def test_kill_while_writing_a_backup_resumes_from_the_previous(
    tmp_path, reference
):
    backup_dir = tmp_path / "backup"
    # Writes: e0 s4, e0 s8, e1 s0 (epoch end), e1 s4 -- killed in the 4th.
    killed, _ = run(
        tmp_path, "killed", backup_dir, "--kill-in-write", "4", check=False
    )
    assert killed.returncode == -signal.SIGKILL
    names = os.listdir(backup_dir)
    assert ".tmp-backup-e00001-s0000004" in names  # the half-done write
    assert (backup_dir / "latest").read_text() == "backup-e00001-s0000000"
    _, resumed = run(tmp_path, "resumed", backup_dir)
    assert not any(n.startswith(".tmp-") for n in os.listdir(backup_dir))
    assert_same_run(resumed, reference["dense"])


@pytest.mark.slow
def test_ctrl_c_stops_after_a_step_backs_up_and_resumes_exactly(
    tmp_path, reference
):
    backup_dir = tmp_path / "backup"
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
            if line.strip() == "STEP 13" or time.monotonic() > deadline:
                break
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr[-3000:]
    assert "INTERRUPTED" in stdout
    assert "KeyboardInterrupt" not in stderr  # handled, no traceback
    with open(out + ".train_end") as f:
        assert f.read() == "called"
    latest = (backup_dir / "latest").read_text()
    assert latest.startswith("backup-e00001-s00000")
    assert latest != "backup-e00001-s0000000"  # a mid-epoch backup
    _, resumed = run(tmp_path, "resumed", backup_dir)
    assert_same_run(resumed, reference["dense"])


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
    def __init__(self):
        super().__init__()
        self.events = []

    def on_train_batch_end(self, batch, logs=None):
        self.events.append("batch")
        self.weights = [w.copy() for w in self.model.get_weights()]

    def on_train_end(self, logs=None):
        self.events.append("train_end")


def test_data_pipeline_error_reaches_the_user_after_on_train_end():
    model = build()
    recorder = Recorder()
    with pytest.raises(tf.errors.InvalidArgumentError, match="bad batch 3"):
        ManualLoop(model).fit(
            failing_dataset(3).repeat(),
            steps_per_epoch=6,
            callbacks=[recorder],
            verbose=0,
        )
    assert recorder.events == ["batch"] * 3 + ["train_end"]
    for kept, now in zip(recorder.weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(kept, now)  # the last completed step


def test_callback_error_reaches_the_user_unchanged():
    class Failing(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise Boom("from a callback")

    recorder = Recorder()
    with pytest.raises(Boom, match="from a callback"):
        ManualLoop(build()).fit(
            np.zeros((8, 4)),
            np.zeros((8, 1)),
            epochs=2,
            callbacks=[Failing(), recorder],
            verbose=0,
        )
    assert recorder.events[-1] == "train_end"


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
    names = sorted(n for n in os.listdir(tmp_path) if n.startswith("backup-"))
    assert names == ["backup-e00001-s0000004", "backup-e00002-s0000000"]
    assert (tmp_path / "latest").read_text() == "finished"
    # A finished directory does not resume: the new run trains all epochs.
    history = ManualLoop(build(), backup=backup).fit(
        x, y, batch_size=8, epochs=2, verbose=0
    )
    assert history.epoch == [0, 1]


def test_backup_accepts_a_directory_string(tmp_path):
    loop = ManualLoop(build(), backup=str(tmp_path))
    assert loop.backup == customfit.Backup(str(tmp_path))
