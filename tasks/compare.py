"""`--compare_baseline`, the same in the three entry scripts: the baseline and the chosen sub-branch as two runs
of one command, each in its own subdirectory, then comparison.json, one table and the comparison plot."""
import json
import os
from dataclasses import replace
from typing import Callable, Dict, List, Optional, Tuple

from masksub_hf.sub_types import RUN_NAMES, listed

SKIPPED = ("_loss", "_runtime", "_per_second", "_samples")  # not a result: the table leaves them out


def runs(training_args, compare: bool) -> List[Tuple[Optional[str], object]]:
    """[(name, TrainingArguments)]: the one run as asked, or the baseline and the sub-branch side by side."""
    if not compare:
        return [(None, training_args)]
    if training_args.masksub_type == "none":
        raise ValueError(f"--compare_baseline trains a baseline beside MaskSub: give --masksub_type {listed()} "
                         "(or pass --compare_baseline false).")
    root, baseline = training_args.output_dir, RUN_NAMES["none"]
    name = "plain" if training_args.masksub_plain else RUN_NAMES[training_args.masksub_type]
    return [(baseline, replace(training_args, output_dir=os.path.join(root, baseline), masksub_type="none",
                               masksub_plain=False)),
            (name, replace(training_args, output_dir=os.path.join(root, name)))]


def run_all(compared, train: Callable[[object], Dict], caption: str, extra: Optional[Dict] = None):
    """Each run of `compared` through train(args), announced; after a comparison, the report. Returns the one run's
    metrics, or {name: metrics} for a comparison."""
    results = {}
    for name, args in compared:
        announce(name, args)
        results[name] = train(args)
    if list(results) == [None]:
        return results[None]
    report(compared, results, caption, extra)
    return results


def announce(name: Optional[str], args) -> None:
    """The line that opens each run of a comparison (nothing for a single run)."""
    if name:
        plain = ", plain" if args.masksub_plain else ""
        print(f"\n=== {name}: --masksub_type {args.masksub_type}{plain} -> {args.output_dir}", flush=True)


def report(compared, results: Dict[str, Dict], caption: str, extra: Optional[Dict] = None) -> None:
    """After both runs: comparison.json (with `extra`, e.g. the model and data), the table and the plot path."""
    root = os.path.dirname(compared[0][1].output_dir)
    dirs = [args.output_dir for _, args in compared]
    for (name, _), run_dir in zip(compared, dirs):
        results[name].update(eval_loss_curve(run_dir))
    if compared[0][1].process_index != 0:
        return
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "comparison.json"), "w") as f:
        json.dump({**(extra or {}), "runs": results} if extra else results, f, indent=2)
    print("\n" + table(results, caption))
    first = next((k for k in results[compared[0][0]] if k.startswith("eval_") and not k.endswith(SKIPPED)), "eval_loss")
    print(f"plot: {comparison_plot(root, dirs, [name for name, _ in compared], first)}", flush=True)


def table(results: Dict[str, Dict[str, float]], caption: str) -> str:
    """A markdown table: each run's eval_/test_ results and its training time, then the eval-loss curves."""
    first = next(iter(results.values()))
    keys = [k for k in first if k.startswith(("eval_", "test_")) and not k.endswith(SKIPPED) and "_mm" not in k]
    keys.append("train_runtime")
    settings = ", ".join(f"{name}: {m['masksub_setting']}" for name, m in results.items() if "masksub_setting" in m)
    lines = [f"{caption}: baseline vs sub-branch, same budget and seed" + (f" ({settings})" if settings else ""),
             "| run | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for name, metrics in results.items():
        cells = [f"{metrics[k]:.4f}" if k in metrics and k != "train_runtime" else
                 (f"{metrics[k]:.1f} s" if k in metrics else "-") for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if curve_summary(results):
        lines.append(curve_summary(results))
    return "\n".join(lines)


def eval_loss_curve(output_dir: str) -> Dict[str, float]:
    """Best and last eval loss logged during training (trainer_state.json), and the epoch of the best:
    a baseline that overfits has its best early and ends higher; a regulariser keeps the two close."""
    path = os.path.join(output_dir, "trainer_state.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        points = [(e["epoch"], e["eval_loss"]) for e in json.load(f)["log_history"] if "eval_loss" in e]
    if not points:
        return {}
    best = min(points, key=lambda p: p[1])
    return {"curve_best_eval_loss": best[1], "curve_best_epoch": best[0], "curve_final_eval_loss": points[-1][1]}


def curve_summary(results: Dict[str, Dict]) -> str:
    """One line: each run's best eval loss (at its epoch) and final eval loss; empty without curves."""
    curves = {name: m for name, m in results.items() if "curve_best_eval_loss" in m}
    if not curves:
        return ""
    return "eval loss during training: " + "; ".join(
        f"{name} best {m['curve_best_eval_loss']:.4f} (epoch {m['curve_best_epoch']:g}), final "
        f"{m['curve_final_eval_loss']:.4f}" for name, m in curves.items())


def comparison_plot(output_dir: str, run_dirs, names, metric: str = "eval_accuracy") -> str:
    """output_dir/comparison.png: the runs of a comparison side by side (masksub_hf.plot); returns its path."""
    from masksub_hf.plot import plot_runs

    path = os.path.join(output_dir, "comparison.png")
    plot_runs(run_dirs, path, names=list(names), metric=metric)
    return path
