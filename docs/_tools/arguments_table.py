"""Writes the argument contract of docs/errors.md from `customfit.checks`.

One table per method (`ManualLoop(...)`, `fit`, `evaluate`, `predict`,
`compile`'s options of customfit), one row per argument of
`customfit.checks.ARGUMENTS`: what it accepts and what it cannot be given
with. The tables replace what stands between the two `arguments` markers:

    python docs/_tools/arguments_table.py

`tests/test_checks.py` checks that the page matches the code.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import errors_table  # noqa: E402  (the page and its markers' helpers)

START = "<!-- arguments:start -->"
END = "<!-- arguments:end -->"
TITLES = {
    "ManualLoop": "`ManualLoop(model, *, run_eagerly, backup)`",
    "fit": "`ManualLoop.fit`",
    "evaluate": "`ManualLoop.evaluate`",
    "predict": "`ManualLoop.predict`",
    "compile": "`CustomModel.compile` (customfit's own options)",
}


def tables() -> str:
    """The contract as Markdown: a heading and a table per method."""
    sys.path.insert(0, os.path.join(errors_table.REPO, "src"))
    from customfit import checks

    parts = []
    for method, title in TITLES.items():
        lines = [
            f"#### {title}",
            "",
            "| argument | accepts | not with |",
            "| --- | --- | --- |",
        ]
        for argument in checks.ARGUMENTS:
            if method not in argument.methods:
                continue
            excluded = "; ".join(
                getattr(other, "text", f"`{other}`")
                for other, _ in argument.excludes
            )
            accepts = checks.describe(argument).replace("|", "\\|")
            lines.append(f"| `{argument.name}` | {accepts} | {excluded} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def main() -> int:
    """Rewrites the contract in docs/errors.md."""
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    return errors_table.rewrite(START, END, tables())


if __name__ == "__main__":
    sys.exit(main())
