"""What the entry scripts' comparisons print about a run's evaluation curve."""
import json
import os
from typing import Dict


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
