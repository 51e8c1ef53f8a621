"""pytest plugin for running the Python code blocks of docs/ and README.md.

The blocks are collected and run by pytest-markdown-docs, one test per
block. `tests/test_docs.py` starts that run in its own pytest process, so
that the blocks see a fresh TensorFlow, as a reader's script would (and not
the two logical CPUs and op determinism that `tests/conftest.py` sets up for
the other tests), and cannot leave global state behind for them:

    python -m pytest -p tests.markdown_docs_plugin --markdown-docs \\
        --markdown-docs-syntax=superfences README.md docs/*.md

The syntax is superfences', the one Material for MkDocs renders: a block
runs unless it is marked ```` ```{.python notest reason="..."} ````, and
```` ```{.python continuation} ```` continues the block before it.

This plugin gives every block:

- its own empty working directory, so files a block writes (backups,
  logs, pictures) land in a temporary folder;
- `TFDS_DATA_DIR` made absolute, so tensorflow-datasets finds MNIST from
  there (it defaults to the prepared copy in `../shared/data/tfds`);
- `train_ds` and `test_ds`, the small MNIST datasets the README's example
  trains on without defining them (128 training and 64 test images).
"""

from __future__ import annotations

import functools
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SHARED_TFDS = os.path.join(REPO, "..", "shared", "data", "tfds")

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if os.environ.get("TFDS_DATA_DIR"):
    os.environ["TFDS_DATA_DIR"] = os.path.abspath(os.environ["TFDS_DATA_DIR"])
elif os.path.isdir(_SHARED_TFDS):
    os.environ["TFDS_DATA_DIR"] = os.path.abspath(_SHARED_TFDS)


@pytest.fixture(autouse=True)
def _fresh_start(tmp_path, monkeypatch):
    """Runs each block in an empty folder, seeded, with the default policy.

    Seeding keeps a block from depending on the blocks before it: once one
    turned op determinism on, random ops without a seed would fail.
    """
    import keras

    monkeypatch.chdir(tmp_path)
    keras.utils.set_random_seed(0)
    yield
    keras.mixed_precision.set_global_policy("float32")


@functools.cache
def _mnist(split: str, samples: int):
    import tensorflow as tf
    import tensorflow_datasets as tfds

    dataset = tfds.load(
        "mnist", split=f"{split}[:{samples}]", as_supervised=True
    )
    dataset = dataset.map(
        lambda image, label: (tf.cast(image, "float32") / 255, label)
    )
    return dataset.batch(64).cache()


def pytest_markdown_docs_globals():
    """The names every block starts with (pytest-markdown-docs' hook)."""
    return {
        "train_ds": _mnist("train", 128),
        "test_ds": _mnist("test", 64),
    }
