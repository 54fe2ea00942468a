"""Compare training runs from their trainer_state.json: the paper's training analysis as one figure.

    python -m masksub_hf.plot output/image/baseline output/image/masksub -o comparison.png

Rows: a validation metric (`eval_accuracy` unless `--metric` names another logged one, such as
`eval_zeroshot_accuracy` or `eval_pearson`), main-branch training loss (`loss_main`; `loss` for runs without a
sub-branch), sub-branch loss (`loss_sub`, runs with a sub-branch only), gradient norm. Columns: against
optimizer steps and against wall-clock seconds since the run's first log (`elapsed_s`, from
wallclock.json; counting from the first log leaves out each run's start-up, which the first of several
runs pays most), so a method that costs more per step is also judged on equal time. A RUN_DIR that
holds runs rather than being one (the baseline/ and masksub/ of a comparison) stands for all of them.
Needs matplotlib (`pip install masksub_hf[plot]`).
"""
import argparse
import glob
import json
import os
import sys
from typing import Dict, List, Optional, Sequence

from .wallclock import read as read_wallclock, with_wallclock

# (title, y label, how to read the value from one log_history entry)
PANELS = (
    ("validation accuracy", "accuracy", lambda e: e.get("eval_accuracy")),
    ("training loss, main branch", "loss", lambda e: e.get("loss_main", e.get("loss"))),
    ("training loss, perturbed sub-branch", "loss", lambda e: e.get("loss_sub")),
    ("gradient norm", "grad norm", lambda e: e.get("grad_norm")),
)
AXES = (("step", "optimizer step", "vs step"), ("elapsed_s", "wall-clock since the first log (s)", "vs wall-clock"))


def panels(metric: str = "eval_accuracy"):
    """PANELS with the validation row plotting `metric`, a key of the runs' evaluation logs."""
    name = metric[len("eval_"):] if metric.startswith("eval_") else metric
    return ((f"validation {name}", name, lambda e: e.get(metric)),) + PANELS[1:]


def find_state(path: str) -> str:
    """trainer_state.json of a run directory, else of its latest checkpoint (a run still in progress)."""
    if os.path.isfile(path):
        return path
    state = os.path.join(path, "trainer_state.json")
    if os.path.isfile(state):
        return state
    checkpoints = glob.glob(os.path.join(path, "checkpoint-*", "trainer_state.json"))
    if checkpoints:
        return max(checkpoints, key=lambda p: int(p.split("checkpoint-")[-1].split(os.sep)[0]))
    raise FileNotFoundError(f"{path}: no trainer_state.json (nor checkpoint-*/trainer_state.json) found.")


def read_history(path: str) -> List[Dict]:
    """log_history of a run, with the wall-clock (`elapsed_s`) that the run kept beside it (wallclock.py)."""
    state = find_state(path)
    with open(state) as f:
        history = json.load(f).get("log_history", [])
    run_dir = path if os.path.isdir(path) else os.path.dirname(state)
    if os.path.basename(run_dir).startswith("checkpoint-") and not read_wallclock(run_dir):
        run_dir = os.path.dirname(run_dir)  # wallclock.json lives in the output_dir, beside the checkpoints
    return with_wallclock(history, run_dir)


def expand_runs(paths: Sequence[str]) -> List[str]:
    """Each path that is a run, and for a folder that only holds runs (a comparison root), those runs."""
    runs = []
    for path in map(str, paths):
        inner = sorted(os.path.dirname(s) for s in glob.glob(os.path.join(path, "*", "trainer_state.json")))
        own = os.path.isfile(os.path.join(path, "trainer_state.json")) or glob.glob(
            os.path.join(path, "checkpoint-*", "trainer_state.json"))
        runs += [path] if own or not inner else inner
    return runs


def read_series(history: List[Dict], rows=PANELS) -> Dict[str, Dict[str, List]]:
    """{panel title: {"step": [...], "elapsed_s": [...], "value": [...]}} from one run's log_history, the
    wall-clock counted from the run's first log."""
    clock = [e["elapsed_s"] for e in history if e.get("elapsed_s") is not None and "train_runtime" not in e]
    start = min(clock) if clock else 0.0
    series = {}
    for title, _, read in rows:
        points = {"step": [], "elapsed_s": [], "value": []}
        for entry in history:
            value = read(entry)
            if value is None or "train_runtime" in entry:  # the end-of-training summary is not a point
                continue
            points["step"].append(entry.get("step"))
            elapsed = entry.get("elapsed_s")
            points["elapsed_s"].append(None if elapsed is None else elapsed - start)
            points["value"].append(value)
        series[title] = points
    return series


def run_names(paths: Sequence[str]) -> List[str]:
    """For each run, the shortest path suffix no other run shares (masksub, or seed0/masksub beside seed1/masksub)."""
    parts = [os.path.normpath(os.path.abspath(p)).split(os.sep) for p in paths]
    names = []
    for i, mine in enumerate(parts):
        for depth in range(1, len(mine) + 1):
            if all(other[-depth:] != mine[-depth:] for j, other in enumerate(parts) if j != i):
                break
        names.append("/".join(mine[-depth:]))
    return names


def plot_runs(paths: Sequence[str], output: str, names: Optional[Sequence[str]] = None, title: Optional[str] = None,
              metric: str = "eval_accuracy"):
    """Draw every panel for every run and save the figure; returns the matplotlib Figure. A `metric` that no
    run logged is refused with the evaluation keys they did log (a typo must not give an empty panel)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise ImportError("masksub_hf.plot needs matplotlib: pip install 'masksub_hf[plot]'") from None
    paths = expand_runs(paths)
    names = list(names) if names else run_names(paths)
    if len(names) != len(paths):
        raise ValueError(f"{len(names)} names for {len(paths)} runs.")
    histories = [read_history(p) for p in paths]
    logged = sorted({k for h in histories for e in h for k in e if k.startswith("eval_")})
    if logged and metric not in logged:
        raise ValueError(f"no run logged {metric!r}; their evaluations logged: {', '.join(logged)}.")
    rows = panels(metric)
    runs = [read_series(h, rows) for h in histories]
    fig, grid = plt.subplots(len(rows), len(AXES), figsize=(11, 3.0 * len(rows)), sharey="row", squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, (panel, ylabel, _) in enumerate(rows):
        for col, (key, xlabel, suffix) in enumerate(AXES):
            ax = grid[row][col]
            ax.set_title(f"{panel} {suffix}")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            if key == "step":
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
            ax.grid(alpha=0.3)
            drawn = False
            for i, (name, run) in enumerate(zip(names, runs)):
                pts = run[panel]
                xy = [(x, y) for x, y in zip(pts[key], pts["value"]) if x is not None]
                if xy:
                    ax.plot(*zip(*xy), label=name, color=colors[i % len(colors)],
                            marker="o" if panel.startswith("validation") else None, markersize=3)
                    drawn = True
            if not drawn:
                why = "no run has a sub-branch" if "sub-branch" in panel else "not logged"
                ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, color="grey")
    handles, labels = [], []
    for ax in fig.axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 6) or 1, frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    if title:
        fig.suptitle(title, y=1.03)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fig.savefig(output, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return fig


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m masksub_hf.plot", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="output_dir of a run (holds trainer_state.json), "
                        "or a folder of runs (a comparison's output_dir, holding baseline/ and masksub/)")
    parser.add_argument("-o", "--output", required=True, help="PNG file to write")
    parser.add_argument("--names", nargs="+", help="legend names, one per RUN_DIR (default: the directory names)")
    parser.add_argument("--title", help="figure title")
    parser.add_argument("--metric", default="eval_accuracy", help="evaluation key for the first row (default: "
                        "eval_accuracy; e.g. eval_zeroshot_accuracy for CLIP, eval_pearson for regression)")
    args = parser.parse_args(argv)
    try:
        plot_runs(args.runs, args.output, args.names, args.title, args.metric)
    except (OSError, ValueError, ImportError) as err:  # a missing run, an unlogged metric, no matplotlib
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
