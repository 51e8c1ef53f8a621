"""Keras' own tests for the installed Keras version, from the registry."""

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import keras

# The Keras test files the conformance run uses, relative to the sdist root.
TEST_FILES = (
    "keras/src/trainers/trainer_test.py",
    "keras/src/models/model_test.py",
    "keras/src/models/functional_test.py",
    "keras/src/callbacks/*_test.py",
)


def cache_dir() -> Path:
    """Where the installed Keras' tests are extracted (not in the repo)."""
    root = os.environ.get("CUSTOMFIT_CACHE") or Path.home() / ".cache"
    return Path(root) / "customfit" / f"keras-{keras.__version__}"


def keras_tests() -> tuple[Path | None, str]:
    """Returns (the extracted tests' root, "") or (None, why they are absent).

    Downloads the keras source distribution of the installed version once
    with this interpreter's pip, and extracts only its `*_test.py` files and
    its `pyproject.toml` (Keras' pytest settings), without any
    `__init__.py`: `import keras` in the tests then finds the installed
    Keras, the one customfit runs on.
    """
    root = cache_dir()
    if root.exists():
        return root, ""
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent) as download:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps",
            "--no-binary", ":all:", "--disable-pip-version-check",
            "--dest", download, f"keras=={keras.__version__}",
        ]  # fmt: skip
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=300
            )
        except subprocess.TimeoutExpired:
            return None, "pip download of the keras sdist took over 300 s"
        archives = list(Path(download).glob("keras-*.tar.gz"))
        if result.returncode or not archives:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            return None, (
                f"cannot download the keras {keras.__version__} source "
                f"distribution (registry unreachable?): {' | '.join(tail)}"
            )
        partial = Path(download) / "tests"
        with tarfile.open(archives[0]) as archive:
            for member in archive.getmembers():
                path = Path(*Path(member.name).parts[1:])  # drop keras-X.Y.Z/
                if member.isfile() and (
                    path.name.endswith("_test.py")
                    or str(path) == "pyproject.toml"
                ):
                    target = partial / path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(archive.extractfile(member).read())
        try:
            partial.rename(root)  # whole or not at all
        except OSError:  # another run extracted it first
            pass
    return root, ""
