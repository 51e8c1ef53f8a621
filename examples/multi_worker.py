"""Multi-worker training with ManualLoop and MultiWorkerMirroredStrategy.

Keras 3's own `model.fit` fails under MultiWorkerMirroredStrategy before its
first step (keras-team/keras#20585); `ManualLoop(model).fit` runs the same
step there. Every worker runs this same script; `TF_CONFIG` tells each one
the cluster and its own place in it.

On each of N machines (index 0..N-1; worker 0 is the chief and writes the
files others only compute):

    TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]},
                "task": {"type": "worker", "index": 0}}' \\
        python examples/multi_worker.py --output runs/mw

To try it on one machine, start N local workers on free ports of 127.0.0.1:

    python examples/multi_worker.py --launch 2 --output runs/mw

Each worker saves its final weights to `<output>/worker-<index>.npz` so that
you can check that all workers ended with the same model.

Preemption: a cluster stops a job with SIGTERM. With `--backup-dir`, every
worker then backs up the same step and exits with code 143; started again,
the run resumes exactly. Try it on one machine (worker 1 gets SIGTERM after
its 10th step, then the same command resumes):

    python examples/multi_worker.py --launch 2 --backup-dir runs/bk \
        --signal TERM --signal-worker 1 --signal-at-step 10
    python examples/multi_worker.py --launch 2 --backup-dir runs/bk
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time

# Before TensorFlow is imported (in the functions below); see
# docs/quickstart.md.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

GLOBAL_BATCH_SIZE = 32


def make_data(samples: int = 512, seed: int = 0):
    """A small deterministic classification problem, the same on every worker.

    Returns:
        `(x, y)` numpy arrays: 16 features, 4 classes.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, 16)).astype("float32")
    y = (x[:, :4].argmax(axis=1)).astype("int64")
    return x, y


def build_model(strategy):
    """The model, built and compiled under `strategy.scope()`."""
    import keras

    from customfit import CustomModel

    keras.utils.set_random_seed(1)
    with strategy.scope():
        inputs = keras.Input((16,))
        hidden = keras.layers.Dense(32, activation="relu")(inputs)
        outputs = keras.layers.Dense(4)(hidden)
        model = CustomModel(inputs, outputs)
        model.compile(
            optimizer=keras.optimizers.Adam(1e-2),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
    return model


def train(
    strategy,
    epochs: int,
    output: str | None,
    verbose: int = 2,
    backup_dir: str | None = None,
    signal_at_step: int = 0,
    signal_name: str = "KILL",
):
    """Trains with ManualLoop under `strategy`; returns (model, history).

    With `backup_dir`, the run backs up every 4 steps (only the chief into
    `backup_dir`) and, started again after a crash, resumes exactly.
    `signal_at_step` simulates a crash (SIGKILL) or a preemption (SIGTERM):
    the process sends itself `signal_name` after that many steps.
    """
    import keras
    import tensorflow as tf

    from customfit import Backup
    from customfit import ManualLoop

    x, y = make_data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(
        GLOBAL_BATCH_SIZE
    )
    model = build_model(strategy)
    backup = Backup(backup_dir, every_steps=4) if backup_dir else None
    steps = [0]

    def maybe_crash(batch, logs):
        steps[0] += 1
        if steps[0] == signal_at_step:
            print(f"SIG{signal_name} at {time.time():.2f}", flush=True)
            os.kill(os.getpid(), signal.Signals[f"SIG{signal_name}"])

    history = ManualLoop(model, backup=backup).fit(
        dataset,
        epochs=epochs,
        validation_data=dataset,
        verbose=verbose,
        callbacks=[
            keras.callbacks.LambdaCallback(on_train_batch_end=maybe_crash)
        ],
    )
    return model, history


def run_worker(args) -> None:
    """One worker: join the cluster in TF_CONFIG, train, save the weights."""
    import numpy as np
    import tensorflow as tf

    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    import customfit
    from customfit import distribute

    # A worker silent for this long is lost: the others stop (the strategy
    # must exist before any other TensorFlow work).
    distribute.set_lost_worker_timeout(args.lost_worker_timeout)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()

    _, index = distribute.task()
    keras_fit_error = _try_keras_fit(strategy) if args.try_keras_fit else None
    custom_model_fit_error = None
    if args.try_keras_fit:
        try:
            build_model(strategy).fit(make_data()[0], make_data()[1])
        except customfit.UnsupportedStrategyError as error:
            custom_model_fit_error = str(error)
    signalled = args.signal_worker in (-1, index)
    model, history = train(
        strategy,
        args.epochs,
        args.output,
        backup_dir=args.backup_dir,
        signal_at_step=args.signal_at_step if signalled else 0,
        signal_name=args.signal,
    )
    if args.output:
        os.makedirs(args.output, exist_ok=True)
        weights = {f"w{i}": w for i, w in enumerate(model.get_weights())}
        np.savez(os.path.join(args.output, f"worker-{index}.npz"), **weights)
        with open(os.path.join(args.output, f"worker-{index}.json"), "w") as f:
            json.dump(
                {
                    "history": history.history,
                    "is_chief": distribute.is_chief(),
                    "replicas": strategy.num_replicas_in_sync,
                    "keras_fit_error": keras_fit_error,
                    "custom_model_fit_error": custom_model_fit_error,
                },
                f,
            )
    print(f"worker {index}: done, loss={history.history['loss'][-1]:.4f}")


def _try_keras_fit(strategy) -> str | None:
    """Runs Keras' own fit for one epoch; returns its error, if any.

    CustomModel.fit refuses up front with a clear error under several
    workers, so this calls keras.Model.fit itself to see Keras' behaviour.
    """
    import keras
    import tensorflow as tf

    x, y = make_data(samples=64)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(
        GLOBAL_BATCH_SIZE
    )
    model = build_model(strategy)
    try:
        keras.Model.fit(model, dataset, epochs=1, verbose=0)
    except Exception as error:  # noqa: BLE001 - we report whatever it is
        return f"{type(error).__name__}: {error}"[:500]
    return None


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def launch(args) -> int:
    """Starts `--launch N` local workers of this script; waits for all.

    Every worker is bounded by `--timeout` seconds. Once one fails, the
    others get 60 seconds to stop on their own (to back up, or to report a
    lost worker), then are killed. Returns 0 when all workers succeeded,
    else the first worker's nonzero exit code (143 after a preemption).
    """
    workers = [f"127.0.0.1:{port}" for port in free_ports(args.launch)]
    argv = [sys.executable, os.path.abspath(__file__)]
    argv += ["--epochs", str(args.epochs)]
    argv += ["--lost-worker-timeout", str(args.lost_worker_timeout)]
    if args.backup_dir:
        argv += ["--backup-dir", args.backup_dir]
    if args.signal_at_step:
        argv += ["--signal-at-step", str(args.signal_at_step)]
        argv += ["--signal", args.signal]
        argv += ["--signal-worker", str(args.signal_worker)]
    if args.output:
        argv += ["--output", args.output]
    if args.deterministic:
        argv += ["--deterministic"]
    if args.try_keras_fit:
        argv += ["--try-keras-fit"]
    processes = []
    try:
        for index in range(args.launch):
            config = {
                "cluster": {"worker": workers},
                "task": {"type": "worker", "index": index},
            }
            env = dict(os.environ, TF_CONFIG=json.dumps(config))
            processes.append(subprocess.Popen(argv, env=env))
        deadline = time.monotonic() + args.timeout
        codes = [None] * len(processes)
        while time.monotonic() < deadline and None in codes:
            for index, process in enumerate(processes):
                if codes[index] is None and process.poll() is not None:
                    codes[index] = process.returncode
                    print(
                        f"worker {index} exit {codes[index]} at "
                        f"{time.time():.2f}",
                        flush=True,
                    )
            if any(code not in (None, 0) for code in codes):
                deadline = min(deadline, time.monotonic() + 60)
            time.sleep(0.1)
        failed = [code for code in codes if code != 0]
        return 0 if not failed else (failed[0] if failed[0] else 1) % 256
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def main(argv: list[str] | None = None) -> int:
    """Runs one worker, or with `--launch N` starts N local ones."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--output", default=None, help="where weights go")
    parser.add_argument(
        "--launch", type=int, default=0, help="start N local workers"
    )
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument(
        "--deterministic", action="store_true", help="op determinism on"
    )
    parser.add_argument(
        "--backup-dir", default=None, help="back up here; resume from it"
    )
    parser.add_argument(
        "--signal-at-step",
        type=int,
        default=0,
        help="simulate a crash or preemption: signal after N steps",
    )
    parser.add_argument("--signal", default="KILL", help="KILL or TERM")
    parser.add_argument(
        "--lost-worker-timeout", type=float, default=10.0, help="seconds"
    )
    parser.add_argument(
        "--signal-worker", type=int, default=-1, help="which (-1: all)"
    )
    parser.add_argument(
        "--try-keras-fit",
        action="store_true",
        help="first run Keras' own fit and record how it fails",
    )
    args = parser.parse_args(argv)
    if args.launch:
        return launch(args)
    run_worker(args)  # a preempted worker exits with 143 (Preempted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
