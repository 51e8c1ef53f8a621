"""Draws docs/images/training_curves.png from a real, short MNIST run.

The quickstart shows this picture. It trains the tutorial's model
(`examples/mnist_custom_loop.py`) with `ManualLoop` on the first 12,000
MNIST training images for 6 epochs, validating on the first 2,000 test
images, and plots the History as the quickstart shows, with matplotlib.

    TFDS_DATA_DIR=../shared/data/tfds python docs/_tools/training_curves.py

It takes a few minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time

import keras
import matplotlib.pyplot as plt

from customfit import ManualLoop

REPO = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
IMAGE = os.path.join(REPO, "docs", "images", "training_curves.png")


def load_tutorial():
    """The MNIST tutorial module, examples/mnist_custom_loop.py."""
    path = os.path.join(REPO, "examples", "mnist_custom_loop.py")
    spec = importlib.util.spec_from_file_location("mnist_custom_loop", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    """Trains, prints the History, and writes the picture."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=12000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--output", default=IMAGE)
    args = parser.parse_args()

    tutorial = load_tutorial()
    keras.utils.set_random_seed(0)
    train = tutorial.load_mnist("train", limit=args.train, shuffle=True)
    test = tutorial.load_mnist("test", limit=args.test)
    model = tutorial.build_model()
    start = time.perf_counter()
    history = ManualLoop(model).fit(
        train, epochs=args.epochs, validation_data=test, verbose=2
    )
    seconds = time.perf_counter() - start
    print(
        {
            name: [round(v, 4) for v in vs]
            for name, vs in history.history.items()
        }
    )
    print(f"trained in {seconds:.0f} s")
    figure, axes = plt.subplots(1, 2, figsize=(9.6, 3.6), layout="tight")
    epochs = [epoch + 1 for epoch in history.epoch]  # 1-based, as printed
    for ax, name in zip(axes, ["loss", "accuracy"], strict=True):
        ax.plot(epochs, history.history[name], "o-", label="train")
        validation = history.history[f"val_{name}"]
        ax.plot(epochs, validation, "s--", label="validation")
        ax.set(title=name, xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    figure.suptitle(f"MNIST, {args.train:,} training images, ManualLoop")
    figure.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
