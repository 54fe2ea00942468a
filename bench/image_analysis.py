#!/usr/bin/env python
"""The paper's training analysis on Fashion-MNIST with a small ViT trained from scratch (no ViT weights offline).

Five methods, the same budget and the same seeds (same initial weights, data subset and order per seed):
baseline, plain masking (ratio 0.5 on the main branch, no sub-branch), MaskSub (mask 0.5), DropSub and
PathSub (0.5). The learning rate is first chosen for the baseline (best of --baseline_lrs on the first seed)
and then used for every method, so the baseline is tuned no less than MaskSub. Prints mean and standard
deviation of test accuracy and wall-clock, checks the paper's three claims, and saves the comparison plot.
Finished runs are reused, so an interrupted benchmark picks up where it stopped.

    python bench/image_analysis.py --output_dir output/image_analysis --plot docs/image_analysis.png
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import run_image  # noqa: E402
from masksub_hf.plot import plot_runs  # noqa: E402

METHODS = {
    "baseline": ["--masksub_type", "none"],
    "plain mask 0.5": ["--masksub_type", "mask", "--masksub_plain"],
    "MaskSub 0.5": ["--masksub_type", "mask"],
    "DropSub 0.5": ["--masksub_type", "drop"],
    "PathSub 0.5": ["--masksub_type", "path"],
}


def budget(args):
    return ["--compare", "false", "--torch_threads", str(args.threads), "--max_train_samples", str(args.train_samples),
            "--max_eval_samples", str(args.eval_samples), "--num_train_epochs", str(args.epochs),
            "--masksub_ratio", "0.5", "--eval_steps", "0.2", "--disable_tqdm", "true", "--save_strategy", "no"]


def run(args, name, seed, lr, extra=()):
    out = os.path.join(args.output_dir, name.split()[0].lower(), f"lr{lr:g}-seed{seed}")
    done = os.path.join(out, "all_results.json")
    if not os.path.exists(done):
        argv = budget(args) + METHODS[name] + ["--seed", str(seed), "--learning_rate", str(lr), "--output_dir", out,
                                               "--overwrite_output_dir"] + list(extra)
        run_image.main(argv)
    with open(done) as f:
        metrics = json.load(f)
    with open(os.path.join(out, "trainer_state.json")) as f:
        history = json.load(f)["log_history"]
    train = [e for e in history if "loss" in e]
    main_loss = [e.get("loss_main", e["loss"]) for e in train]
    tail = main_loss[-max(1, len(main_loss) // 10):]
    return {"dir": out, "accuracy": metrics["eval_accuracy"], "runtime": metrics["train_runtime"],
            "loss_auc": sum(main_loss) / len(main_loss), "loss_end": sum(tail) / len(tail)}


def step_costs(lr, rounds=5, steps=10, batch=128):
    """Seconds per training step (forward + backward) of each method, measured round-robin in one process so
    that every method sees the same machine load; the runs' own train_runtime does not, on a shared machine."""
    import torch
    from transformers import AutoConfig, AutoModelForImageClassification

    from masksub_hf import MaskSubConfig
    from tasks.assets import fashion_mnist
    from tasks.image import MixupTrainer

    images, labels = fashion_mnist("test")
    x = (torch.tensor(images[:batch]).float().unsqueeze(1) / 255 - 0.5) / 0.5
    inputs = {"pixel_values": x, "labels": torch.tensor(labels[:batch])}
    trainers = {}
    for name, flags in METHODS.items():
        config = AutoConfig.for_model("vit")
        config.update_from_string(run_image.SMALL_VIT)
        config.num_labels = 10
        kind = flags[1]
        args = MaskSubConfig(output_dir="unused", report_to="none", use_cpu=True, learning_rate=lr,
                             masksub_type=kind, masksub_plain="--masksub_plain" in flags)
        trainer = MixupTrainer(model=AutoModelForImageClassification.from_config(config), args=args)
        trainer.current_gradient_accumulation_steps = 1
        trainers[name] = trainer
    times = {name: [] for name in METHODS}
    for _ in range(rounds):
        for name, trainer in trainers.items():
            trainer.training_step(trainer.model, dict(inputs))  # warm-up
            start = time.perf_counter()
            for _ in range(steps):
                trainer.training_step(trainer.model, dict(inputs))
                trainer.model.zero_grad()
            times[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(t) for name, t in times.items()}


def mean_std(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(values, scale=1.0, digits=2):
    m, s = mean_std([v * scale for v in values])
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def within(d, s):
    return "" if abs(d) > s else "; within one seed-to-seed std, so not a clear difference"


def torch_threads(n):
    import torch

    torch.set_num_threads(n)


def verdict(ok):
    return "holds" if ok else "does not hold"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="output/image_analysis", help="where every run's output_dir goes")
    parser.add_argument("--plot", default=None, help="comparison PNG of the first seed (default: OUTPUT_DIR/analysis.png)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (at least 3 for mean ± std)")
    parser.add_argument("--baseline_lrs", type=float, nargs="+", default=[1e-3, 2e-3, 4e-3],
                        help="learning rates tried for the baseline on the first seed; the best is used for all")
    parser.add_argument("--train_samples", type=int, default=10000, help="fixed random Fashion-MNIST training subset")
    parser.add_argument("--eval_samples", type=int, default=5000, help="fixed random subset of the test set")
    parser.add_argument("--epochs", type=float, default=3, help="epochs over the training subset, for every method")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 keeps timings steady on a busy machine)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), metavar="METHOD",
                        help=f"subset of: {', '.join(METHODS)}")
    args = parser.parse_args(argv)
    started = time.time()

    tuning = {lr: run(args, "baseline", args.seeds[0], lr) for lr in args.baseline_lrs}
    lr = max(tuning, key=lambda k: tuning[k]["accuracy"])
    print("baseline learning rate check (seed %d): %s -> %g" % (
        args.seeds[0], ", ".join(f"{k:g}: {v['accuracy']:.4f}" for k, v in tuning.items()), lr), flush=True)
    results = {name: [run(args, name, seed, lr) for seed in args.seeds] for name in args.methods}

    lines = ["| method | test accuracy (%) | train wall-clock (s) | main-branch train loss, mean over curve | at the end |",
             "|---|---|---|---|---|"]
    for name, rs in results.items():
        lines.append(f"| {name} | {fmt([r['accuracy'] for r in rs], 100)} | {fmt([r['runtime'] for r in rs], 1, 1)} | "
                     f"{fmt([r['loss_auc'] for r in rs], 1, 3)} | {fmt([r['loss_end'] for r in rs], 1, 3)} |")
    table = "\n".join(lines)
    if args.threads:
        torch_threads(args.threads)
    costs = step_costs(lr)
    base_cost = costs["baseline"]
    table += ("\n\nSeconds per training step (batch 128, forward + backward, median of 5 interleaved rounds of 10 steps), "
              "relative to the baseline: " + ", ".join(f"{n} {c:.3f} s ({c / base_cost:.2f}x)" for n, c in costs.items()))

    def paired(name, key, scale=1.0):
        """Per-seed difference to the baseline (same init, data and order): mean ± std."""
        return mean_std([(a[key] - b[key]) * scale for a, b in zip(results[name], results["baseline"])])

    claims = []
    if "plain mask 0.5" in results:
        d, s = paired("plain mask 0.5", "accuracy", 100)
        claims.append(f"1. Plain masking hurts: {verdict(d < 0)} (accuracy {d:+.2f} ± {s:.2f} points vs baseline, "
                      f"per seed{within(d, s)}).")
    if "MaskSub 0.5" in results:
        d, s = paired("MaskSub 0.5", "accuracy", 100)
        claims.append(f"2. MaskSub beats the baseline: {verdict(d > 0)} (accuracy {d:+.2f} ± {s:.2f} points vs baseline, "
                      f"per seed{within(d, s)}).")
        da, sa = paired("MaskSub 0.5", "loss_auc")
        de, se = paired("MaskSub 0.5", "loss_end")
        claims.append(f"3. MaskSub's main-branch training loss falls faster: {verdict(da < 0 and de < 0)} (mean over the "
                      f"curve {da:+.3f} ± {sa:.3f}, over the last 10% of steps {de:+.3f} ± {se:.3f}, vs baseline).")
    plot = args.plot or os.path.join(args.output_dir, "analysis.png")
    plot_runs([rs[0]["dir"] for rs in results.values()], plot, names=list(results),
              title=f"Fashion-MNIST, ViT from scratch, seed {args.seeds[0]}")
    report = (f"{table}\n\n" + "\n".join(claims) +
              f"\n\nlr {lr:g} (chosen for the baseline); seeds {args.seeds}; {args.train_samples} training images x "
              f"{args.epochs:g} epochs; {args.eval_samples} test images; plot {plot}; "
              f"benchmark wall-clock {time.time() - started:.0f} s")
    print(report)
    with open(os.path.join(args.output_dir, "summary.json"), "w") as f:
        json.dump({"lr": lr, "tuning": tuning, "results": results, "step_costs": costs, "claims": claims}, f, indent=2)
    with open(os.path.join(args.output_dir, "summary.md"), "w") as f:
        f.write(report + "\n")
    return results, claims


if __name__ == "__main__":
    main()
