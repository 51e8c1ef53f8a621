"""Tune the MNIST tutorial's convnet with keras-tuner, trials run by ManualLoop.

The model is the one of "Writing a training loop from scratch" (and of
`examples/mnist_custom_loop.py`): one convolution, then a linear classifier,
written once as a `customfit.CustomModel`. keras-tuner searches its number of
convolution filters and its learning rate; each trial trains through
`ManualLoop(model).fit(...)` (the default `--driver manual`) or through
`model.fit(...)` (`--driver fit`) -- the same search, the same scores.

Run it (MNIST comes from tensorflow-datasets; offline, point TFDS_DATA_DIR at
a prepared copy):

    TFDS_DATA_DIR=../shared/data/tfds python examples/tune_mnist.py

Add `--limit 256 --max-trials 2 --epochs 1` for a run of a few seconds, and
`--resume` to continue an earlier search in the same `--directory`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # see docs/quickstart.md

import keras  # noqa: E402
import keras_tuner  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

import customfit.tuner  # noqa: E402
from customfit import CustomModel  # noqa: E402


class Net(CustomModel):
    """The tutorial's convnet, with a tunable number of filters."""

    def __init__(self, filters: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(filters, 3, activation="relu")
        self.flatten = keras.layers.Flatten()
        self.classifier = keras.layers.Dense(10)

    def call(self, x, training=False):
        return self.classifier(self.flatten(self.conv(x)))


class TunedNet(customfit.tuner.HyperModel):
    """The search space: the number of filters and the learning rate."""

    def build(self, hp: keras_tuner.HyperParameters) -> Net:
        model = Net(filters=hp.Choice("filters", [32, 64]))
        # Create the weights now, so that keras-tuner can reload them into
        # a fresh model (tuner.get_best_models(), Hyperband).
        model(keras.Input((28, 28, 1)))
        learning_rate = hp.Float("learning_rate", 1e-4, 1e-2, sampling="log")
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
        return model


def normalize(image: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """Scales a uint8 image to float32 in [0, 1]; keeps the label."""
    return tf.cast(image, "float32") / 255.0, label


def load_mnist(
    split: str, limit: int | None = None, data_dir: str | None = None
) -> tuple[tf.Tensor, tf.Tensor]:
    """Returns MNIST `split` as (float32 images in [0, 1], int labels).

    Args:
        split: A tensorflow-datasets split, "train" or "test".
        limit: Keep only the first `limit` examples (None keeps all).
        data_dir: Where tensorflow-datasets finds MNIST; None means
            `$TFDS_DATA_DIR`, else `~/tensorflow_datasets`.

    Returns:
        Two tensors: images of shape (n, 28, 28, 1) and labels of shape (n,).
    """
    if limit is not None:
        split = f"{split}[:{limit}]"
    dataset = tfds.load(
        "mnist", split=split, as_supervised=True, data_dir=data_dir
    )
    images, labels = next(iter(dataset.map(normalize).batch(70_000)))
    return images, labels


def main(argv: Sequence[str] | None = None) -> keras_tuner.HyperParameters:
    """Runs the search, prints its summary, returns the best hyperparameters.

    Args:
        argv: Command-line arguments (None reads `sys.argv`).

    Returns:
        The best trial's `keras_tuner.HyperParameters`.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--driver", choices=customfit.tuner.DRIVERS, default="manual"
    )
    parser.add_argument("--max-trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None, metavar="N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--directory", default="tuner_runs")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the search found in --directory",
    )
    args = parser.parse_args(argv)

    x_train, y_train = load_mnist("train", args.limit, args.data_dir)
    x_test, y_test = load_mnist("test", args.limit, args.data_dir)
    tuner = keras_tuner.RandomSearch(
        TunedNet(driver=args.driver, seed=args.seed),
        objective="val_accuracy",
        max_trials=args.max_trials,
        seed=args.seed,
        directory=args.directory,
        project_name="tune_mnist",
        overwrite=not args.resume,
    )
    tuner.search_space_summary()
    tuner.search(
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_data=(x_test, y_test),
        verbose=0,
    )
    tuner.results_summary()

    best = tuner.get_best_hyperparameters()[0]
    print(
        f"Best: filters={best.get('filters')}, "
        f"learning_rate={best.get('learning_rate'):.3g} "
        f"(val_accuracy {tuner.oracle.get_best_trials()[0].score:.4f})"
    )
    return best


if __name__ == "__main__":
    main()
