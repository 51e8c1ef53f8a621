"""The documentation: built strictly, every code block run, in step with code.

- `mkdocs build --strict` succeeds: no broken link, no page left out of the
  navigation, no docstring the API reference cannot render, no public name
  without a docstring (the build's hook `docs/_tools/docstring_check.py`).
- Every Python code block of `docs/*.md` and `README.md` runs, through
  pytest-markdown-docs, in a pytest process of its own (see
  `tests/markdown_docs_plugin.py`); a block is skipped only when its fence
  says `notest` with a `reason="..."`.
- The pages quote the code as it is: `ManualLoop.fit` on "The manual loop",
  every error message and the customfit column of the errors table on
  "Errors".
"""

import ast
import os
import re
import subprocess
import sys
import textwrap

import pytest
from markdown_it import MarkdownIt

from tests.conftest import load_script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(REPO, "docs")
PAGES = sorted(
    os.path.join(DOCS, name)
    for name in os.listdir(DOCS)
    if name.endswith(".md")
)
MARKDOWN = [os.path.join(REPO, "README.md"), *PAGES]
PYTHON = ("python", "py", "python3")


def _read(path):
    with open(path, encoding="utf8") as f:
        return f.read()


def _fences(path):
    """(line, language, options, code) of each fenced block, as the tools
    see them: CommonMark's parse, with superfences' `{.lang opt}` info."""
    found = []
    for token in MarkdownIt("commonmark").parse(_read(path)):
        if token.type != "fence":
            continue
        info = token.info.strip()
        if info.startswith("{"):
            parts = info.strip("{}").split()
            language = next((p[1:] for p in parts if p.startswith(".")), "")
            options = [p for p in parts if not p.startswith(".")]
        else:
            parts = info.split()
            language, options = (parts[0], parts[1:]) if parts else ("", [])
        found.append((token.map[0] + 1, language, options, token.content))
    return found


def _python_fences(path):
    return [fence for fence in _fences(path) if fence[1] in PYTHON]


def _runs(fence):
    return "notest" not in fence[2]


def _relative(path):
    return os.path.relpath(path, REPO)


# --- Every code block runs ----------------------------------------------------


@pytest.mark.slow
def test_every_python_block_of_the_docs_and_readme_runs():
    expected = sum(
        1 for path in MARKDOWN for fence in _python_fences(path) if _runs(fence)
    )
    assert expected > 30, "suspiciously few code blocks found"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.markdown_docs_plugin",
            "--markdown-docs",
            "--markdown-docs-syntax=superfences",
            "-p",
            "no:cacheprovider",
            "-q",
            "--durations=5",
            *[_relative(path) for path in MARKDOWN],
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-8000:]
    passed = re.search(r"(\d+) passed", output)
    assert passed, output[-3000:]
    assert int(passed.group(1)) == expected, (
        f"{passed.group(1)} blocks ran, {expected} expected:\n{output[-3000:]}"
    )


def test_a_block_is_skipped_only_with_a_stated_reason():
    unexplained = [
        f"{_relative(path)}:{line}"
        for path in MARKDOWN
        for line, _, options, _ in _python_fences(path)
        if "notest" in options
        and not any(re.fullmatch(r'reason="\S.*', o) for o in options)
    ]
    assert not unexplained, (
        f'mark a skipped block {{.python notest reason="why"}}: {unexplained}'
    )


def test_no_python_block_hides_from_the_tests():
    # A fence indented into an admonition, or written `python notest` (which
    # MkDocs does not render), would escape the run silently.
    for path in MARKDOWN:
        text = _read(path)
        written = re.findall(
            r"^ *```+ *(?:\{[^}\n]*\.(?:python3?|py)\b|(?:python3?|py)\b)",
            text,
            flags=re.MULTILINE,
        )
        assert len(written) == len(_python_fences(path)), _relative(path)
        for line, language, options, _ in _python_fences(path):
            if options and not _read(path).splitlines()[line - 1].strip()[
                3:
            ].startswith("{"):
                pytest.fail(
                    f"{_relative(path)}:{line}: write options as "
                    f"```{{.{language} {' '.join(options)}}}, which MkDocs "
                    "renders"
                )


def test_readme_and_home_page_show_the_same_example():
    readme = _python_fences(os.path.join(REPO, "README.md"))
    home = _python_fences(os.path.join(DOCS, "index.md"))
    assert readme[0][3] == home[0][3]


# --- The site builds ----------------------------------------------------------


@pytest.mark.slow
def test_site_builds_with_strict(tmp_path):
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict"]
        + ["--config-file", os.path.join(REPO, "mkdocs.yml")]
        + ["--site-dir", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
    )
    assert done.returncode == 0, done.stderr[-6000:]
    assert "WARNING" not in done.stderr, done.stderr[-6000:]
    pages = {os.path.splitext(os.path.basename(path))[0] for path in PAGES} - {
        "index"
    }
    for page in pages:
        html = (site / page / "index.html").read_text("utf8")
        # A fence MkDocs did not understand shows up as text.
        assert "<p>```" not in html, f"{page}.md: a code fence is not rendered"
        assert "notest" not in html, f"{page}.md: a fence's options leak"
    api = (site / "api" / "index.html").read_text("utf8")
    for name in ("customfit.ManualLoop.fit", "customfit.CustomModel"):
        assert f'id="{name}"' in api


def _load_tool(name):
    return load_script(os.path.join(DOCS, "_tools", f"{name}.py"))


def test_the_docstring_check_finds_a_public_name_without_docstring(tmp_path):
    package = tmp_path / "customfit"
    package.mkdir()
    (package / "__init__.py").write_text('"""A package."""\n')
    (package / "thing.py").write_text(
        '"""A module."""\n\n\n'
        "def documented(a: int, b: int):\n"
        '    """Does it.\n\n    Args:\n        a: One.\n    """\n\n\n'
        "def bare():\n    pass\n\n\n"
        "def _private():\n    pass\n"
    )
    problems = _load_tool("docstring_check").find_problems(str(tmp_path))
    assert problems == [
        "customfit.thing.documented: the Args section leaves out b",
        "customfit.thing.bare: public, but has no docstring",
    ]


def test_every_public_name_of_customfit_has_a_docstring():
    problems = _load_tool("docstring_check").find_problems(
        os.path.join(REPO, "src")
    )
    assert not problems, "\n".join(problems)


def test_the_api_reference_covers_every_public_module():
    api = _read(os.path.join(DOCS, "api.md"))
    rendered = set(re.findall(r"^::: customfit\.(\w+)", api, re.MULTILINE))
    modules = {
        name[:-3]
        for name in os.listdir(os.path.join(REPO, "src", "customfit"))
        if name.endswith(".py") and not name.startswith("_")
    }
    # loop.py and model.py hold one public class each, rendered by name.
    missing = modules - rendered - {"loop", "model"}
    assert not missing, f"add ::: customfit.<module> to docs/api.md: {missing}"
    assert {"ManualLoop", "CustomModel"} <= rendered


# --- The pages quote the code as it is ---------------------------------------


def _function_source(path, class_name, function_name):
    source = _read(path)
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            for item in node.body:
                if (
                    isinstance(item, ast.FunctionDef)
                    and item.name == function_name
                ):
                    lines = source.splitlines()[
                        item.lineno - 1 : item.end_lineno
                    ]
                    return textwrap.dedent("\n".join(lines))
    raise LookupError(f"{class_name}.{function_name} not in {path}")


def test_the_manual_loop_page_quotes_fit_as_it_is():
    loop_py = os.path.join(REPO, "src", "customfit", "loop.py")
    page = os.path.join(DOCS, "manual-loop.md")
    quoted_fit, quoted_epoch = [
        fence[3] for fence in _python_fences(page) if not _runs(fence)
    ][:2]
    fit = _function_source(loop_py, "ManualLoop", "fit")
    start = "    model = self.model\n"
    assert start in fit and start in quoted_fit
    assert quoted_fit[quoted_fit.index(start) :].rstrip() == (
        fit[fit.index(start) :].rstrip()
    ), "docs/manual-loop.md quotes an old ManualLoop.fit: copy it again"
    train_epoch = _function_source(loop_py, "ManualLoop", "train_epoch")
    assert textwrap.indent(quoted_epoch.rstrip(), "    ") in train_epoch, (
        "docs/manual-loop.md quotes an old train_epoch loop: copy it again"
    )


def _literal_parts(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        return [
            part.value
            for part in node.values
            if isinstance(part, ast.Constant) and isinstance(part.value, str)
        ]
    return []


def test_every_error_message_is_explained_on_the_errors_page():
    page = _read(os.path.join(DOCS, "errors.md"))
    page = re.sub(r"\s+", " ", page)
    missing = []
    source_dir = os.path.join(REPO, "src", "customfit")
    for name in sorted(os.listdir(source_dir)):
        if not name.endswith(".py"):
            continue
        tree = ast.parse(_read(os.path.join(source_dir, name)))
        for node in ast.walk(tree):
            # message(what, ..., fix=...) or SomeError(what, ..., fix=...)
            if not (
                isinstance(node, ast.Call)
                and any(keyword.arg == "fix" for keyword in node.keywords)
                and node.args
            ):
                continue
            fragment = max(_literal_parts(node.args[0]), key=len, default="")
            if len(fragment.strip()) >= 8 and fragment.strip() not in page:
                missing.append(
                    f"src/customfit/{name}:{node.lineno}: {fragment}"
                )
    assert not missing, (
        "docs/errors.md does not explain these messages (add each with what "
        "it means and the fix):\n" + "\n".join(missing)
    )


@pytest.mark.slow
def test_the_errors_table_shows_what_customfit_says_today():
    tool = _load_tool("errors_table")
    page = _read(os.path.join(DOCS, "errors.md"))
    documented = [(row[0], row[2]) for row in tool.table_rows_in(page)]
    today = [(call, says) for call, _, says in tool.rows(keras=False)]
    assert documented == today, (
        "docs/errors.md's table is out of date: run "
        "python docs/_tools/errors_table.py"
    )
