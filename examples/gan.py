"""A GAN on MNIST: a whole custom `train_step`, run by fit or a plain loop.

A GAN does not fit the default training step: it trains two networks with
two optimizers, one after the other, on every batch. Following the Keras
guide "Customizing what happens in fit()", the model here overrides

- `compile(d_optimizer, g_optimizer, loss_fn)`, calling `super().compile()`;
- `train_step`, with one `GradientTape` and one optimizer per network, and a
  `keras.random.SeedGenerator` for the latent noise;
- `metrics`, listing its own `keras.metrics.Mean` trackers, so both drivers
  reset them at each epoch.

The same model then trains through `--driver fit` (`model.fit`) or
`--driver manual` (`ManualLoop(model).fit`): same step, same History.

Run it (MNIST comes from tensorflow-datasets; offline, point TFDS_DATA_DIR at
a prepared copy, or pass `--synthetic` for random images of the same shape):

    TFDS_DATA_DIR=../shared/data/tfds python examples/gan.py \
        --driver manual --limit 2048
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # see docs/quickstart.md

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from customfit import CustomModel  # noqa: E402
from customfit import ManualLoop  # noqa: E402

DRIVERS = ("fit", "manual")
IMAGE_SHAPE = (28, 28, 1)


class GAN(CustomModel):
    """A generator and a discriminator, trained against each other.

    Args:
        discriminator: Maps images to one logit: real (0) or generated (1).
        generator: Maps latent vectors of size `latent_dim` to images.
        latent_dim: The size of the generator's input noise.
        seed: Seeds the latent noise and the label noise.
    """

    def __init__(
        self,
        discriminator: keras.Model,
        generator: keras.Model,
        latent_dim: int,
        seed: int = 1337,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.discriminator = discriminator
        self.generator = generator
        self.latent_dim = latent_dim
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        """The trackers that `fit` and `ManualLoop` reset at each epoch."""
        return [self.d_loss_tracker, self.g_loss_tracker]

    def compile(
        self,
        d_optimizer: keras.optimizers.Optimizer,
        g_optimizer: keras.optimizers.Optimizer,
        loss_fn: keras.losses.Loss,
    ) -> None:
        """Configures the GAN for training.

        Args:
            d_optimizer: Updates the discriminator.
            g_optimizer: Updates the generator.
            loss_fn: The discriminator's loss, on (labels, logits).
        """
        super().compile()
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        self.loss_fn = loss_fn

    def train_step(self, data: Any) -> dict[str, Any]:
        """Trains the discriminator, then the generator, on one batch.

        Args:
            data: A batch of real images (or `(images, labels)`; labels are
                ignored).

        Returns:
            The mean discriminator and generator losses so far this epoch.
        """
        real_images, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        batch_size = keras.ops.shape(real_images)[0]

        # Train the discriminator: generated images are labelled 1, real 0,
        # with a little noise on the labels (an important trick).
        generated_images = self.generator(self.sample_latent(batch_size))
        images = keras.ops.concatenate([generated_images, real_images], 0)
        labels = keras.ops.concatenate(
            [keras.ops.ones((batch_size, 1)), keras.ops.zeros((batch_size, 1))],
            axis=0,
        )
        labels += 0.05 * keras.random.uniform(
            keras.ops.shape(labels), seed=self.seed_generator
        )
        with tf.GradientTape() as tape:
            d_loss = self.loss_fn(labels, self.discriminator(images))
        variables = self.discriminator.trainable_weights
        gradients = tape.gradient(d_loss, variables)
        self.d_optimizer.apply_gradients(zip(gradients, variables, strict=True))

        # Train the generator: make the discriminator say "real" (0) to
        # generated images, without updating the discriminator.
        misleading_labels = keras.ops.zeros((batch_size, 1))
        with tf.GradientTape() as tape:
            generated_images = self.generator(self.sample_latent(batch_size))
            predictions = self.discriminator(generated_images)
            g_loss = self.loss_fn(misleading_labels, predictions)
        variables = self.generator.trainable_weights
        gradients = tape.gradient(g_loss, variables)
        self.g_optimizer.apply_gradients(zip(gradients, variables, strict=True))

        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        return {metric.name: metric.result() for metric in self.metrics}

    def sample_latent(self, batch_size: Any) -> Any:
        """Returns `batch_size` latent vectors drawn from a standard normal."""
        return keras.random.normal(
            (batch_size, self.latent_dim), seed=self.seed_generator
        )


def build_gan(latent_dim: int = 64, seed: int = 1337) -> GAN:
    """Returns a small convolutional GAN for 28x28x1 images, compiled.

    Args:
        latent_dim: The size of the generator's input noise.
        seed: Seeds the GAN's latent and label noise.

    Returns:
        A compiled `GAN` (Adam for both networks, binary cross-entropy).
    """
    discriminator = keras.Sequential(
        [
            keras.Input(IMAGE_SHAPE),
            keras.layers.Conv2D(32, 3, strides=2, padding="same"),
            keras.layers.LeakyReLU(negative_slope=0.2),
            keras.layers.Conv2D(64, 3, strides=2, padding="same"),
            keras.layers.LeakyReLU(negative_slope=0.2),
            keras.layers.GlobalMaxPooling2D(),
            keras.layers.Dense(1),
        ],
        name="discriminator",
    )
    generator = keras.Sequential(
        [
            keras.Input((latent_dim,)),
            keras.layers.Dense(7 * 7 * 64),
            keras.layers.LeakyReLU(negative_slope=0.2),
            keras.layers.Reshape((7, 7, 64)),
            keras.layers.Conv2DTranspose(64, 4, strides=2, padding="same"),
            keras.layers.LeakyReLU(negative_slope=0.2),
            keras.layers.Conv2DTranspose(64, 4, strides=2, padding="same"),
            keras.layers.LeakyReLU(negative_slope=0.2),
            keras.layers.Conv2D(1, 7, padding="same", activation="sigmoid"),
        ],
        name="generator",
    )
    gan = GAN(discriminator, generator, latent_dim=latent_dim, seed=seed)
    gan.compile(
        d_optimizer=keras.optimizers.Adam(learning_rate=0.0003),
        g_optimizer=keras.optimizers.Adam(learning_rate=0.0003),
        loss_fn=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    return gan


def load_images(
    batch_size: int = 64,
    limit: int | None = None,
    data_dir: str | None = None,
    synthetic: bool = False,
    shuffle: bool = False,
) -> tf.data.Dataset:
    """Returns batches of 28x28x1 float32 images in [0, 1].

    Args:
        batch_size: Images per batch.
        limit: Keep only the first `limit` images (None keeps all).
        data_dir: Where tensorflow-datasets finds MNIST; None means
            `$TFDS_DATA_DIR`, else `~/tensorflow_datasets`.
        synthetic: Use uniform random images (`limit` of them, default
            1024) instead of MNIST; needs no tensorflow-datasets.
        shuffle: Shuffle the images (in a buffer of 1024) every epoch.

    Returns:
        A batched, prefetched `tf.data.Dataset` of images.
    """
    if synthetic:
        images = np.random.default_rng(0).random(
            (limit or 1024, *IMAGE_SHAPE), dtype="float32"
        )
        dataset = tf.data.Dataset.from_tensor_slices(images)
    else:
        import tensorflow_datasets as tfds

        split = "train" if limit is None else f"train[:{limit}]"
        dataset = tfds.load(
            "mnist", split=split, as_supervised=True, data_dir=data_dir
        )
        dataset = dataset.map(lambda image, _: tf.cast(image, "float32") / 255)
    if shuffle:
        dataset = dataset.shuffle(1024)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def main(argv: Sequence[str] | None = None) -> keras.callbacks.History:
    """Trains the GAN and prints its losses per epoch.

    Args:
        argv: Command-line arguments (None reads `sys.argv`).

    Returns:
        The training `History`; `history.model` is the trained GAN.
    """
    parser = argparse.ArgumentParser(description="Train a small GAN on MNIST.")
    parser.add_argument("--driver", choices=DRIVERS, default="fit")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None, metavar="N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--synthetic", action="store_true")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    images = load_images(
        args.batch_size,
        args.limit,
        args.data_dir,
        synthetic=args.synthetic,
        shuffle=True,
    )
    gan = build_gan()
    trainer = gan if args.driver == "fit" else ManualLoop(gan)
    history = trainer.fit(images, epochs=args.epochs)
    for epoch in range(len(history.epoch)):
        d_loss = history.history["d_loss"][epoch]
        g_loss = history.history["g_loss"][epoch]
        print(f"epoch {epoch + 1}: d_loss {d_loss:.4f}, g_loss {g_loss:.4f}")
    return history


if __name__ == "__main__":
    main()
