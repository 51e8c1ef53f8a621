"""Throughput, memory and tracing benchmarks of customfit's drivers.

Run `python -m benchmarks.run` (or `python benchmarks/run.py`) from the
repository root; `--help` lists the options. Who owns what:

- `workload.py`: the tutorial's model, loss, optimizer, metric and data;
- `loops.py`: the training loops compared, each timed one epoch at a time;
- `checks.py`: trace counts over ragged batches, and memory over 20 epochs;
- `run.py`: the command: interleaved rounds, medians, ratios, the tables.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads

try:
    import customfit  # noqa: F401
except ImportError:  # a checkout without `pip install -e .`: use src/
    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, os.path.join(_root, "src"))
