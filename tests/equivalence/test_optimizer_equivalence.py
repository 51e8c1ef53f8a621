"""Every built-in optimizer, in every mode: the same bits from every driver.

For each optimizer class in `keras.optimizers` (found by looking, so a new
one is not skipped) and each mode (compiled, XLA, eager), four runs from the
same start must end bitwise equal, weights, optimizer variables and History:
`keras.Model.fit` (the reference), `CustomModel.fit`,
`ManualLoop(CustomModel).fit` and `ManualLoop(keras.Model).fit`. The
optimizer options (schedules, clipping, EMA, weight decay, gradient
accumulation, loss scaling under mixed_float16) get the same treatment,
compiled and eager (XLA compiles for about a minute per case on a 2-core
CPU; the classes cover it).
"""

import contextlib
import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

from customfit import ManualLoop
from tests.equivalence.test_fit_equivalence import SEED
from tests.equivalence.test_fit_equivalence import X
from tests.equivalence.test_fit_equivalence import Y
from tests.equivalence.test_fit_equivalence import assert_same_weights
from tests.equivalence.test_fit_equivalence import functional
from tests.equivalence.test_fit_equivalence import plain_functional

optimizers = keras.optimizers
schedules = optimizers.schedules

MODES = {
    "compiled": {"jit_compile": False},
    "jit": {"jit_compile": True},
    "eager": {"run_eagerly": True},
}

# Optimizers that wrap others cannot be built from defaults.
# By name: older Keras releases (3.8-3.14) lack some of these classes.
WRAPPERS = {
    "LossScaleOptimizer": lambda: optimizers.LossScaleOptimizer(
        optimizers.Adam(1e-2), initial_scale=2.0**10
    ),
    "MultiOptimizer": lambda: optimizers.MultiOptimizer(
        optimizers.OptimizerMap(
            optimizers.Adam(1e-2), {".*kernel": optimizers.SGD(0.1)}
        )
    ),
}


def optimizer_classes():
    """Every optimizer `keras.optimizers` exports, bar the abstract base."""
    found = {
        value
        for value in vars(optimizers).values()
        if inspect.isclass(value)
        and issubclass(value, optimizers.Optimizer)
        and value is not optimizers.Optimizer
    }
    return sorted(found, key=lambda cls: cls.__name__)


# Keras' own inconsistency: ScheduleFreeAdamW.build sets its momentum to the
# weights' values. A compiled fit builds the optimizer while tracing the
# first step, where that assignment is traced but never run (the momentum
# stays 0); an eager fit, a fit under a tf.distribute strategy, and
# ManualLoop build it before the first step, and it runs. Compiled, the
# reference fit is therefore given a built optimizer, as ManualLoop builds
# it; test_schedule_free_adamw_compiled_fit_skips_its_build_assignment pins
# the difference, so a Keras fix shows here.
BUILT_BEFORE_FIT = {"ScheduleFreeAdamW"}


def make(cls):
    if cls.__name__ in WRAPPERS:
        return WRAPPERS[cls.__name__]()
    return cls(learning_rate=1e-2)


OPTIONS = {
    "exponential-decay": lambda: optimizers.Adam(
        schedules.ExponentialDecay(1e-2, decay_steps=2, decay_rate=0.5)
    ),
    "cosine-decay-warmup": lambda: optimizers.SGD(
        schedules.CosineDecay(0.0, 6, warmup_target=0.1, warmup_steps=2),
        momentum=0.9,
        nesterov=True,
    ),
    "piecewise-constant": lambda: optimizers.RMSprop(
        schedules.PiecewiseConstantDecay([2, 4], [1e-2, 5e-3, 1e-3])
    ),
    "clipnorm": lambda: optimizers.RMSprop(1e-2, clipnorm=0.1),
    "clipvalue": lambda: optimizers.Adagrad(0.1, clipvalue=0.01),
    "global-clipnorm": lambda: optimizers.SGD(0.5, global_clipnorm=0.2),
    "ema": lambda: optimizers.AdamW(
        1e-2, use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=2
    ),
    "weight-decay": lambda: optimizers.SGD(0.1, weight_decay=1e-2),
    "gradient-accumulation": lambda: optimizers.Adam(
        1e-2, gradient_accumulation_steps=2
    ),
    "mixed-float16-adam": lambda: optimizers.Adam(1e-2),
    "mixed-float16-lion": lambda: optimizers.Lion(1e-3),
}

# (plain keras.Model or CustomModel, driver); the first is the reference.
RUNS = [
    ("plain", "keras"),
    ("custom", "keras"),
    ("custom", "manual"),
    ("plain", "manual"),
]


def train(
    make_optimizer, mode, model_kind, driver, policy=None, prebuild=False
):
    keras.utils.set_random_seed(SEED)
    build = functional if model_kind == "custom" else plain_functional
    if policy:
        keras.mixed_precision.set_dtype_policy(policy)
    try:
        model = build(optimizer=make_optimizer(), **MODES[mode])
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert model.jit_compile is (mode == "jit")
    if prebuild and driver == "keras":
        model.optimizer.build(model.trainable_variables)
    keras.utils.set_random_seed(SEED + 1)
    fit = model.fit if driver == "keras" else ManualLoop(model).fit
    # 40 samples in batches of 16: a ragged last batch, 3 steps an epoch.
    history = fit(
        X[:40], Y[:40], batch_size=16, epochs=2, shuffle=False, verbose=0
    )
    return model, history.history


def run_or_error(*args):
    """`train(*args)`, or the exception it raised."""
    try:
        return train(*args)
    except Exception as error:  # compared across drivers by the caller
        return error


@contextlib.contextmanager
def op_determinism_off_for_xla(mode):
    """Keras turns XLA off while op determinism is on (model_supports_jit).

    XLA compiles one program for all four runs, and runs it the same way on
    the CPU, so the comparison stays exact without the flag.
    """
    if mode != "jit":
        yield
        return
    tf_config.disable_op_determinism()
    try:
        yield
    finally:
        tf.config.experimental.enable_op_determinism()


def assert_all_drivers_agree(make_optimizer, mode, policy=None):
    prebuild = (
        type(make_optimizer()).__name__ in BUILT_BEFORE_FIT and mode != "eager"
    )
    with op_determinism_off_for_xla(mode):
        runs = [
            run_or_error(make_optimizer, mode, kind, driver, policy, prebuild)
            for kind, driver in RUNS
        ]
    if isinstance(runs[0], Exception):
        # Keras' own fit fails (Muon on Keras 3.10 with TensorFlow 2.16
        # reads `variable.path`, which TensorFlow's variables lack there):
        # every driver must fail the same way.
        assert [(type(r), str(r)) for r in runs] == [
            (type(runs[0]), str(runs[0]))
        ] * len(runs), runs
        return
    (reference, reference_history), *others = runs
    reference_state = [v.numpy() for v in reference.optimizer.variables]
    for (kind, driver), (model, history) in zip(RUNS[1:], others, strict=True):
        assert history == reference_history, (kind, driver)
        assert_same_weights(model, reference)
        state = [v.numpy() for v in model.optimizer.variables]
        assert len(state) == len(reference_state)
        for ours, theirs in zip(state, reference_state, strict=True):
            np.testing.assert_array_equal(ours, theirs)
    # The run moved the weights: the comparisons above are not vacuous.
    keras.utils.set_random_seed(SEED)
    initial = plain_functional().get_weights()
    trained = reference.get_weights()
    assert any(
        not np.array_equal(a, b) for a, b in zip(trained, initial, strict=True)
    )


def test_every_optimizer_class_is_covered():
    classes = optimizer_classes()
    # Keras 3.15 exports 16 (3.8: 13); fewer means a bug, not a new Keras.
    newest = tuple(int(n) for n in keras.version().split(".")[:2]) >= (3, 15)
    assert len(classes) >= (16 if newest else 13)
    for cls in classes:
        assert isinstance(make(cls), cls)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cls", optimizer_classes(), ids=lambda c: c.__name__)
def test_optimizer_is_bitwise_equal_under_every_driver(cls, mode):
    assert_all_drivers_agree(lambda: make(cls), mode)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["compiled", "eager"])  # XLA: see above
@pytest.mark.parametrize("option", OPTIONS)
def test_optimizer_option_is_bitwise_equal_under_every_driver(option, mode):
    policy = "mixed_float16" if option.startswith("mixed-float16") else None
    assert_all_drivers_agree(OPTIONS[option], mode, policy)


@pytest.mark.slow
@pytest.mark.skipif(
    not hasattr(optimizers, "ScheduleFreeAdamW"),
    reason="ScheduleFreeAdamW is newer than this Keras",
)
def test_schedule_free_adamw_compiled_fit_skips_its_build_assignment():
    def run(mode, prebuild=False):
        model, _ = train(
            lambda: optimizers.ScheduleFreeAdamW(1e-2),
            mode,
            "plain",
            "keras",
            prebuild=prebuild,
        )
        return model.get_weights()

    eager, built = run("eager"), run("compiled", prebuild=True)
    # Compiled and eager math differ in the last bits: close, not equal.
    for a, b in zip(eager, built, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # Keras 3.15: built inside the first trace, the momentum starts at 0,
    # and the weights end far from the eager run's.
    compiled = run("compiled")
    gaps = [np.abs(a - b).max() for a, b in zip(compiled, eager, strict=True)]
    assert max(gaps) > 1e-2
