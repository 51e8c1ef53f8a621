"""One command: every driver's throughput side by side, memory and traces.

    python -m benchmarks.run            # the full run (6-8 minutes, 2 cores)
    python -m benchmarks.run --quick    # a smoke run (under a minute)
    python benchmarks/run.py --samples 25600 --repeats 8 --out /tmp/bench

It trains the tutorial's model (`benchmarks/workload.py`) with each loop of
`benchmarks/loops.py`: the bare compiled step, `model.fit`, `ManualLoop` at
each `--steps-per-execution`, the tutorial's eager loop,
`ManualLoop(run_eagerly=True)` and `model.fit(run_eagerly=True)`; then each
of `--families` (MobileNetV3Small, Embedding + LSTM, a Transformer block)
with `model.fit` and `ManualLoop` at steps_per_execution 1 and 32.
Each loop gets a fresh model (same seed) and its first batch timed
(first-step latency: building, tracing, one step).
Then come rounds, up to `--repeats` of them and as many as fit in
`--time-budget`: in each, every loop trains one timed epoch, one after the
other (A B C ..., the order reversed every other round), so that loops
compared with each other run seconds apart, under the same load. A ratio is
the median over the rounds of the two loops' samples/s in that round. Then
the trace counts (ragged last batch) and the resident memory over 20 epochs
(in a fresh process).

It prints a summary and the tables in Markdown and writes them, with every
raw number, to `--out` (default `benchmarks/results/`): `results.md` and
`results.json`. docs/performance.md includes the `results.md` of
`docs/_results/` (`--out docs/_results`).
The exit status is 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

if __package__ in (None, ""):  # run as a script: python benchmarks/run.py
    sys.path.insert(
        0, os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    )
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import checks  # noqa: E402
from benchmarks import loops  # noqa: E402
from benchmarks import workload  # noqa: E402

DEFAULT_OUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "results"
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Throughput, memory and traces of customfit's drivers.",
    )
    parser.add_argument("--samples", type=int, default=12_800)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--repeats",
        type=int,
        default=16,
        help="timed rounds at most (default 16; see --time-budget)",
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=600.0,
        help="seconds the timed rounds may take: no new pair of rounds "
        "starts past it (default 600; 0: no limit)",
    )
    parser.add_argument(
        "--eager-samples",
        type=int,
        default=None,
        help="samples per timed epoch of the eager loops (default: "
        "--samples / 8; samples/s do not depend on it)",
    )
    parser.add_argument(
        "--steps-per-execution",
        default="1,32",
        help="comma-separated values for fit and ManualLoop (default 1,32)",
    )
    parser.add_argument(
        "--families",
        default=",".join(family.name for family in workload.FAMILIES),
        help="comma-separated model families besides the tutorial's "
        "(default: all; '' for none)",
    )
    parser.add_argument(
        "--jit-compile",
        action="store_true",
        help="compile the step with XLA (default: fit's 'auto', no XLA on CPU)",
    )
    parser.add_argument(
        "--no-prefetch",
        dest="prefetch",
        action="store_false",
        help="leave .prefetch(AUTOTUNE) off the input pipeline",
    )
    parser.add_argument(
        "--memory-epochs", type=int, default=20, help="epochs of the RSS run"
    )
    parser.add_argument(
        "--memory-samples",
        type=int,
        default=None,
        help="samples per epoch of the RSS run (default: --samples / 4)",
    )
    parser.add_argument(
        "--skip-checks",
        action="store_true",
        help="measure throughput only (no traces, no memory run)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 1,280 samples, 2 rounds",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=DEFAULT_OUT, help="output folder")
    parser.add_argument(
        "--render",
        metavar="RESULTS_JSON",
        help="measure nothing: rewrite the tables from a saved results.json",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.repeats = 1280, 2
    args.eager_samples = args.eager_samples or max(
        args.batch_size, args.samples // 8
    )
    args.families = [name for name in args.families.split(",") if name]
    args.memory_samples = args.memory_samples or max(
        args.batch_size, args.samples // 4
    )
    args.steps_per_execution = [
        int(value) for value in args.steps_per_execution.split(",")
    ]
    if 1 not in args.steps_per_execution:
        args.steps_per_execution.insert(0, 1)
    return args


def make_loops(args: argparse.Namespace) -> list[loops.Loop]:
    """The loops in the order a round runs them (pairs side by side)."""
    options = {
        "jit_compile": True if args.jit_compile else "auto",
        "seed": args.seed,
    }
    data = workload.make_dataset(
        args.samples, args.batch_size, prefetch=args.prefetch, seed=args.seed
    )
    eager_data = workload.make_dataset(
        args.eager_samples,
        args.batch_size,
        prefetch=args.prefetch,
        seed=args.seed,
    )
    order = [
        loops.KerasFit(data, **options),
        loops.ManualLoopFit(data, **options),
        loops.BareStep(data, **options),
    ]
    for spe in sorted(args.steps_per_execution, reverse=True):
        if spe != 1:
            order.append(
                loops.ManualLoopFit(data, steps_per_execution=spe, **options)
            )
            order.append(
                loops.KerasFit(data, steps_per_execution=spe, **options)
            )
    order.append(loops.TutorialEager(eager_data, **options))
    order.append(loops.ManualLoopFit(eager_data, run_eagerly=True, **options))
    order.append(loops.KerasFit(eager_data, run_eagerly=True, **options))
    for loop in order:
        loop.samples = args.eager_samples if loop.eager else args.samples
    for family in workload.FAMILIES:
        if family.name not in args.families:
            continue
        samples = max(args.batch_size, int(args.samples * family.fraction))
        family_data = workload.make_family_dataset(
            family, samples, args.batch_size, seed=args.seed
        )
        for spe, drivers in ((1, FIT_FIRST), (32, FIT_FIRST[::-1])):
            for driver in drivers:
                loop = driver(
                    family_data,
                    steps_per_execution=spe,
                    family=family,
                    **options,
                )
                loop.samples = samples
                order.append(loop)
    return order


FIT_FIRST = (loops.KerasFit, loops.ManualLoopFit)


def busy_cpu_seconds() -> float | None:
    """CPU seconds all processes have used since boot (None off Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(value) for value in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def timed_epoch(loop: loops.Loop) -> dict[str, float | None]:
    """One timed epoch, and the CPU all other processes used meanwhile.

    `other_load` is that CPU in cores, over the whole call: on a shared
    machine it says how contended the epoch was.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    busy = busy_cpu_seconds()
    timing = loop.epoch()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    other_load = None
    if busy is not None:
        other_load = max(0.0, (busy_cpu_seconds() - busy - cpu) / wall)
    return {
        "seconds": timing.seconds,
        "cpu_seconds": timing.cpu_seconds,
        "other_load": other_load,
    }


def measure(
    order: list[loops.Loop],
    repeats: int,
    time_budget: float,
    log: Callable[[str], None],
) -> dict[str, dict[str, Any]]:
    """Latency, warm-up, then interleaved rounds of timed epochs.

    Rounds come in pairs (A B ... then ... B A); a new pair starts only if
    it should end within `time_budget` seconds of the first round.
    """
    results = {
        loop.key: {"seconds": [], "cpu_seconds": [], "other_load": []}
        for loop in order
    }
    for loop in order:
        results[loop.key]["first_batch_s"] = loop.start()
        log(
            f"  first batch {loop.key:20s} "
            f"{results[loop.key]['first_batch_s']:6.2f} s"
        )
    for loop in order:
        loop.warm_up()
    begin = time.perf_counter()
    for round_index in range(repeats):
        elapsed = time.perf_counter() - begin
        if round_index >= 2 and round_index % 2 == 0 and time_budget > 0:
            per_round = elapsed / round_index
            if elapsed + 2 * per_round > time_budget:
                log(f"  time budget reached after {round_index} rounds")
                break
        this_round = order if round_index % 2 == 0 else order[::-1]
        line = []
        for loop in this_round:
            epoch = timed_epoch(loop)
            for name, value in epoch.items():
                results[loop.key][name].append(value)
            line.append(f"{loop.key} {loop.samples / epoch['seconds']:,.0f}")
        log(f"  round {round_index + 1}/{repeats}: " + ", ".join(line))
    for loop in order:
        entry = results[loop.key]
        entry["samples_per_s"] = [loop.samples / s for s in entry["seconds"]]
        entry["samples_per_cpu_s"] = [
            loop.samples / s for s in entry["cpu_seconds"]
        ]
        entry["median_samples_per_s"] = statistics.median(
            entry["samples_per_s"]
        )
        entry.update(
            label=loop.label,
            steps_per_execution=loop.steps_per_execution,
            eager=loop.eager,
            samples=loop.samples,
        )
    return results


# An epoch is "contended" when other processes used at least this many
# cores while it ran: it then says how busy the machine was, not how fast
# the loop is. An epoch in which the loop itself waited (say, for tf.data to
# delete an iterator) is the loop's own cost and counts. (An earlier filter
# on this process's parallelism took those waits for contention, and hid
# the stalls of the loops that have them.)
CONTENDED_ABOVE_CORES = 0.3
MIN_PAIRS = 3


def mark_contended(results: dict[str, Any]) -> None:
    """Adds each epoch's parallelism and whether it was contended."""
    for entry in results.values():
        entry["parallelism"] = [
            cpu / wall
            for cpu, wall in zip(
                entry["cpu_seconds"], entry["seconds"], strict=True
            )
        ]
        entry["contended"] = [
            load is not None and load >= CONTENDED_ABOVE_CORES
            for load in entry["other_load"]
        ]
        quiet = [
            speed
            for speed, contended in zip(
                entry["samples_per_s"], entry["contended"], strict=True
            )
            if not contended
        ]
        entry["median_uncontended_samples_per_s"] = statistics.median(
            quiet or entry["samples_per_s"]
        )


def paired_ratios(
    results: dict[str, Any],
    key: str,
    reference: str,
    metric: str = "samples_per_s",
    uncontended: bool = True,
) -> list[float]:
    """`key`'s `metric` over `reference`'s, round by round.

    With `uncontended`, only the rounds where neither epoch was contended
    count, unless fewer than `MIN_PAIRS` are left (then all rounds count).
    """
    a, b = results[key], results[reference]
    pairs = list(
        zip(a[metric], b[metric], a["contended"], b["contended"], strict=True)
    )
    quiet = [(x, y) for x, y, cx, cy in pairs if not (cx or cy)]
    if not uncontended or len(quiet) < MIN_PAIRS:
        quiet = [(x, y) for x, y, _, _ in pairs]
    return [x / y for x, y in quiet]


def quiet_rounds(results: dict[str, Any], key: str, reference: str) -> int:
    """How many rounds had neither loop's epoch contended."""
    a, b = results[key], results[reference]
    return sum(
        not (x or y)
        for x, y in zip(a["contended"], b["contended"], strict=True)
    )


@dataclasses.dataclass
class Comparison:
    """Two loops' throughput, compared several ways.

    Attributes:
        name: What is compared.
        key: The loop on top of the ratio.
        reference: The loop below.
        median: The median, over the rounds where neither epoch was
            contended, of the ratio of their samples/s in that round: the
            number the targets use.
        pairs: How many rounds `median` is over.
        quiet_pairs: How many rounds had neither epoch contended (when
            fewer than `MIN_PAIRS`, `median` is over every round).
        median_all: The same median over every round.
        best: The ratio of their fastest epochs.
        cpu: The median ratio (uncontended rounds) of samples per
            CPU-second of this process: the work each loop does per sample.
        needed: The target, e.g. ">= 0.97", or "" when there is none.
    """

    name: str
    key: str
    reference: str
    median: float = 0.0
    pairs: int = 0
    quiet_pairs: int = 0
    median_all: float = 0.0
    best: float = 0.0
    cpu: float = 0.0
    needed: str = ""

    def measure(self, results: dict[str, Any]) -> Comparison:
        ratios = paired_ratios(results, self.key, self.reference)
        self.median, self.pairs = statistics.median(ratios), len(ratios)
        self.quiet_pairs = quiet_rounds(results, self.key, self.reference)
        self.median_all = statistics.median(
            paired_ratios(results, self.key, self.reference, uncontended=False)
        )
        self.best = max(results[self.key]["samples_per_s"]) / max(
            results[self.reference]["samples_per_s"]
        )
        self.cpu = statistics.median(
            paired_ratios(
                results, self.key, self.reference, "samples_per_cpu_s"
            )
        )
        return self

    @property
    def met(self) -> bool | None:
        if not self.needed:
            return None
        comparison, threshold = self.needed.split()
        return _compare(self.median, comparison, float(threshold))


def _compare(value: float, comparison: str, threshold: float) -> bool:
    return {
        ">=": value >= threshold,
        ">": value > threshold,
        "<": value < threshold,
        "==": value == threshold,
    }[comparison]


def make_comparisons(
    results: dict[str, Any], spes: list[int]
) -> list[Comparison]:
    """ManualLoop against fit and bare at each spe; eager; the families."""
    found = []
    for spe in spes:
        loop = f"manual_loop/spe={spe}"
        found.append(
            Comparison(
                f"ManualLoop / fit, spe={spe}",
                loop,
                f"fit/spe={spe}",
                needed=">= 1.00" if spe in (1, 32) else "",
            )
        )
        found.append(
            Comparison(
                f"ManualLoop / bare step, spe={spe}",
                loop,
                "bare",
                needed=(">= 0.97" if spe == 1 else "> 1.00"),
            )
        )
    found.append(Comparison("fit / bare step, spe=1", "fit/spe=1", "bare"))
    found.append(
        Comparison(
            "ManualLoop / fit, eager",
            "manual_loop/eager",
            "fit/eager",
            needed=">= 1.00",
        )
    )
    found.append(
        Comparison(
            "ManualLoop / tutorial loop, eager",
            "manual_loop/eager",
            "tutorial/eager",
        )
    )
    for family in workload.FAMILIES:
        for spe in (1, 32):
            found.append(
                Comparison(
                    f"{family.label}: ManualLoop / fit, spe={spe}",
                    f"{family.name}/manual_loop/spe={spe}",
                    f"{family.name}/fit/spe={spe}",
                    needed=">= 1.00",
                )
            )
    return [
        comparison.measure(results)
        for comparison in found
        if comparison.key in results and comparison.reference in results
    ]


def make_checks(
    traces: dict[str, Any] | None, memory: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """The trace-count and memory targets, with what was measured."""
    found = []
    for spe, counts in (traces or {}).get("manual_loop", {}).items():
        for kind in ("train", "test"):
            found.append(
                {
                    "name": f"traces of {kind}_step, ragged last batch, "
                    f"ManualLoop steps_per_execution={spe}",
                    "measured": counts[kind],
                    "needed": "== 1",
                }
            )
    if memory is not None:
        found.append(
            {
                "name": f"RSS growth after epoch 2 of {memory['epochs']}"
                " (MB, peak or trend), ManualLoop",
                "measured": round(checks.rss_growth_mb(memory), 1),
                "needed": "< 20",
            }
        )
    for check in found:
        comparison, threshold = check["needed"].split()
        check["met"] = _compare(check["measured"], comparison, float(threshold))
    return found


def summary(comparisons: list[Comparison]) -> list[str]:
    """The run in a few sentences, every number read from `comparisons`."""
    by_name = {comparison.name: comparison for comparison in comparisons}

    def ratio(name: str) -> str:
        comparison = by_name.get(name)
        return "-" if comparison is None else f"{comparison.median:.2f}"

    targets = [c for c in comparisons if c.met is not None]
    missed = [c.name for c in targets if not c.met]
    lines = [
        f"- Targets met: {len(targets) - len(missed)} of {len(targets)}"
        + (f" (missed: {'; '.join(missed)})." if missed else "."),
        "- Compiled, ManualLoop runs at "
        f"{ratio('ManualLoop / fit, spe=1')} times the speed of `model.fit` "
        f"at steps_per_execution=1 and {ratio('ManualLoop / fit, spe=32')} "
        "at 32; against the bare compiled step, "
        f"{ratio('ManualLoop / bare step, spe=1')} and "
        f"{ratio('ManualLoop / bare step, spe=32')}.",
        "- Eager (`run_eagerly=True`), ManualLoop runs at "
        f"{ratio('ManualLoop / fit, eager')} times `model.fit` and "
        f"{ratio('ManualLoop / tutorial loop, eager')} times the tutorial's "
        "GradientTape loop.",
    ]
    families = [
        f"{family.label} {ratio(f'{family.label}: ManualLoop / fit, spe=1')}"
        f" and {ratio(f'{family.label}: ManualLoop / fit, spe=32')}"
        for family in workload.FAMILIES
        if f"{family.label}: ManualLoop / fit, spe=1" in by_name
    ]
    if families:
        lines.append(
            "- ManualLoop / fit for the other families, at "
            "steps_per_execution 1 and 32: " + "; ".join(families) + "."
        )
    return lines


def markdown(
    args: argparse.Namespace,
    machine: dict[str, Any],
    results: dict[str, Any],
    comparisons: list[Comparison],
    checks_: list[dict[str, Any]],
    memory: dict[str, Any] | None,
) -> str:
    """The results as Markdown: summary, throughput, ratios, checks."""
    loads = [
        load
        for entry in results.values()
        for load in entry["other_load"]
        if load is not None
    ]
    contended = sum(sum(entry["contended"]) for entry in results.values())
    epochs = sum(len(entry["contended"]) for entry in results.values())
    lines = [
        *summary(comparisons),
        "",
        f"Tutorial model: {args.samples:,} MNIST-shaped samples per epoch "
        f"(eager loops: {args.eager_samples:,}), batch {args.batch_size}; "
        f"{args.repeats} interleaved rounds; "
        f"prefetch {'on' if args.prefetch else 'off'}, "
        f"jit_compile {'True' if args.jit_compile else 'auto (off on CPU)'}; "
        f"{machine['cpu_count']} CPU cores, TensorFlow "
        f"{machine['tensorflow']}, Keras {machine['keras']}. "
        f"{contended} of {epochs} timed epochs were contended (other "
        f"processes used {CONTENDED_ABOVE_CORES} cores or more meanwhile)",
    ]
    if loads:
        median_load = statistics.median(loads)
        lines[-1] += f"; others used a median of {median_load:.1f} cores"
    lines[-1] += "."
    lines += [
        "",
        "| loop | spe | samples/s | range | contended | first batch (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for entry in results.values():
        speeds = entry["samples_per_s"]
        lines.append(
            f"| {entry['label']} "
            f"| {'-' if entry['eager'] else entry['steps_per_execution']} "
            f"| {entry['median_uncontended_samples_per_s']:,.0f} "
            f"| {min(speeds):,.0f}-{max(speeds):,.0f} "
            f"| {sum(entry['contended'])}/{len(speeds)} "
            f"| {entry['first_batch_s']:.2f} |"
        )
    lines += [
        "",
        "| comparison | median | CPU | best | pairs | target | met |",
        "| --- | ---: | ---: | ---: | ---: | ---: | :---: |",
    ]
    for comparison in comparisons:
        met = {None: "", True: "yes", False: "**no**"}[comparison.met]
        lines.append(
            f"| {comparison.name} | {comparison.median:.3f} "
            f"| {comparison.cpu:.3f} | {comparison.best:.3f} "
            f"| {_pairs(comparison)} | {comparison.needed} | {met} |"
        )
    if checks_:
        lines += ["", "| check | measured | target | met |"]
        lines.append("| --- | ---: | ---: | :---: |")
        for check in checks_:
            lines.append(
                f"| {check['name']} | {check['measured']} "
                f"| {check['needed']} | {'yes' if check['met'] else '**no**'} |"
            )
    if memory is not None:
        peaks, current = memory["peak_mb"], memory["current_mb"]
        lines += [
            "",
            f"Resident memory of ManualLoop over {memory['epochs']} epochs of "
            f"{memory['samples']:,} samples (fresh process): peak "
            f"{peaks[1]:.0f} MB after epoch 2, {peaks[-1]:.0f} MB after epoch "
            f"{memory['epochs']}; current {current[1]:.0f} MB after epoch 2, "
            f"{current[-1]:.0f} MB after epoch {memory['epochs']}.",
        ]
    return "\n".join(lines) + "\n"


def _pairs(comparison: Comparison) -> str:
    if comparison.pairs == comparison.quiet_pairs:
        return str(comparison.pairs)
    return f"{comparison.pairs} ({comparison.quiet_pairs} quiet)"


def run_checks(
    args: argparse.Namespace, log: Callable[[str], None]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Trace counts (both drivers, spe 1 and the largest) and memory."""
    log("traces with a ragged last batch")
    traces = {
        driver: {
            spe: checks.count_traces(
                driver, batch_size=args.batch_size, steps_per_execution=spe
            )
            for spe in sorted({1, max(args.steps_per_execution)})
        }
        for driver in ("manual_loop", "fit")
    }
    log(f"memory: {args.memory_epochs} epochs in a fresh process")
    memory = checks.memory_growth_in_subprocess(
        "manual_loop",
        samples=args.memory_samples,
        batch_size=args.batch_size,
        epochs=args.memory_epochs,
    )
    return traces, memory


def measure_all(
    args: argparse.Namespace, log: Callable[[str], None]
) -> dict[str, Any]:
    """Runs every measurement; returns the raw numbers (`results.json`)."""
    begin = time.perf_counter()
    order = make_loops(args)
    log(f"throughput: {len(order)} loops, {args.repeats} rounds at most")
    results = measure(order, args.repeats, args.time_budget, log)
    args.repeats = len(next(iter(results.values()))["seconds"])
    traces = memory = None
    if not args.skip_checks:
        traces, memory = run_checks(args, log)
    return {
        "arguments": vars(args),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
        "loops": results,
        "traces": traces,
        "memory": memory,
        "wall_s": time.perf_counter() - begin,
    }


def summarize(report: dict[str, Any], out: str) -> int:
    """Ratios, targets and tables from the raw numbers; writes `out`.

    Returns:
        0 when every target is met, else 1.
    """
    args = argparse.Namespace(**report["arguments"])
    results = report["loops"]
    mark_contended(results)
    comparisons = make_comparisons(results, args.steps_per_execution)
    checks_ = make_checks(report["traces"], report["memory"])
    report["comparisons"] = [
        {**dataclasses.asdict(comparison), "met": comparison.met}
        for comparison in comparisons
    ]
    report["checks"] = checks_
    table = markdown(
        args,
        report["machine"],
        results,
        comparisons,
        checks_,
        report["memory"],
    )
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(table)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(report, f, indent=2, default=str)
    print()
    print(table)
    print(f"wrote {out}/results.md and results.json")
    met = [c.met for c in comparisons if c.met is not None]
    met += [check["met"] for check in checks_]
    return 0 if all(met) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark (or re-renders a saved run); see the docstring.

    Returns:
        0 when every target is met, else 1.
    """
    args = parse_args(argv)
    if args.render:
        with open(args.render) as f:
            return summarize(json.load(f), args.out)
    warnings.filterwarnings("ignore", message=".*shuffle=True.*")
    begin = time.perf_counter()

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - begin:4.0f} s] {text}", flush=True)

    return summarize(measure_all(args, log), args.out)


if __name__ == "__main__":
    sys.exit(main())
