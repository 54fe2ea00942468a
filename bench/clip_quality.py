#!/usr/bin/env python
"""CLIP quality: baseline vs MaskSub (mask), DropSub (drop), PathSub (path) over several seeds.

Each (type, seed) run is run_clip.main on the offline default (EfficientNet-Lite0 + MiniLM-L6
CLIP, Fashion-MNIST images with template captions) with the same budget; a seed fixes the data
order and the new projections' init, so runs with one seed differ only in the sub-branch.
Prints a markdown table of zero-shot accuracy, recall@1/5/10 and wall-clock (mean +- std over
seeds) and writes every run's numbers to OUTPUT_DIR/clip_quality.json. Figures, never asserted.

    python bench/clip_quality.py --output_dir output/bench-clip --seeds 0 1 2 --max_steps 100
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]

import run_clip  # noqa: E402

METRICS = ("zeroshot_accuracy", "image_to_text_R@1", "image_to_text_R@5", "image_to_text_R@10",
           "text_to_image_R@1", "text_to_image_R@5", "text_to_image_R@10")


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", default="output/bench-clip", help="Where each run's subdirectory and the table go.")
    p.add_argument("--types", nargs="+", default=["none", "mask", "drop", "path"],
                   help="masksub_type values to compare ('none' is the plain baseline).")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="Seeds (at least 3 to judge small gaps).")
    p.add_argument("--ratio", type=float, default=0.5, help="--masksub_ratio for every perturbation.")
    p.add_argument("--max_steps", type=int, default=100, help="Optimizer steps per run (the same budget for all).")
    p.add_argument("--batch_size", type=int, default=32, help="Per-device batch size (the contrastive batch).")
    p.add_argument("--image_size", type=int, default=64, help="Input resolution of the offline CLIP.")
    p.add_argument("--val_num_samples", type=int, default=1000, help="Fashion-MNIST test images evaluated.")
    p.add_argument("--overwrite_output_dir", action="store_true", help="Reuse a non-empty --output_dir.")
    p.add_argument("extra", nargs="*", help="Further run_clip.py flags, after `--`.")
    return p.parse_args()


def main():
    a = parse()
    if os.path.isdir(a.output_dir) and os.listdir(a.output_dir) and not a.overwrite_output_dir:
        raise SystemExit(f"{a.output_dir} is not empty; pass --overwrite_output_dir or choose another directory.")
    runs = []
    for seed in a.seeds:
        for kind in a.types:
            out = os.path.join(a.output_dir, f"{kind}-seed{seed}")
            argv = ["--output_dir", out, "--masksub_type", kind, "--masksub_ratio", str(a.ratio), "--seed", str(seed),
                    "--max_steps", str(a.max_steps), "--per_device_train_batch_size", str(a.batch_size),
                    "--image_size", str(a.image_size), "--val_num_samples", str(a.val_num_samples),
                    "--compare_baseline", "false", "--overwrite_output_dir", "--disable_tqdm", "true", *a.extra]
            start = time.perf_counter()
            metrics = run_clip.main(argv)
            wall = time.perf_counter() - start
            row = {"type": kind, "seed": seed, "wall_s": wall, "train_s": metrics["train_runtime"],
                   **{m: metrics[f"eval_{m}"] for m in METRICS}}
            runs.append(row)
            print(json.dumps(row), flush=True)
            with open(os.path.join(a.output_dir, "clip_quality.json"), "w") as f:
                json.dump({"args": vars(a), "runs": runs}, f, indent=2)
    print(table(runs, a.types))


def table(runs, types):
    cols = METRICS + ("train_s",)
    lines = ["| type | " + " | ".join(c.replace("zeroshot_accuracy", "zero-shot acc") for c in cols) + " |",
             "|---" * (len(cols) + 1) + "|"]
    for kind in types:
        rows = [r for r in runs if r["type"] == kind]
        cells = []
        for c in cols:
            vals = [r[c] * (1 if c == "train_s" else 100) for r in rows]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.mean(vals):.1f} ± {sd:.1f}")
        lines.append(f"| {kind if kind != 'none' else 'baseline'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
