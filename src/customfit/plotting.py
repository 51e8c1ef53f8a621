"""Training curves: a History's loss and metrics per epoch, drawn to a PNG.

matplotlib is imported only when a plot is drawn; install it with the extra:
`pip install "customfit[plotting]"`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from customfit.errors import InputTypeError
from customfit.errors import InputValueError
from customfit.errors import MissingDependencyError


def plot_history(
    history: Any,
    path: str | os.PathLike | None = None,
    *,
    metrics: Sequence[str] | None = None,
    validation_freq: int | Sequence[int] = 1,
    title: str | None = None,
) -> Any:
    """Plots training and validation curves per epoch; saves them if asked.

    One panel per metric: the training values as a solid line and the
    `val_` values of the same metric, when present, as a dashed line.

    Args:
        history: The `keras.callbacks.History` that `fit` returns, or its
            `.history` dict (metric name to one value per epoch).
        path: Where to write the figure (a PNG for a `.png` name; the
            extension picks the format). None: do not save.
        metrics: The metrics to draw, one panel each, such as `["loss",
            "accuracy"]` (no `val_` prefix). None draws them all.
        validation_freq: The `validation_freq` the run was trained with,
            to draw validation values at the epochs they were measured.
        title: A title above the panels.

    Returns:
        The `matplotlib.figure.Figure`, for further changes or display.

    Raises:
        MissingDependencyError: If matplotlib is not installed (an
            `ImportError`).
        InputTypeError: If `history` is neither a History nor a dict.
        InputValueError: If the History is empty, a metric is not in it, or
            the validation values do not fit `validation_freq`.

    Example:

    ```python
    from customfit.plotting import plot_history

    history = ManualLoop(model).fit(x, y, epochs=3, validation_split=0.25)
    figure = plot_history(history, "curves.png")
    ```
    """
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError as error:
        raise MissingDependencyError(
            "customfit.plotting needs matplotlib, which is not installed.",
            expected="the `matplotlib` package",
            received=f"ImportError: {error}",
            fix='install the extra: pip install "customfit[plotting]"',
        ) from error
    values, epochs = _series(history)
    names = _metric_names(values, metrics)
    figure = Figure(figsize=(4.8 * len(names), 3.6), layout="tight")
    axes = figure.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names, strict=True):
        ax.plot(epochs, values[name], "o-", label="train")
        if f"val_{name}" in values:
            validated = _validated_epochs(
                epochs, validation_freq, values[f"val_{name}"], name
            )
            ax.plot(validated, values[f"val_{name}"], "s--", label="validation")
            ax.legend()
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    if path is not None:
        figure.savefig(os.fspath(path), dpi=110)
    return figure


def _series(history: Any) -> tuple[Mapping[str, list], list[int]]:
    """The History's values by name, and the (1-based) epoch of each."""
    values = getattr(history, "history", history)
    if not isinstance(values, Mapping):
        raise InputTypeError(
            "plot_history: `history` must be a History or its dict.",
            expected="the keras.callbacks.History that fit returns, or "
            "history.history",
            received=f"history=<{type(history).__name__}>",
            fix="pass what fit returned: plot_history(model.fit(...))",
        )
    train = [name for name in values if not name.startswith("val_")]
    length = len(values[train[0]]) if train else 0
    if not length:
        raise InputValueError(
            "plot_history: the History holds no epoch to plot.",
            expected="a History of at least one trained epoch",
            received=f"metrics {sorted(values)} with no values",
            fix="plot after fit has trained at least one epoch",
        )
    epochs = [int(epoch) + 1 for epoch in getattr(history, "epoch", [])]
    if len(epochs) != length:  # a dict, or a History edited by hand
        epochs = list(range(1, length + 1))
    return values, epochs


def _metric_names(values: Mapping, metrics: Sequence[str] | None) -> list[str]:
    available = [name for name in values if not name.startswith("val_")]
    if metrics is None:  # the loss first, then the History's order
        return sorted(available, key=lambda name: name != "loss")
    names = [str(name).removeprefix("val_") for name in metrics]
    unknown = [name for name in names if name not in available]
    if unknown or not names:
        raise InputValueError(
            f"plot_history: `metrics` names {unknown or 'nothing'}, "
            "which the History does not hold.",
            expected=f"names among {available}",
            received=f"metrics={list(metrics)}",
            fix="pick names from history.history (without the val_ "
            "prefix), or leave `metrics` out to plot them all",
        )
    return names


def _validated_epochs(
    epochs: list[int],
    validation_freq: int | Sequence[int],
    validation_values: list,
    name: str,
) -> list[int]:
    """The epochs at which fit validated, as `validation_freq` decides."""
    if isinstance(validation_freq, int):
        validated = [e for e in epochs if e % validation_freq == 0]
    else:
        validated = [e for e in epochs if e in validation_freq]
    if len(validated) != len(validation_values):
        raise InputValueError(
            f"plot_history: `val_{name}` has {len(validation_values)} "
            f"values, but validation_freq={validation_freq!r} over "
            f"epochs {epochs[0]}..{epochs[-1]} gives {len(validated)}.",
            expected="the validation_freq the run was trained with",
            received=f"validation_freq={validation_freq!r}",
            fix="pass the run's validation_freq to plot_history",
        )
    return validated
