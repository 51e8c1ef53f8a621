"""keras-tuner integration: search hyperparameters with either driver.

keras-tuner trains a trial in one place only, `HyperModel.fit(hp, model,
*args, **kwargs)`; `customfit.tuner.HyperModel` overrides just that, so that
a trial runs through `ManualLoop(model).fit(...)` (the `"manual"` driver) or
`model.fit(...)` (the `"fit"` driver) with the very arguments keras-tuner
passes: the tuner's callbacks, `epochs` and `initial_epoch` (Hyperband),
validation data and the rest. The `History` goes back to keras-tuner, which
reads the objective from it as it reads `model.fit`'s. Everything else --
oracles, trial bookkeeping, failed trials, resuming, the chief/worker search
over gRPC -- is keras-tuner's own.

This is the only customfit module that imports `keras_tuner`; install it
with the extra: `pip install "customfit[tuner]"`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

import keras

from customfit.backup import Backup
from customfit.errors import InputTypeError
from customfit.errors import InputValueError
from customfit.errors import MissingDependencyError
from customfit.errors import message
from customfit.loop import ManualLoop

try:
    import keras_tuner
except ImportError as error:
    raise MissingDependencyError(
        message(
            "customfit.tuner needs keras-tuner, which is not installed.",
            expected="the `keras_tuner` package (keras-tuner>=1.4) and grpcio",
            received=f"ImportError: {error}",
            fix='install the extra: pip install "customfit[tuner]"',
        )
    ) from error

DRIVERS = ("manual", "fit", "eager")
"""What can run a trial: `ManualLoop` (compiled or eager) or `model.fit`."""

# Arguments a loop hyperparameter may not set: the tuner owns them.
_TUNER_ARGUMENTS = ("callbacks",)
_HYPERBAND_ARGUMENTS = ("epochs", "initial_epoch")


class HyperModel(keras_tuner.HyperModel):
    """A keras-tuner `HyperModel` whose trials train through a chosen driver.

    Subclass it and override `build(hp)`, as with `keras_tuner.HyperModel`:
    return a compiled model (a `customfit.CustomModel` or any Keras 3
    model). Every trial then trains through `driver`, with the arguments
    the tuner passes to `fit`: those of `tuner.search(...)` plus the
    tuner's callbacks and, under Hyperband, `epochs` and `initial_epoch`.
    Pick the driver per search, without touching `build`:
    `MyHyperModel(driver="fit")` or `MyHyperModel(driver="manual")`.

    Hyperparameters of the loop rather than the model (the batch size,
    `steps_per_execution`, the number of epochs of a RandomSearch) go in
    `fit_options(hp)`, which returns extra `fit` arguments chosen with `hp`.

    Args:
        driver: What trains each trial: `"manual"` (default,
            `ManualLoop(model).fit`), `"eager"` (the same loop with the
            step uncompiled, to debug a trial) or `"fit"`
            (`model.fit`). With the same seeds and op determinism, `"manual"`
            and `"fit"` give the same trial scores.
        seed: If given, `keras.utils.set_random_seed(seed)` runs before every
            `build(hp)`, so every trial starts from the same random state
            and the same search repeats exactly.
        backup: A `customfit.Backup` whose directory holds one folder of
            backups per trial (named after its hyperparameter values). A
            trial stopped by a signal, or killed, resumes mid-trial from its
            backup when the search restarts (keras-tuner itself restarts
            it from its first epoch). The `"manual"` and `"eager"` drivers
            only.
        name: Optional name of this HyperModel.
        tunable: Whether the hyperparameters defined in `build` join the
            search space (keras-tuner's `tunable`).

    Raises:
        InputValueError: If `driver` is not one of `DRIVERS`.

    Example:

    ```python
    import keras
    import keras_tuner
    import numpy as np

    import customfit
    import customfit.tuner


    class Classifier(customfit.tuner.HyperModel):
        def build(self, hp):
            inputs = keras.Input((4,))
            hidden = keras.layers.Dense(hp.Choice("units", [4, 8]))(inputs)
            model = customfit.CustomModel(
                inputs, keras.layers.Dense(2)(hidden)
            )
            model.compile(
                optimizer="adam",
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True
                ),
                metrics=["accuracy"],
            )
            return model

        def fit_options(self, hp):
            return {"batch_size": hp.Choice("batch_size", [8, 16])}


    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    tuner = keras_tuner.RandomSearch(
        Classifier(driver="manual", seed=0),
        objective="val_accuracy",
        max_trials=2,
        seed=1,  # keras-tuner reads seed=0 as "no seed"
        directory="tuning",
        overwrite=True,
    )
    tuner.search(x, y, epochs=1, validation_split=0.25, verbose=0)
    ```
    """

    def __init__(
        self,
        driver: str = "manual",
        *,
        seed: int | None = None,
        backup: Backup | None = None,
        name: str | None = None,
        tunable: bool = True,
    ):
        _check_driver(driver, backup)
        super().__init__(name=name, tunable=tunable)
        self.driver = driver
        self.seed = seed
        self.backup = backup
        # keras-tuner replaced `self.build` by its wrapper of the subclass's
        # build; seed in front of it, so that every caller is seeded.
        self._unseeded_build = self.build
        self.build = self._seeded_build

    def fit_options(self, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        """Returns extra `fit` arguments for this trial, chosen with `hp`.

        Override it to tune the loop rather than the model. The returned
        arguments replace those of `tuner.search(...)` of the same name.
        `steps_per_execution` is accepted too: it is set on the model before
        training (Keras takes it in `compile`, not in `fit`).

        Args:
            hp: The trial's hyperparameters.

        Returns:
            A dict of `fit` keyword arguments; `{}` by default.

        Example:

        ```python
        import customfit.tuner


        class Tuned(customfit.tuner.HyperModel):
            def fit_options(self, hp):
                return {
                    "batch_size": hp.Choice("batch_size", [32, 64]),
                    "steps_per_execution": hp.Choice(
                        "steps_per_execution", [1, 4]
                    ),
                }
        ```
        """
        del hp
        return {}

    def fit(
        self,
        hp: keras_tuner.HyperParameters,
        model: keras.Model,
        *args: Any,
        **kwargs: Any,
    ) -> keras.callbacks.History:
        """Trains one trial's model through `self.driver`.

        keras-tuner calls this with the arguments of `tuner.search(...)`
        (`kwargs` always holds the tuner's `callbacks`). Those of
        `fit_options(hp)` are added, then the model trains through
        `ManualLoop(model).fit(*args, **kwargs)` or `model.fit(*args,
        **kwargs)`.

        To add a loop hyperparameter here rather than in `fit_options`,
        override and call up:
        `return super().fit(hp, model, *args, batch_size=hp.Choice(
        "batch_size", [32, 64]), **kwargs)`.

        Args:
            hp: The trial's hyperparameters.
            model: The model `build(hp)` returned (compiled).
            *args: Positional arguments of `tuner.search`, e.g. `x`, `y`.
            **kwargs: Keyword arguments of `tuner.search`, plus `callbacks`.

        Returns:
            The `keras.callbacks.History` of the trial; keras-tuner reads the
            objective from it, epoch by epoch.

        Raises:
            InputValueError: If `fit_options` returns `callbacks`, or `epochs`
                or `initial_epoch` under Hyperband (the tuner sets those).
        """
        options = dict(self.fit_options(hp) or {})
        _check_fit_options(options, hp, type(self).__name__)
        steps_per_execution = options.pop("steps_per_execution", None)
        if steps_per_execution is not None:
            model.steps_per_execution = steps_per_execution
        kwargs.update(options)
        backup = _trial_backup(self.backup, hp)
        return _run_driver(self.driver, model, *args, backup=backup, **kwargs)

    def _seeded_build(self, hp, *args, **kwargs):
        if self.seed is not None:
            keras.utils.set_random_seed(self.seed)
        return self._unseeded_build(hp, *args, **kwargs)


class _BuildFunction(HyperModel):
    """A HyperModel around a `build(hp)` callable (see `wrap`)."""

    def __init__(
        self, build_fn, fit_options_fn, declare_hyperparameters=None, **kwargs
    ):
        self._build_fn = build_fn
        self._fit_options_fn = fit_options_fn
        self._declare_hyperparameters = declare_hyperparameters
        super().__init__(**kwargs)

    def build(self, hp):
        return self._build_fn(hp)

    def declare_hyperparameters(self, hp):
        if self._declare_hyperparameters is not None:
            self._declare_hyperparameters(hp)

    def fit_options(self, hp):
        return {} if self._fit_options_fn is None else self._fit_options_fn(hp)


def wrap(
    build: Callable[[keras_tuner.HyperParameters], keras.Model]
    | keras_tuner.HyperModel,
    *,
    driver: str = "manual",
    seed: int | None = None,
    fit_options: Callable[[keras_tuner.HyperParameters], dict[str, Any]]
    | None = None,
    backup: Backup | None = None,
) -> HyperModel:
    """Turns a `build(hp)` function into a HyperModel trained by `driver`.

    Use it when the search space is a plain function, or a
    `keras_tuner.HyperModel` that only overrides `build`, and you want its
    trials to run through `ManualLoop`.

    Args:
        build: A function `build(hp) -> compiled keras.Model`, or a
            `keras_tuner.HyperModel` that does not override `fit`.
        driver: One of `DRIVERS`; see `HyperModel`.
        seed: If given, the random seed set before every build.
        fit_options: Optional function `fit_options(hp) -> dict` of extra
            `fit` arguments (loop hyperparameters); see
            `HyperModel.fit_options`.
        backup: Optional `customfit.Backup` for every trial; see
            `HyperModel`.

    Returns:
        A `customfit.tuner.HyperModel`.

    Raises:
        InputTypeError: If `build` is neither callable nor a HyperModel whose
            training can be taken over.
        InputValueError: If `driver` is not one of `DRIVERS`.

    Example:

    ```python
    import keras
    import keras_tuner

    import customfit.tuner


    def build_model(hp):
        model = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(hp.Int("units", 1, 4))]
        )
        model.compile(optimizer="sgd", loss="mse")
        return model


    hypermodel = customfit.tuner.wrap(build_model, driver="manual")
    ```
    """
    _check_driver(driver, backup)
    if isinstance(build, keras_tuner.HyperModel):
        _check_wrappable(build, driver)
        return _BuildFunction(
            build.build,
            fit_options,
            declare_hyperparameters=build.declare_hyperparameters,
            driver=driver,
            seed=seed,
            backup=backup,
            name=build.name,
            tunable=build.tunable,
        )
    if isinstance(build, keras.Model) or not callable(build):
        raise InputTypeError(
            message(
                "wrap(build): `build` must be a function build(hp) or a "
                "keras_tuner.HyperModel.",
                expected="a callable that takes `hp` and returns a compiled "
                "keras.Model",
                received=f"build={build!r} (type: {type(build).__name__})",
                fix="pass the function itself: wrap(build_model), not "
                "wrap(build_model(hp))",
            )
        )
    return _BuildFunction(
        build, fit_options, driver=driver, seed=seed, backup=backup
    )


def _trial_backup(backup: Backup | None, hp) -> Backup | None:
    """The trial's `Backup`: a folder named after its hyperparameters.

    A restarted search retries an interrupted trial with the same values
    (keras-tuner's oracle never repeats values), so it finds its backup.
    """
    if backup is None:
        return None
    values = json.dumps(hp.values, sort_keys=True, default=str)
    name = "trial-" + hashlib.sha256(values.encode()).hexdigest()[:16]
    directory = os.path.join(backup.directory, name)
    return dataclasses.replace(backup, directory=directory)


def _run_driver(driver, model, *args, backup=None, **kwargs):
    _check_driver(driver, backup)  # `driver` may have been reassigned.
    if driver == "fit":
        return model.fit(*args, **kwargs)
    eagerly = True if driver == "eager" else None
    loop = ManualLoop(model, run_eagerly=eagerly, backup=backup)
    return loop.fit(*args, **kwargs)


def _check_driver(driver: Any, backup: Backup | None = None) -> None:
    if driver == "fit" and backup is not None:
        raise InputValueError(
            message(
                "`backup` needs a ManualLoop driver: model.fit takes none.",
                expected='driver="manual" or "eager" with a backup',
                received=f'driver="fit", backup={backup!r}',
                fix='pass driver="manual", or drop `backup`',
            )
        )
    if driver in DRIVERS:
        return
    raise InputValueError(
        message(
            "`driver` names what trains each trial.",
            expected=" or ".join(f'"{name}"' for name in DRIVERS),
            received=f"driver={driver!r}",
            fix='pass driver="manual" to train with ManualLoop, or '
            'driver="fit" to train with keras.Model.fit',
        )
    )


def _check_fit_options(options: dict, hp: Any, owner: str) -> None:
    hyperband = "tuner/epochs" in hp.values
    owned = _TUNER_ARGUMENTS + (_HYPERBAND_ARGUMENTS if hyperband else ())
    clashes = sorted(name for name in options if name in owned)
    if not clashes:
        return
    fixes = []
    if "callbacks" in clashes:
        fixes.append("pass callbacks to tuner.search(callbacks=[...])")
    if set(clashes) & set(_HYPERBAND_ARGUMENTS):
        fixes.append(
            "leave the epochs to Hyperband: set Hyperband(max_epochs=...)"
        )
    setter = "the tuner" if clashes == ["callbacks"] else "Hyperband"
    raise InputValueError(
        message(
            f"{owner}.fit_options(hp) returned {', '.join(clashes)}, which "
            f"{setter} sets for every trial.",
            expected="loop arguments such as batch_size, "
            "steps_per_execution, shuffle, validation_freq"
            + ("" if hyperband else ", epochs"),
            received=f"fit_options keys: {sorted(options)}",
            fix="; ".join(fixes),
        )
    )


def _check_wrappable(hypermodel: keras_tuner.HyperModel, driver: str) -> None:
    if isinstance(hypermodel, HyperModel):
        what = "is already a customfit.tuner.HyperModel"
        fix = f'set its driver instead: hypermodel.driver = "{driver}"'
    elif type(hypermodel).fit is not keras_tuner.HyperModel.fit:
        what = "overrides fit(), which would be lost"
        fix = (
            "subclass customfit.tuner.HyperModel instead of "
            "keras_tuner.HyperModel and call super().fit(hp, model, *args, "
            "**kwargs) from your fit"
        )
    else:
        return
    raise InputTypeError(
        message(
            f"wrap(build): the HyperModel {what}.",
            expected="a build(hp) function, or a keras_tuner.HyperModel that "
            "overrides only build",
            received=f"build=<{type(hypermodel).__name__}>",
            fix=fix,
        )
    )
