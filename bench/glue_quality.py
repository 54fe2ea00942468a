#!/usr/bin/env python
"""Quality benchmark: MiniLM-L6 on movie-sentiment, baseline vs MaskSub vs DropSub vs PathSub.

Every variant gets the same hyper-parameters, budget and seeds (the seed fixes the classifier
init and the data order, so a seed's runs differ only in the sub-branch). Runs go seed by seed,
so a change in machine load touches every variant alike. Each finished run is appended to
runs.jsonl, so an interrupted benchmark keeps its results (--summarize prints them again).

    OMP_NUM_THREADS=1 python bench/glue_quality.py     # 3 seeds x 4 variants, sized for a shared 2-core CPU
    python bench/glue_quality.py --seeds 0 1 2 3 4 --max_train_samples 8176 --batch_size 32 --max_seq_length 128 \
        --learning_rate 5e-5 --max_eval_samples 937 --max_predict_samples 959          # a GPU: full data
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import run_glue  # noqa: E402

NAMES = {"none": "baseline", "mask": "MaskSub", "drop": "DropSub", "path": "PathSub"}


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--types", nargs="+", default=["none", "mask", "drop", "path"], help="masksub_type values to compare")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds (at least 3)")
    p.add_argument("--ratio", type=float, default=0.5, help="masksub_ratio for every sub-branch (paper: 0.5)")
    p.add_argument("--max_train_samples", type=int, default=480, help="training sentences per run (budget)")
    p.add_argument("--max_eval_samples", type=int, default=400, help="validation sentences scored (of 937)")
    p.add_argument("--max_predict_samples", type=int, default=400, help="test sentences scored (of 959)")
    p.add_argument("--epochs", type=float, default=1, help="epochs over those sentences")
    p.add_argument("--batch_size", type=int, default=8, help="training batch size")
    p.add_argument("--learning_rate", type=float, default=1e-4, help="peak learning rate (linear decay, 10%% warmup)")
    p.add_argument("--max_seq_length", type=int, default=64, help="truncation length (batches are padded dynamically)")
    p.add_argument("--output_dir", default="output/bench-glue", help="where runs and runs.jsonl go")
    p.add_argument("--summarize", action="store_true", help="only print the table from output_dir/runs.jsonl")
    return p.parse_args()


def one_run(args, masksub_type, seed):
    out = os.path.join(args.output_dir, f"{masksub_type}-seed{seed}")
    argv = ["--task_name", "movie-sentiment", "--do_train", "--do_eval", "--do_predict", "--output_dir", out,
            "--overwrite_output_dir", "--masksub_type", masksub_type, "--masksub_ratio", str(args.ratio),
            "--seed", str(seed), "--max_train_samples", str(args.max_train_samples),
            "--num_train_epochs", str(args.epochs), "--per_device_train_batch_size", str(args.batch_size),
            "--per_device_eval_batch_size", "32", "--max_eval_samples", str(args.max_eval_samples),
            "--max_predict_samples", str(args.max_predict_samples), "--learning_rate", str(args.learning_rate),
            "--warmup_steps", "0.1", "--max_seq_length", str(args.max_seq_length), "--save_strategy", "no",
            "--logging_steps", "10", "--disable_tqdm", "True"]
    start = time.perf_counter()
    metrics = run_glue.run(*run_glue.parse_args(argv))
    return {"type": masksub_type, "seed": seed, "eval_accuracy": metrics["eval_accuracy"],
            "test_accuracy": metrics["test_accuracy"], "train_s": metrics["train_runtime"],
            "wall_s": time.perf_counter() - start}


def table(rows):
    lines = ["| variant | runs | val accuracy (mean ± std) | test accuracy (mean ± std) | train s / run | wall s / run |",
             "|---|---:|---:|---:|---:|---:|"]
    for t in NAMES:
        mine = [r for r in rows if r["type"] == t]
        if not mine:
            continue
        val, test = (np.array([r[k] for r in mine]) * 100 for k in ("eval_accuracy", "test_accuracy"))
        std = (lambda a: a.std(ddof=1) if len(a) > 1 else float("nan"))
        lines.append(f"| {NAMES[t]} | {len(mine)} | {val.mean():.2f} ± {std(val):.2f} | {test.mean():.2f} ± "
                     f"{std(test):.2f} | {np.mean([r['train_s'] for r in mine]):.0f} | "
                     f"{np.mean([r['wall_s'] for r in mine]):.0f} |")
    return "\n".join(lines)


def main():
    args = parse()
    log = os.path.join(args.output_dir, "runs.jsonl")
    os.makedirs(args.output_dir, exist_ok=True)
    if not args.summarize:
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
              f"{torch.get_num_threads()}, cuda {torch.cuda.is_available()}", flush=True)
        open(log, "w").close()
        for seed in args.seeds:
            for masksub_type in args.types:
                row = one_run(args, masksub_type, seed)
                print(json.dumps(row), flush=True)
                with open(log, "a") as f:
                    f.write(json.dumps(row) + "\n")
    rows = [json.loads(line) for line in open(log)]
    print(table(rows))


if __name__ == "__main__":
    main()
