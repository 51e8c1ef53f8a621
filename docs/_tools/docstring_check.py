"""MkDocs hook: every public name of customfit has a Google-style docstring.

The API reference renders what mkdocstrings finds; this hook makes the build
also check what it would not complain about on its own. Before the pages are
built it loads the package with griffe (statically, as mkdocstrings does) and
logs a warning -- an error under `mkdocs build --strict` -- for:

- a public module, class, function, method or property without a docstring;
- an `Args:` section that leaves out some of the parameters (a parameter it
  names that is not in the signature griffe reports itself);
- a docstring whose Google-style sections griffe cannot parse.

Public means: in a module whose name does not start with `_`, a name that
does not start with `_`, defined in customfit (not imported into it).
"""

from __future__ import annotations

import logging
import os

import griffe

log = logging.getLogger("mkdocs.hooks.docstring_check")

PACKAGE = "customfit"


def on_pre_build(config, **kwargs) -> None:
    """Checks the docstrings before MkDocs builds the pages."""
    root = os.path.dirname(config["config_file_path"])
    for problem in find_problems(os.path.join(root, "src")):
        log.warning(problem)


def find_problems(search_path: str) -> list[str]:
    """Every docstring problem of the package under `search_path`."""
    problems: list[str] = []
    griffe_logger = logging.getLogger("griffe")
    handler = _Collector(problems)
    griffe_logger.addHandler(handler)
    try:
        package = griffe.load(
            PACKAGE, search_paths=[search_path], docstring_parser="google"
        )
        _check(package, problems)
    finally:
        griffe_logger.removeHandler(handler)
    return problems


class _Collector(logging.Handler):
    """Turns griffe's docstring warnings into problems."""

    def __init__(self, problems: list[str]):
        super().__init__(logging.WARNING)
        self._problems = problems

    def emit(self, record: logging.LogRecord) -> None:
        self._problems.append(f"griffe: {record.getMessage()}")


def _check(obj, problems: list[str]) -> None:
    if obj.is_alias:
        return
    if obj.is_module or obj.is_class or obj.is_function:
        _check_docstring(obj, problems)
    if obj.is_module or obj.is_class:
        for name, member in obj.members.items():
            if name.startswith("_") or member.is_alias:
                continue
            _check(member, problems)


def _check_docstring(obj, problems: list[str]) -> None:
    where = obj.path
    if obj.docstring is None or not obj.docstring.value.strip():
        problems.append(f"{where}: public, but has no docstring")
        return
    sections = obj.docstring.parse("google")
    if not obj.is_function:
        return
    documented = [
        parameter.name.lstrip("*")
        for section in sections
        if section.kind.value == "parameters"
        for parameter in section.value
    ]
    if not documented:
        return
    expected = [
        parameter.name
        for parameter in obj.parameters
        if parameter.name not in ("self", "cls")
    ]
    missing = [name for name in expected if name not in documented]
    if missing:
        problems.append(
            f"{where}: the Args section leaves out {', '.join(missing)}"
        )
