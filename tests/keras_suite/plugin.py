"""pytest plugin: Keras' own tests, with fit/evaluate/predict run by ManualLoop.

Loaded only by test_keras_suite.py's subprocess (`-p tests.keras_suite.plugin`)
over the extracted Keras tests. Every `keras.Model` (Sequential, functional,
subclassed) then trains, evaluates and predicts through
`ManualLoop(model).fit/evaluate/predict` with the same arguments. The
`Trainer` mixins of trainer_test.py are not `keras.Model`s and keep Keras'
methods. With `--keras-suite-json=PATH` it writes, per test, its outcome, its
error or skip reason, its duration, and whether ManualLoop ran at least
once in it.
"""

import importlib.util
import json
import sys
import types

import keras
import pytest

from customfit import ManualLoop

_results = {}  # test id -> {"outcome", "error", "routed", "seconds"}
_running = {"test": None, "routed": set()}


def _through_manual_loop(method):
    def routed(self, *args, **kwargs):
        if _running["test"] is not None:
            _running["routed"].add(_running["test"])
        return getattr(ManualLoop(self), method)(*args, **kwargs)

    routed.__name__ = method
    return routed


class _Absent(types.ModuleType):
    """A package that is not installed, for a test file's unused import.

    trainer_test.py imports jax at its top but uses it only in a few tests;
    with this in its place the file loads, and each test that really uses
    jax fails with "No module named 'jax'" (listed in expected.py).
    """

    def __getattr__(self, name):
        raise ModuleNotFoundError(f"No module named '{self.__name__}'")


def skip_if_backend(given_backend, reason):
    """Keras' conftest.py helper, which some test files import from it."""
    return pytest.mark.skipif(
        keras.backend.backend() == given_backend, reason=reason
    )


def pytest_addoption(parser):
    parser.addoption("--keras-suite-json", default=None)


def pytest_configure(config):
    # Keras' conftest.py is not in its sdist; this plugin stands in for it
    # (its markers: a trainable-backend test runs on TensorFlow, a
    # multi-device one is skipped on one device).
    sys.modules.setdefault("conftest", sys.modules[__name__])
    if importlib.util.find_spec("jax") is None:
        sys.modules["jax"] = _Absent("jax")
    config.addinivalue_line("markers", "requires_trainable_backend: trainer")
    config.addinivalue_line("markers", "multi_device: needs several devices")
    for method in ("fit", "evaluate", "predict"):
        setattr(keras.Model, method, _through_manual_loop(method))


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="Requires multiple devices")
    for item in items:
        if "multi_device" in item.keywords:
            item.add_marker(skip)


def pytest_collectreport(report):
    if report.failed:  # a test file that cannot be imported
        _results[report.nodeid] = {
            "outcome": "failed",
            "error": f"collection: {report.longreprtext[-2000:]}",
            "routed": False,
        }


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _running["test"] = item.nodeid
    try:
        return (yield)
    finally:
        _running["test"] = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    entry = _results.setdefault(item.nodeid, {"outcome": "passed"})
    entry["seconds"] = entry.get("seconds", 0.0) + report.duration
    if report.failed:
        entry["outcome"] = "failed"
        error = call.excinfo.exconly() if call.excinfo else report.longreprtext
        entry["error"] = f"{report.when}: {error}"[:2000]
    elif report.skipped and entry["outcome"] == "passed":
        entry["outcome"] = "skipped"
        entry["error"] = str(report.longrepr[-1])
    if report.when == "teardown":
        entry["routed"] = item.nodeid in _running["routed"]
    return report


def pytest_sessionfinish(session):
    path = session.config.getoption("--keras-suite-json")
    if path:
        with open(path, "w") as file:
            summary = {"keras": keras.__version__, "tests": _results}
            json.dump(summary, file, indent=1, sort_keys=True)
