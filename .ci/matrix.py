"""Tests customfit on every supported TensorFlow x Keras pair, one venv each.

For each pair: a virtual environment with customfit installed (editable,
the `datasets` extra and the dev extra's test tools) under a constraints
file holding the pair, reused while that file and the declared requirements
are unchanged; the core suite; the MNIST example for one epoch. Prints a
markdown table, and with `--write-docs` puts it in docs/installation.md.

    python .ci/matrix.py                       # every pair
    python .ci/matrix.py tf2.18-keras3.8       # one pair
    python .ci/matrix.py --oldest --no-example # what CI runs after the suite

pip's cache (~/.cache/pip) makes a rebuilt environment quick.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Each Keras minor release from the floor up, with the TensorFlow of its
# time, plus the oldest TensorFlow. Oldest first: pyproject.toml declares
# exactly these ranges (tests/test_keras_compat.py checks that).
PAIRS = {
    "tf2.16-keras3.8": ("2.16.2", "3.8.0"),
    "tf2.16-keras3.10": ("2.16.2", "3.10.0"),
    "tf2.18-keras3.8": ("2.18.1", "3.8.0"),
    "tf2.18-keras3.9": ("2.18.1", "3.9.2"),
    "tf2.19-keras3.10": ("2.19.1", "3.10.0"),
    "tf2.19-keras3.11": ("2.19.1", "3.11.3"),
    "tf2.20-keras3.12": ("2.20.0", "3.12.1"),
    "tf2.20-keras3.13": ("2.20.0", "3.13.2"),
    "tf2.21-keras3.14": ("2.21.0", "3.14.1"),
    "tf2.21-keras3.15": ("2.21.0", "3.15.1"),
    # The other Pythons TensorFlow publishes wheels for, at both ends.
    "tf2.16-keras3.8-py3.10": ("2.16.2", "3.8.0", "3.10"),
    "tf2.21-keras3.15-py3.13": ("2.21.0", "3.15.1", "3.13"),
}
# On Python 3.10, pip's resolver backtracks for tens of minutes: etils,
# hypothesis and Markdown have newer releases without 3.10 wheels. Their
# last 3.10 releases and the versions the 3.11 venv resolves to, pinned.
PINS = {
    "tf2.16-keras3.8-py3.10": (
        "etils==1.13.0",
        "hypothesis==6.168.5",
        "markdown==3.10.3",
        "array-record==0.8.1",
        "tensorflow-datasets==4.9.10",
        "tensorflow-metadata==1.17.3",
        "numpy==1.26.4",
        "protobuf==4.25.9",
    ),
}
# The pair CI runs the core suite on: the oldest declared Keras with the
# oldest declared TensorFlow.
OLDEST = "tf2.16-keras3.8"
# What the core suite needs besides the `datasets` extra (the dev extra's
# docs and tuner packages are not needed by it).
TEST_TOOLS = (
    "pytest",
    "hypothesis",
    "pytest-timeout",
    "pytest-xdist",
    "tensorboard",
)

CORE_SUITE = [
    "tests/equivalence",
    "tests/test_model.py",
    "tests/test_loop.py",
    "tests/test_keras_compat.py",
    "tests/test_callbacks.py",
]
EXAMPLE = ["examples/mnist_custom_loop.py", "--driver", "manual", "--epochs=1"]
DOCS = "docs/installation.md"
DOCS_PAGE = REPO / DOCS
BEGIN, END = "<!-- matrix:begin -->", "<!-- matrix:end -->"


def log(message: str) -> None:
    print(f"[matrix {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    log(" ".join(str(part) for part in command))
    return subprocess.run(command, cwd=REPO, text=True, **kwargs)


def streamed(command: list[str], env: dict) -> tuple[int, str]:
    """Runs `command`, printing its output as it comes; returns both."""
    log(" ".join(command))
    with subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as process:
        lines = []
        for line in process.stdout:
            print(line, end="", flush=True)
            lines.append(line)
    return process.returncode, "".join(lines)


def environment(root: Path, name: str, fresh: bool) -> Path:
    """The pair's venv, reused while its constraints and checkout are same."""
    tensorflow, keras, *python = PAIRS[name]
    venv = root / name
    pins = [f"tensorflow=={tensorflow}", f"keras=={keras}", *PINS.get(name, ())]
    constraints = "".join(f"{pin}\n" for pin in pins)
    # The editable install points at this checkout and holds its requirements.
    import tomllib  # here: the tests import PAIRS on Python 3.10 too

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [project["dependencies"], project["optional-dependencies"]]
    key = f"{constraints}{REPO}\n{requirements}\n"
    installed = venv / "installed"
    if not fresh and installed.exists() and installed.read_text() == key:
        log(f"{name}: reusing {venv}")
        return venv
    interpreter = find_python(python[0]) if python else sys.executable
    run([interpreter, "-m", "venv", "--clear", str(venv)], check=True)
    (venv / "constraints.txt").write_text(constraints)
    tools = [
        requirement
        for requirement in project["optional-dependencies"]["dev"]
        if re.split(r"[<>=!~\[ ]", requirement)[0] in TEST_TOOLS
    ]
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    # No byte-compiling TensorFlow's files at install: quicker on 2 cores.
    pip += ["--no-compile", "-c", str(venv / "constraints.txt")]
    run([*pip, "-e", ".[datasets]", *tools], check=True)
    installed.write_text(key)
    return venv


def find_python(version: str) -> str:
    """`pythonX.Y` on PATH, else pyenv's (a pyenv shim may refuse it)."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found = sorted(pyenv.glob(f"versions/{version}.*/bin/python{version}"))
    if found:
        return str(found[-1])
    on_path = shutil.which(f"python{version}")
    if on_path is None:
        sys.exit(f"matrix: no python{version} here (PATH, {pyenv})")
    return on_path


def versions(python: Path) -> dict[str, str]:
    code = (
        "import platform, tensorflow, keras, google.protobuf as p;"
        "print(platform.python_version(), tensorflow.__version__,"
        " keras.__version__, p.__version__)"
    )
    out = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    return dict(
        zip(("python", "tensorflow", "keras", "protobuf"), out, strict=True)
    )


def commit() -> str:
    """The checkout's commit, "+" when it has uncommitted changes (other
    than the table this script writes)."""
    head = run(["git", "rev-parse", "--short", "HEAD"], capture_output=True)
    dirty = run(
        ["git", "status", "--porcelain", "-uno", "--", ".", f":!{DOCS}"],
        capture_output=True,
    )
    return head.stdout.strip() + ("+" if dirty.stdout.strip() else "")


def summary(output: str) -> str:
    """pytest's closing counts, e.g. "83 passed, 2 skipped in 310.2s"."""
    counts = r"\d+ (?:passed|failed|skipped|errors?)\b.* in [\d.]+s"
    lines = re.findall(rf"^=* ?({counts})", output, re.MULTILINE)
    if not lines:
        return "no summary (crashed?)"
    return re.sub(r", \d+ warnings?", "", lines[-1])


def test_pair(root: Path, name: str, args: argparse.Namespace) -> dict:
    started = time.monotonic()
    venv = environment(root, name, args.fresh)
    python = venv / "bin" / "python"
    row = {"pair": name, "commit": commit(), **versions(python)}
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    # The example reads MNIST from $TFDS_DATA_DIR (CI's copy lies beside
    # the checkout); with neither, tfds downloads it.
    shared = REPO.parent / "shared" / "data" / "tfds"
    if "TFDS_DATA_DIR" not in env and shared.is_dir():
        env["TFDS_DATA_DIR"] = str(shared)
    # Two processes: the core suite takes half the time on 2 cores.
    pytest = [str(python), "-m", "pytest", "-q", "-n", "2"]
    pytest += ["-p", "no:cacheprovider"]
    returncode, output = streamed(
        [*pytest, *CORE_SUITE, *args.pytest_args], env
    )
    row["core"] = summary(output)
    row["core_ok"] = returncode == 0
    row["example"], row["example_ok"] = "not run", True
    if not args.no_example:
        returncode, output = streamed([str(python), *EXAMPLE], env)
        accuracy = re.findall(r"test accuracy \(manual\): ([\d.]+)", output)
        row["example_ok"] = returncode == 0 and bool(accuracy)
        row["example"] = (
            f"test accuracy {accuracy[-1]}" if row["example_ok"] else "FAILED"
        )
    row["minutes"] = f"{(time.monotonic() - started) / 60:.1f}"
    return row


def table_row(row: dict, date: str) -> str:
    mark = "pass" if row["core_ok"] else "FAIL"
    return (
        f"| `{row['pair']}` | {row['tensorflow']} | {row['keras']} "
        f"| {row['python']} "
        f"| {row['protobuf']} | {mark}: {row['core']} | {row['example']} "
        f"| `{row['commit']}` | {date} |"
    )


HEADER = (
    "| pair | TensorFlow | Keras | Python | protobuf | core suite | "
    "MNIST example, 1 epoch | commit | date |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def not_run(name: str) -> str:
    tensorflow, keras, *python = PAIRS[name]
    python = python[0] if python else "3.11"
    return (
        f"| `{name}` | {tensorflow} | {keras} | {python} "
        "| | not run yet | | | |"
    )


def write_docs(rows: dict[str, str]) -> None:
    """Replaces the pairs' rows in the table of docs/installation.md."""
    text = DOCS_PAGE.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    old = {
        line.split("`")[1]: line
        for line in text[start:end].splitlines()
        if line.startswith("| `")
    }
    old.update(rows)
    ordered = [old.get(name, not_run(name)) for name in PAIRS]
    table = "\n".join([HEADER, *ordered])
    DOCS_PAGE.write_text(f"{text[:start]}\n{table}\n{text[end:]}")
    log(f"wrote {len(rows)} of {len(ordered)} rows in {DOCS_PAGE.name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "pairs", nargs="*", metavar="PAIR", help=", ".join(PAIRS)
    )
    parser.add_argument("--oldest", action="store_true", help=OLDEST)
    parser.add_argument("--no-example", action="store_true")
    parser.add_argument(
        "--fresh", action="store_true", help="rebuild even a reusable venv"
    )
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(os.environ.get("MATRIX_ROOT", "/tmp/matrix")),
        help="where the venvs live (default /tmp/matrix, or $MATRIX_ROOT)",
    )
    parser.add_argument(
        "--pytest-args",
        nargs=argparse.REMAINDER,
        default=[],
        help="passed on to pytest (put last)",
    )
    args = parser.parse_args(argv)
    unknown = set(args.pairs) - set(PAIRS)
    if unknown:
        parser.error(f"unknown pairs {sorted(unknown)}; known: {list(PAIRS)}")
    names = args.pairs or ([OLDEST] if args.oldest else list(PAIRS))
    date = datetime.date.today().isoformat()
    results, failed = {}, []
    for name in names:
        row = test_pair(args.root, name, args)
        results[name] = table_row(row, date)
        log(f"{name}: {results[name]} ({row['minutes']} min)")
        if args.write_docs:
            write_docs({name: results[name]})
        if not (row["core_ok"] and row["example_ok"]):
            failed.append(name)
    print("\n".join([HEADER, *results.values()]))
    if failed:
        log(f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
