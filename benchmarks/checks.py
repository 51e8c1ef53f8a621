"""Trace counts over ragged batches, and resident memory over many epochs.

`count_traces` trains with a ragged last batch, validation and a final
`evaluate`, and counts how often the Python body of `train_step` and
`test_step` ran: a compiled step runs its Python only while being traced, so
the count is the number of traces (1 each when nothing retraces).

`memory_growth` trains for 20 epochs in a fresh Python process and records
the peak and the current resident set size after each epoch; what they grow
by after epoch 2 (when every trace, cache and buffer exists) is what a long
run leaks. Run this module to get it as JSON:

    python -m benchmarks.checks --memory --driver manual_loop
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import keras

from benchmarks import workload
from customfit import ManualLoop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class StepCounting:
    """Mixin for a Keras model: counts how often each step's body runs.

    Under `tf.function` the Python body runs once per trace, so the counts
    are the traces of the compiled steps.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.train_step_runs = 0
        self.test_step_runs = 0

    def train_step(self, data):
        self.train_step_runs += 1
        return super().train_step(data)

    def test_step(self, data):
        self.test_step_runs += 1
        return super().test_step(data)


class CountingNet(StepCounting, workload.Net):
    """The tutorial model, counting how often its step bodies run."""


def count_traces(
    driver: str,
    *,
    batch_size: int = 64,
    steps_per_execution: int = 1,
    epochs: int = 3,
) -> dict[str, int]:
    """Trains with ragged last batches; returns the traces of each step.

    Args:
        driver: "manual_loop" or "fit".
        batch_size: Examples per batch; the data has 5 full batches and a
            ragged one, for training and for validation.
        steps_per_execution: Passed to `compile`.
        epochs: Epochs to train (each validates).

    Returns:
        `{"train": traces of train_step, "test": traces of test_step,
        "train_batches": training batches run}`.
    """
    model = workload.build_model(
        steps_per_execution=steps_per_execution, model_class=CountingNet
    )
    samples = 5 * batch_size + batch_size // 2 + 1
    train = workload.make_dataset(samples, batch_size, seed=1)
    validation = workload.make_dataset(samples, batch_size, seed=2)
    trainer = model if driver == "fit" else ManualLoop(model)
    trainer.fit(train, epochs=epochs, validation_data=validation, verbose=0)
    trainer.evaluate(validation, verbose=0)
    return {
        "train": model.train_step_runs,
        "test": model.test_step_runs,
        "train_batches": int(model.optimizer.iterations.numpy()),
    }


class _MemoryRecorder(keras.callbacks.Callback):
    """Records the peak and current resident set size after each epoch."""

    def __init__(self):
        super().__init__()
        self.peak_mb: list[float] = []
        self.current_mb: list[float] = []

    def on_epoch_end(self, epoch, logs=None):
        self.peak_mb.append(peak_rss_mb())
        self.current_mb.append(current_rss_mb())


def peak_rss_mb() -> float:
    """The process's peak resident set size so far, in MB (Linux: KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == "darwin":
        peak /= 1024  # bytes there
    return peak / 1024


def current_rss_mb() -> float:
    """The process's resident set size now, in MB (the peak where unknown)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except OSError:
        return peak_rss_mb()
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_growth(
    driver: str, *, samples: int, batch_size: int, epochs: int = 20
) -> dict[str, Any]:
    """Trains `epochs` epochs in this process; returns RSS after each.

    Args:
        driver: "manual_loop" or "fit".
        samples: Examples per epoch.
        batch_size: Examples per batch.
        epochs: Epochs to train.

    Returns:
        The peak and current RSS (MB) after each epoch, and `growth_mb`
        (see `rss_growth_mb`).
    """
    model = workload.build_model()
    dataset = workload.make_dataset(samples, batch_size)
    recorder = _MemoryRecorder()
    trainer = model if driver == "fit" else ManualLoop(model)
    trainer.fit(dataset, epochs=epochs, verbose=0, callbacks=[recorder])
    result = {
        "driver": driver,
        "epochs": epochs,
        "samples": samples,
        "peak_mb": recorder.peak_mb,
        "current_mb": recorder.current_mb,
    }
    result["growth_mb"] = rss_growth_mb(result)
    return result


def rss_growth_mb(memory: dict[str, Any]) -> float:
    """How much RSS grew from epoch 2 to the last epoch, in MB.

    The larger of the peak's growth and the current RSS's trend: the
    least-squares slope over epochs 2 to the last, times their count. A
    leak grows the RSS every epoch, so it shows in the slope, where one
    epoch's swing of the allocator (tens of MB, either way) barely does.
    """
    peak, current = memory["peak_mb"], memory["current_mb"][1:]
    slope = statistics.linear_regression(range(len(current)), current).slope
    return max(peak[-1] - peak[1], slope * (len(current) - 1))


def memory_growth_in_subprocess(
    driver: str, *, samples: int, batch_size: int, epochs: int = 20
) -> dict[str, Any]:
    """`memory_growth` in a fresh Python process (a clean baseline)."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.checks",
        "--memory",
        f"--driver={driver}",
        f"--samples={samples}",
        f"--batch-size={batch_size}",
        f"--epochs={epochs}",
    ]
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        command,
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"memory run failed ({done.returncode}):\n{done.stderr[-3000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> None:
    """Prints `memory_growth` as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory", action="store_true", required=True)
    parser.add_argument(
        "--driver", choices=("manual_loop", "fit"), default="manual_loop"
    )
    parser.add_argument("--samples", type=int, default=3200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args(argv)
    result = memory_growth(
        args.driver,
        samples=args.samples,
        batch_size=args.batch_size,
        epochs=args.epochs,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
