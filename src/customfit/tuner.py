"""keras-tuner integration: search hyperparameters with either driver.

keras-tuner trains a trial only in `HyperModel.fit(hp, model, *args,
**kwargs)`; `customfit.tuner.HyperModel` overrides just that. Oracles,
trials, resuming and the distributed search stay keras-tuner's own.
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
from customfit.loop import ManualLoop

try:
    import keras_tuner
except ImportError as error:
    raise MissingDependencyError(
        "customfit.tuner needs keras-tuner, which is not installed.",
        expected="the `keras_tuner` package (keras-tuner>=1.4) and grpcio",
        received=f"ImportError: {error}",
        fix='install the extra: pip install "customfit[tuner]"',
    ) from error

DRIVERS = ("manual", "fit", "eager")
"""What can run a trial: `ManualLoop` (compiled or eager) or `model.fit`."""


class HyperModel(keras_tuner.HyperModel):
    """A keras-tuner `HyperModel` whose trials train through a chosen driver.

    Subclass it and override `build(hp)` to return a compiled model, as with
    `keras_tuner.HyperModel`; every trial then trains through `driver` with
    the arguments the tuner passes to `fit`. Hyperparameters of the loop
    rather than the model (batch size, ...) go in `fit_options(hp)`.

    Args:
        driver: What trains each trial: `"manual"` (default,
            `ManualLoop(model).fit`), `"eager"` (the same loop with the
            step uncompiled, to debug a trial) or `"fit"` (`model.fit`).
            With the same seeds and op determinism, `"manual"` and `"fit"`
            give the same trial scores.
        seed: If given, `keras.utils.set_random_seed(seed)` runs before every
            `build(hp)`, so that the same search repeats exactly.
        backup: A `customfit.Backup` whose directory holds one folder of
            backups per trial (named after its hyperparameter values): a
            trial stopped by a signal, or killed, resumes mid-trial when the
            search restarts. The `"manual"` and `"eager"` drivers only.
        name: Optional name of this HyperModel.
        tunable: Whether the hyperparameters defined in `build` join the
            search space (keras-tuner's `tunable`).

    Raises:
        InputValueError: If `driver` is not one of `DRIVERS`, or `backup`
            is given with the `"fit"` driver.

    Example:

    ```python
    class Regressor(customfit.tuner.HyperModel):
        def build(self, hp):
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
            learning_rate = hp.Choice("learning_rate", [0.01, 0.1])
            model.compile(keras.optimizers.SGD(learning_rate), loss="mse")
            return model

        def fit_options(self, hp):
            return {"batch_size": hp.Choice("batch_size", [8, 16])}


    tuner = keras_tuner.RandomSearch(
        Regressor(driver="manual", seed=0), "val_loss", max_trials=2
    )
    tuner.search(x, y, epochs=1, validation_split=0.25)
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
        # keras-tuner's __init__ replaced `self.build` by its wrapper of the
        # subclass's build: seed in front of that, for every caller.
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

        Args:
            hp: The trial's hyperparameters.
            model: The model `build(hp)` returned (compiled).
            *args: Positional arguments of `tuner.search`, e.g. `x`, `y`.
            **kwargs: Keyword arguments of `tuner.search`, plus the tuner's
                `callbacks`; those of `fit_options(hp)` replace them.

        Returns:
            The trial's `keras.callbacks.History`, from which keras-tuner
            reads the objective epoch by epoch.

        Raises:
            InputValueError: If `fit_options` returns `callbacks`, or `epochs`
                or `initial_epoch` under Hyperband (the tuner sets those).
        """
        options = dict(self.fit_options(hp) or {})
        _check_fit_options(options, hp, type(self).__name__)
        _check_driver(self.driver, self.backup)  # it may have been reassigned
        steps_per_execution = options.pop("steps_per_execution", None)
        if steps_per_execution is not None:
            model.steps_per_execution = steps_per_execution
        kwargs.update(options)
        if self.driver == "fit":
            return model.fit(*args, **kwargs)
        loop = ManualLoop(
            model,
            run_eagerly=True if self.driver == "eager" else None,
            backup=_trial_backup(self.backup, hp),
        )
        return loop.fit(*args, **kwargs)

    def _seeded_build(self, hp, *args, **kwargs):
        if self.seed is not None:
            keras.utils.set_random_seed(self.seed)
        return self._unseeded_build(hp, *args, **kwargs)


class _Wrapped(HyperModel):
    """A HyperModel around a `build(hp)` function (see `wrap`)."""

    def __init__(self, build, fit_options, **kwargs):
        self.build = build  # keras-tuner's __init__ wraps it, as any build
        if fit_options is not None:
            self.fit_options = fit_options
        super().__init__(**kwargs)


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

    Args:
        build: A function `build(hp) -> compiled keras.Model`, or a
            `keras_tuner.HyperModel` that does not override `fit`.
        driver: One of `DRIVERS`; see `HyperModel`.
        seed: If given, the random seed set before every build.
        fit_options: Optional function `fit_options(hp) -> dict` of extra
            `fit` arguments; see `HyperModel.fit_options`.
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
    # build_model(hp) returns a compiled keras.Model, as for keras-tuner.
    hypermodel = customfit.tuner.wrap(build_model, driver="manual")
    ```
    """
    _check_wrap(build, driver)
    options = {"driver": driver, "seed": seed, "backup": backup}
    if isinstance(build, keras_tuner.HyperModel):
        options.update(name=build.name, tunable=build.tunable)
        hypermodel = _Wrapped(build.build, fit_options, **options)
        hypermodel.declare_hyperparameters = build.declare_hyperparameters
        return hypermodel
    return _Wrapped(build, fit_options, **options)


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


def _check_driver(driver: Any, backup: Backup | None) -> None:
    if driver == "fit" and backup is not None:
        raise InputValueError(
            "`backup` needs a ManualLoop driver: model.fit takes none.",
            expected='driver="manual" or "eager" with a backup',
            received=f'driver="fit", backup={backup!r}',
            fix='pass driver="manual", or drop `backup`',
        )
    if driver not in DRIVERS:
        raise InputValueError(
            "`driver` names what trains each trial.",
            expected=" or ".join(f'"{name}"' for name in DRIVERS),
            received=f"driver={driver!r}",
            fix='pass driver="manual" to train with ManualLoop, or '
            'driver="fit" to train with keras.Model.fit',
        )


def _check_fit_options(options: dict, hp: Any, owner: str) -> None:
    fixes = {"callbacks": "pass callbacks to tuner.search(callbacks=[...])"}
    hyperband = "tuner/epochs" in hp.values  # Hyperband sets the epochs
    if hyperband:
        fix = "leave the epochs to Hyperband: set Hyperband(max_epochs=...)"
        fixes.update(epochs=fix, initial_epoch=fix)
    clashes = [name for name in fixes if name in options]
    if not clashes:
        return
    setter = "the tuner" if clashes == ["callbacks"] else "Hyperband"
    raise InputValueError(
        f"{owner}.fit_options(hp) returned {', '.join(clashes)}, which "
        f"{setter} sets for every trial.",
        expected="loop arguments such as batch_size, "
        "steps_per_execution, shuffle, validation_freq"
        + ("" if hyperband else ", epochs"),
        received=f"fit_options keys: {sorted(options)}",
        fix="; ".join(dict.fromkeys(fixes[name] for name in clashes)),
    )


def _check_wrap(build: Any, driver: str) -> None:
    if isinstance(build, HyperModel):
        what = "the HyperModel is already a customfit.tuner.HyperModel"
        fix = f'set its driver instead: hypermodel.driver = "{driver}"'
    elif isinstance(build, keras_tuner.HyperModel):
        if type(build).fit is keras_tuner.HyperModel.fit:
            return
        what = "the HyperModel overrides fit(), which would be lost"
        fix = (
            "subclass customfit.tuner.HyperModel instead of "
            "keras_tuner.HyperModel and call super().fit(hp, model, *args, "
            "**kwargs) from your fit"
        )
    elif isinstance(build, keras.Model) or not callable(build):
        what = (
            "`build` must be a function build(hp) or a keras_tuner.HyperModel"
        )
        fix = (
            "pass the function itself: wrap(build_model), not "
            "wrap(build_model(hp))"
        )
    else:
        return
    raise InputTypeError(
        f"wrap(build): {what}.",
        expected="a build(hp) function returning a compiled keras.Model, "
        "or a keras_tuner.HyperModel that overrides only build",
        received=f"build={build!r} (type: {type(build).__name__})",
        fix=fix,
    )
