"""MNIST "training loop from scratch", written once and run by three drivers.

The Keras tutorial "Writing a training loop from scratch" trains a small
convnet on MNIST with a hand-written `GradientTape` loop, and its math drifts
from `model.fit`. Here the model is a `customfit.CustomModel`: its training
step is defined once, and the same model trains through

- `fit`: Keras drives the step (`model.fit`);
- `manual`: a plain Python loop drives it (`ManualLoop(model).fit`), the loop
  you would write by hand, in `customfit/loop.py`;
- `eager`: the same loop with the step uncompiled
  (`ManualLoop(model, run_eagerly=True).fit`), so a breakpoint or a `print`
  in the step fires on every batch.

All three print the same progress bar and return the same `History`.

Run it (MNIST comes from tensorflow-datasets; offline, point TFDS_DATA_DIR at
a prepared copy):

    TFDS_DATA_DIR=../shared/data/tfds python examples/mnist_custom_loop.py \
        --driver manual

Add `--limit 256 --epochs 1` for a run of a few seconds.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # see docs/quickstart.md

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from customfit import CustomModel  # noqa: E402
from customfit import ManualLoop  # noqa: E402

DRIVERS = ("fit", "manual", "eager")


class Net(CustomModel):
    """The tutorial's convnet: one convolution, then a linear classifier."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(64, 3, activation="relu")
        self.flatten = keras.layers.Flatten()
        self.classifier = keras.layers.Dense(10)

    def call(self, x, training=False):
        return self.classifier(self.flatten(self.conv(x)))


def normalize(image: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """Scales a uint8 image to float32 in [0, 1]; keeps the label."""
    return tf.cast(image, "float32") / 255.0, label


def load_mnist(
    split: str,
    batch_size: int = 64,
    limit: int | None = None,
    data_dir: str | None = None,
    shuffle: bool = False,
) -> tf.data.Dataset:
    """Returns MNIST `split` as batches of (float32 images in [0, 1], labels).

    Args:
        split: A tensorflow-datasets split, "train" or "test".
        batch_size: Examples per batch.
        limit: Keep only the first `limit` examples (None keeps all).
        data_dir: Where tensorflow-datasets finds MNIST; None means
            `$TFDS_DATA_DIR`, else `~/tensorflow_datasets`.
        shuffle: Shuffle the examples (in a buffer of 1024) every epoch.

    Returns:
        A batched, prefetched `tf.data.Dataset` of `(images, labels)`.
    """
    if limit is not None:
        split = f"{split}[:{limit}]"
    dataset = tfds.load(
        "mnist", split=split, as_supervised=True, data_dir=data_dir
    )
    dataset = dataset.map(normalize)
    if shuffle:
        dataset = dataset.shuffle(1024)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def build_model() -> Net:
    """Returns the tutorial's model, compiled with its loss, optimizer, metric.

    Returns:
        A compiled `Net`.
    """
    model = Net()
    model.compile(
        optimizer=keras.optimizers.Adam(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model


def driver(model: keras.Model, name: str) -> keras.Model | ManualLoop:
    """Returns what trains `model` for driver `name`: it has fit and evaluate.

    Args:
        model: A compiled model.
        name: One of `DRIVERS`.

    Returns:
        `model` itself for "fit", else a `ManualLoop` over it.
    """
    if name == "fit":
        return model
    return ManualLoop(model, run_eagerly=name == "eager")


def main(argv: Sequence[str] | None = None) -> float:
    """Trains on MNIST, prints the accuracies, returns the test accuracy.

    Args:
        argv: Command-line arguments (None reads `sys.argv`).

    Returns:
        The accuracy on the test split after training.
    """
    parser = argparse.ArgumentParser(
        description="Train the MNIST tutorial model."
    )
    parser.add_argument("--driver", choices=DRIVERS, default="fit")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None, metavar="N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    train = load_mnist(
        "train", args.batch_size, args.limit, args.data_dir, shuffle=True
    )
    test = load_mnist("test", args.batch_size, args.limit, args.data_dir)
    trainer = driver(build_model(), args.driver)

    history = trainer.fit(train, epochs=args.epochs)
    for epoch, accuracy in enumerate(history.history["accuracy"], start=1):
        print(f"epoch {epoch}: train accuracy {accuracy:.4f}")
    test_accuracy = trainer.evaluate(test, return_dict=True)["accuracy"]
    print(f"test accuracy ({args.driver}): {test_accuracy:.4f}")
    return test_accuracy


if __name__ == "__main__":
    main()
