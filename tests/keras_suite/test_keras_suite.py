"""Keras' own tests pass with Model.fit/evaluate/predict run by ManualLoop.

The tests of the installed Keras version come from the package registry at
test time (fetch.py; nothing of Keras is in this repo). A pytest subprocess
runs them over the extracted files with plugin.py, which routes every
`keras.Model`'s fit, evaluate and predict through `ManualLoop(model)`, and
writes each test's outcome. This test then asserts: no failure outside
expected.py, every entry there still fails or skips for its stated reason
(one that starts passing must leave the list), and at least MIN_ROUTED
tests really ran ManualLoop.
"""

import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import keras
import pytest

import customfit
from tests.keras_suite import expected
from tests.keras_suite import fetch

# Tests that ran ManualLoop at least once, with Keras 3.15.1 (measured:
# see the report printed by this test); fewer means the routing broke.
MIN_ROUTED = 135
REPO = Path(__file__).resolve().parents[2]


def _run_keras_tests(root: Path, summary: Path) -> dict:
    """Runs Keras' test files in two pytest processes side by side.

    trainer_test.py takes about as long as all the other files together, so
    it gets a process of its own (on 2 cores the suite then takes about two
    thirds of the time). Returns each test's outcome, from both.
    """
    files = sorted(
        str(path.relative_to(root))
        for pattern in fetch.TEST_FILES
        for path in root.glob(pattern)
    )
    trainer = [f for f in files if f == fetch.TEST_FILES[0]]
    shards = [trainer, [f for f in files if f not in trainer]]
    source = str(Path(customfit.__file__).resolve().parents[1])
    env = dict(
        os.environ,
        KERAS_BACKEND="tensorflow",
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONPATH=os.pathsep.join(
            [str(REPO), source, os.environ.get("PYTHONPATH", "")]
        ),
    )
    command = [
        sys.executable, "-m", "pytest",
        "-c", "pyproject.toml", "--rootdir", ".", "-o", "addopts=", "-q",
        "-p", "tests.keras_suite.plugin", "-p", "no:cacheprovider",
    ]  # fmt: skip
    processes = [
        subprocess.Popen(
            [*command, *shard, f"--keras-suite-json={summary}.{index}"],
            cwd=root,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for index, shard in enumerate(shards)
    ]
    output = "".join(p.communicate(timeout=3600)[0][-5000:] for p in processes)
    tests = {}
    for index in range(len(shards)):
        part = Path(f"{summary}.{index}")
        assert part.exists(), output
        tests.update(json.loads(part.read_text())["tests"])
    return tests


@pytest.mark.slow
def test_keras_own_tests_pass_through_manual_loop(tmp_path):
    root, why_not = fetch.keras_tests()
    if root is None:
        pytest.skip(why_not)
    start, cpu_before = time.monotonic(), _children_cpu()
    tests = _run_keras_tests(root, tmp_path / "summary.json")
    wall, cpu = time.monotonic() - start, _children_cpu() - cpu_before

    known = expected.EXPECTED
    unexpected = {
        test: entry["error"]
        for test, entry in tests.items()
        if entry["outcome"] == "failed" and test not in known
    }
    stale = {
        test: tests.get(test, {"outcome": "not collected", "error": ""})
        for test, (pattern, _) in known.items()
        if tests.get(test, {}).get("outcome") not in ("failed", "skipped")
        or not re.search(pattern, tests[test]["error"])
    }
    routed = sum(entry["routed"] for entry in tests.values())
    print(_summary(tests, routed, wall, cpu))
    assert not unexpected, "Keras tests failing through ManualLoop:\n" + (
        "\n".join(f"{test}\n    {error}" for test, error in unexpected.items())
    )
    assert not stale, (
        "tests/keras_suite/expected.py lists these, but they no longer fail "
        "or skip for the stated reason: update the list\n"
        + "\n".join(f"{test}: {entry}" for test, entry in stale.items())
    )
    assert routed >= MIN_ROUTED, f"only {routed} tests ran ManualLoop"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.mark.slow  # pip starts in 3-8 s here
def test_without_the_registry_the_suite_skips_with_a_reason(
    tmp_path, monkeypatch
):
    # A registry nobody listens on: pip fails fast, and keras_tests() says
    # why instead of raising (the suite then skips with that reason).
    monkeypatch.setenv("CUSTOMFIT_CACHE", str(tmp_path))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no other index
    root, why_not = fetch.keras_tests()
    assert root is None
    assert why_not.startswith("cannot download the keras ")
    assert not fetch.cache_dir().exists()


def _summary(tests: dict, routed: int, wall: float, cpu: float) -> str:
    """The numbers of a run, for the log and the docs."""
    counts = {
        outcome: sum(e["outcome"] == outcome for e in tests.values())
        for outcome in ("passed", "failed", "skipped")
    }
    seconds = {}
    for test, entry in tests.items():
        file = test.split("::")[0]
        seconds[file] = seconds.get(file, 0.0) + entry.get("seconds", 0.0)
    slowest = sorted(seconds.items(), key=lambda item: -item[1])[:5]
    return (
        f"\nKeras {keras.__version__} tests: {len(tests)} run, {counts}, "
        f"{routed} through ManualLoop; {wall:.0f} s wall, {cpu:.0f} s CPU; "
        "slowest files: "
        + ", ".join(f"{file} {s:.0f} s" for file, s in slowest)
    )
