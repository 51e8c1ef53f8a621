"""Writes the "keras.Model.fit says / customfit says" list of docs/errors.md.

For every bad call of `tests/test_checks.py::BAD_FIT_CALLS` it builds that
test's model, makes the call once with `keras.Model.fit` and once with
`ManualLoop(model).fit`, and records what each one raised (or that it
raised nothing, with what fit then did: `FIT_DOES`), and the optimizer's
step count after it. One short block per call, so nothing is wider than
the page. The list replaces what stands between the two `errors-table`
markers of docs/errors.md:

    python docs/_tools/errors_table.py

`tests/test_docs.py` checks the customfit column, with `rows(keras=False)`.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import html
import io
import os
import re
import sys
import warnings

REPO = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
PAGE = os.path.join(REPO, "docs", "errors.md")
TEST_MODULE = os.path.join(REPO, "tests", "test_checks.py")
START = "<!-- errors-table:start -->"
END = "<!-- errors-table:end -->"
KERAS_LIMIT = 300
CUSTOMFIT_LIMIT = 700
MAX_STEPS = 50
STILL_TRAINING = "still training"


def calls() -> dict[str, str]:
    """Each case's id and its call, as written in tests/test_checks.py."""
    with open(TEST_MODULE) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            getattr(target, "id", None) == "BAD_FIT_CALLS"
            for target in node.targets
        ):
            cases = {}
            for case in node.value.elts:
                name = case.elts[0].value
                arguments = case.elts[1].body.keywords
                cases[name] = "fit({})".format(
                    ", ".join(ast.unparse(argument) for argument in arguments)
                )
            return cases
    raise LookupError(f"no BAD_FIT_CALLS in {TEST_MODULE}")


def run(driver: str, make_kwargs) -> tuple[str | None, int]:
    """(what the call raised, or None; training steps run before)."""
    import keras
    from tests import test_checks

    from customfit import ManualLoop

    class Guard(keras.callbacks.Callback):
        """Ends a run that would not end by itself (an endless epoch)."""

        def on_train_batch_end(self, batch, logs=None):
            if _steps(self.model) >= MAX_STEPS:
                raise _StillTraining

    model = test_checks.build()
    kwargs = {"verbose": 0, **make_kwargs()}
    kwargs["callbacks"] = [*kwargs.get("callbacks", []), Guard()]
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            if driver == "keras":
                keras.Model.fit(model, **kwargs)
            else:
                ManualLoop(model).fit(**kwargs)
    except _StillTraining:
        return STILL_TRAINING, _steps(model)
    except Exception as error:  # noqa: BLE001 - we report whatever it is
        return f"{type(error).__name__}: {error}", _steps(model)
    return None, _steps(model)


class _StillTraining(Exception):
    """Raised by the guard callback of `run`."""


def _steps(model) -> int:
    return int(model.optimizer.iterations.numpy())


def cell(text: str | None, steps: int, limit: int, does: str = "") -> str:
    """One answer: the message, truncated, escaped, steps noted."""
    if text is None:
        return f"*(no error; optimizer.iterations: 0 → {steps})* {does}"
    if text == STILL_TRAINING:
        return (
            f"*(no error; still in its first epoch after {steps} steps, "
            f"stopped there by this script)* {does}"
        )
    text = re.sub(r"\x1b\[[0-9;]*m", "", text.strip())  # terminal colours
    text = re.sub(r" at 0x[0-9a-f]+", "", text)
    text = _without_traceback(text)
    if len(text) > limit:
        text = text[:limit].rstrip() + " [...]"
    text = html.escape(text, quote=False)
    text = text.replace("|", "&#124;").replace("`", "&#96;")
    lines = [line.strip() for line in text.splitlines()]
    text = "<br>".join(line for line in lines if line)
    text = re.sub(r"([^\s<>&;]{30})(?=[^\s<>&;])", r"\1<wbr>", text)
    if steps:
        text += f"<br>*(raised with optimizer.iterations at {steps})*"
    return text


def _without_traceback(text: str) -> str:
    """A TensorFlow graph error without the Python frames it lists."""
    lines = text.splitlines()
    frames = [
        i for i, line in enumerate(lines) if line.strip().startswith('File "')
    ]
    if not frames:
        return text
    kept = lines[: frames[0]]
    while kept and (not kept[-1].strip() or kept[-1].startswith("Detected at")):
        kept.pop()
    kept.append(f"[{len(frames)} frames of traceback]")
    kept.extend(lines[frames[-1] + 1 :])
    return "\n".join(kept)


def rows(keras: bool = True) -> list[tuple[str, str, str | None]]:
    """(call, what Keras says or None, what customfit says) per case."""
    sys.path.insert(0, REPO)
    from tests import test_checks

    written = calls()
    result = []
    for name, make_kwargs, _, _ in test_checks.BAD_FIT_CALLS:
        call = f"**{name}**: `{written[name]}`"
        keras_says = None
        if keras:
            does = test_checks.FIT_DOES.get(name, "")
            keras_says = cell(*run("keras", make_kwargs), KERAS_LIMIT, does)
        customfit_says = cell(*run("manual", make_kwargs), CUSTOMFIT_LIMIT)
        result.append((call, keras_says, customfit_says))
    return result


def table() -> str:
    """The whole list, in Markdown: a call, then what each driver says."""
    blocks = [
        f"{call}\n\n- keras.Model.fit: {keras_says}\n- customfit: {says}"
        for call, keras_says, says in rows()
    ]
    return "\n\n".join(blocks)


def replace_between(page: str, start: str, end: str, text: str) -> str:
    """`page` with what stands between markers `start` and `end` replaced."""
    before, rest = page.split(start, 1)
    _, after = rest.split(end, 1)
    return f"{before}{start}\n{text}\n{end}{after}"


def rewrite(start: str, end: str, text: str) -> int:
    """Writes `text` between two markers of docs/errors.md; returns 0."""
    with open(PAGE) as f:
        page = replace_between(f.read(), start, end, text)
    with open(PAGE, "w") as f:
        f.write(page)
    print(f"wrote {PAGE}")
    return 0


def table_rows_in(page: str) -> list[list[str]]:
    """[call, what Keras says, what customfit says] per call in `page`."""
    body = page.split(START, 1)[1].split(END, 1)[0]
    found = []
    for block in re.split(r"\n\n(?=\*\*)", body.strip()):
        call, rest = block.split("\n\n- keras.Model.fit: ", 1)
        keras_says, says = rest.split("\n- customfit: ", 1)
        found.append([call.strip(), keras_says.strip(), says.strip()])
    return found


def main() -> int:
    """Rewrites the table in docs/errors.md."""
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    return rewrite(START, END, table())


if __name__ == "__main__":
    sys.exit(main())
