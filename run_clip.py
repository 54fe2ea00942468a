#!/usr/bin/env python
"""Fine-tune an open_clip model with MaskSub: contrastive image-text training, or the image tower as a classifier.

Flags follow open_clip's training app where they exist (--model, --pretrained, --train_data,
--val_data, --csv_img_key, --csv_caption_key, --csv_separator); training flags are
MaskSubConfig's (TrainingArguments + --masksub_type mask|drop|path|none, --masksub_ratio).

Run with no data argument it needs no hub: a CLIP assembled from two pretrained towers
(EfficientNet-Lite0 + MiniLM-L6, both from PyPI) is fine-tuned on Fashion-MNIST images with
template captions over the class names, once as the plain baseline and once with MaskSub under
the same budget, and both results are printed side by side:

    python run_clip.py                                   # -> output/clip/{baseline,masksub}
    python run_clip.py --model ViT-B-32 --pretrained laion2b_s34b_b79k --train_data train.csv \
        --val_data val.csv --csv_img_key filepath --csv_caption_key title --output_dir out/clip
"""
import json
import logging
import os
import sys
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional

import numpy as np
import torch
import transformers
from transformers import HfArgumentParser, set_seed

from masksub_hf import MaskSubConfig, MaskSubTrainer
from masksub_hf.models.open_clip import MODES, ClampLogitScale, OpenCLIPForMaskSub
from tasks import clip as data
from tasks import hf_clip

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT_DIR = os.path.join("output", "clip")
# Training defaults in open_clip's spirit (AdamW, cosine, warmup); any of them can be overridden.
DEFAULTS = {
    "per_device_train_batch_size": 32,
    "learning_rate": 1e-4,
    "weight_decay": 0.1,
    "warmup_steps": 0.1,
    "lr_scheduler_type": "cosine",
    "logging_steps": 5,
    "save_strategy": "no",
    "report_to": "none",
    "dataloader_num_workers": 0,
}
# The embedded default (no data given): both runs fit ~10 minutes on 2 CPU cores.
EMBEDDED_DEFAULTS = {"max_steps": 100, "context_length": 16, "train_num_samples": 8000, "val_num_samples": 1000}
RUN_NAMES = {"none": "baseline", "mask": "masksub", "drop": "dropsub", "path": "pathsub"}


@dataclass
class ModelArguments:
    model: str = field(default="effnet-lite0-minilm", metadata={
        "help": "An open_clip model name (open_clip.list_models()), a JSON model config file, local-dir:/path, or an "
                f"offline CLIP: {'; '.join(f'{k}: {v}' for k, v in data.OFFLINE_MODELS.items())}."})
    model_name_or_path: Optional[str] = field(default=None, metadata={
        "help": "A transformers image-text checkpoint instead of an open_clip --model: a hub id or a save_pretrained "
                "directory of a CLIPModel, SiglipModel, VisionTextDualEncoderModel... (its tokenizer and image processor "
                "too), trained with its own loss and saved with save_pretrained."})
    pretrained: Optional[str] = field(default=None, metadata={
        "help": "open_clip pretrained tag (needs internet) or a local checkpoint path; none = the model's own init."})
    image_size: int = field(default=64, metadata={"help": "Input resolution of the offline CLIPs (ignored otherwise)."})
    context_length: int = field(default=32, metadata={
        "help": "Caption length in tokens of the offline CLIPs and of --model_name_or_path models (capped at their "
                "text tower's length; ignored otherwise; the default data's captions are at most 12 tokens, so it uses 16)."})
    mode: str = field(default="contrastive", metadata={
        "help": "'contrastive': image-text training with ClipLoss; 'classify': the image tower with a linear head "
                "initialised from the text embeddings of class-name prompts (the zero-shot head).",
        "choices": list(MODES)})
    mask_text: bool = field(default=False, metadata={
        "help": "With --masksub_type mask in contrastive mode, also drop caption tokens in the sub-branch, keeping the "
                "token the text tower pools (Hugging Face text towers only)."})


@dataclass
class DataArguments:
    train_data: Optional[str] = field(default=None, metadata={"help": "CSV/TSV of training pairs (open_clip format)."})
    val_data: Optional[str] = field(default=None, metadata={
        "help": "CSV/TSV of evaluation pairs; without it, --val_fraction of the training pairs is held out."})
    csv_separator: str = field(default="\t", metadata={"help": "Column separator of the CSV/TSV files."})
    csv_img_key: str = field(default="filepath", metadata={"help": "CSV column holding image paths."})
    csv_caption_key: str = field(default="title", metadata={"help": "CSV column holding captions."})
    csv_label_key: Optional[str] = field(default=None, metadata={
        "help": "CSV column holding class names: enables zero-shot accuracy and the classify mode."})
    dataset_name: Optional[str] = field(default=None, metadata={
        "help": "A Hugging Face dataset (hub name, local folder or save_to_disk directory) with image and text columns."})
    train_split: str = field(default="train", metadata={"help": "Training split of --dataset_name."})
    eval_split: Optional[str] = field(default=None, metadata={
        "help": "Evaluation split of --dataset_name; without it, --val_fraction of the training pairs is held out."})
    image_column: str = field(default="image", metadata={"help": "Image column of --dataset_name."})
    caption_column: str = field(default="text", metadata={"help": "Caption column of --dataset_name."})
    label_column: Optional[str] = field(default=None, metadata={
        "help": "Class column of --dataset_name: enables zero-shot accuracy and the classify mode."})
    val_fraction: float = field(default=0.1, metadata={"help": "Share held out for evaluation when no split is given."})
    train_num_samples: Optional[int] = field(default=None, metadata={
        "help": "Use at most this many training pairs (the offline default uses 8000)."})
    val_num_samples: Optional[int] = field(default=None, metadata={
        "help": "Evaluate on at most this many pairs (the offline default uses 1000 test images)."})
    max_bad_images: float = field(default=0.05, metadata={
        "help": "Unreadable image files are skipped and counted; refuse the data when more than this share is bad."})


@dataclass
class RunArguments:
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "Train into a non-empty --output_dir (otherwise refused, so no results are overwritten silently)."})
    compare_baseline: Optional[bool] = field(default=None, metadata={
        "help": "Also train the plain baseline (--masksub_type none) with the same budget, each run in its own "
                "subdirectory, and print both results side by side. On by default when no data is given."})


def parse_args(argv: Optional[List[str]] = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    given = lambda flag: any(a == flag or a.startswith(flag + "=") for a in argv)  # noqa: E731
    embedded = not (given("--train_data") or given("--dataset_name"))
    defaults = []
    for key, value in {**DEFAULTS, **(EMBEDDED_DEFAULTS if embedded else {})}.items():  # user flags come later, win
        defaults += [f"--{key}", str(value)]
    if not given("--output_dir"):
        defaults += ["--output_dir", DEFAULT_OUTPUT_DIR]
    parser = HfArgumentParser((ModelArguments, DataArguments, RunArguments, MaskSubConfig))
    model_args, data_args, run_args, training_args = parser.parse_args_into_dataclasses(args=defaults + argv)
    if run_args.compare_baseline is None:
        run_args.compare_baseline = embedded
    return model_args, data_args, run_args, training_args


def _cap(pairs: data.Pairs, n: Optional[int], seed: int) -> data.Pairs:
    if not n or n >= len(pairs):
        return pairs
    idx = np.random.default_rng(seed).permutation(len(pairs))[:n]
    pick = lambda xs: [xs[i] for i in idx] if xs is not None else None  # noqa: E731
    return data.Pairs(pick(list(pairs.images)), pick(pairs.captions), pick(pairs.labels), pairs.classnames, pairs.source)


def _split(pairs: data.Pairs, fraction: float, seed: int):
    idx = np.random.default_rng(seed).permutation(len(pairs))
    n_val = max(1, int(len(pairs) * fraction))
    part = lambda ids: data.Pairs([pairs.images[i] for i in ids], [pairs.captions[i] for i in ids],  # noqa: E731
                                  None if pairs.labels is None else [pairs.labels[i] for i in ids],
                                  pairs.classnames, pairs.source)
    return part(idx[n_val:]), part(idx[:n_val])


def load_pairs(args: DataArguments, seed: int):
    """(train, eval) pairs from CSV, a Hugging Face dataset, or the Fashion-MNIST default."""
    if args.train_data and args.dataset_name:
        raise ValueError("Give either --train_data (CSV/TSV) or --dataset_name, not both.")
    if args.train_data:
        read = lambda p: data.csv_pairs(p, args.csv_img_key, args.csv_caption_key, args.csv_separator,  # noqa: E731
                                        args.csv_label_key, args.max_bad_images)
        train = read(args.train_data)
        train, val = (train, read(args.val_data)) if args.val_data else _split(train, args.val_fraction, seed)
    elif args.dataset_name:
        read = lambda split: data.hf_pairs(args.dataset_name, split, args.image_column, args.caption_column,  # noqa: E731
                                           args.label_column, args.max_bad_images)
        train = read(args.train_split)
        train, val = (train, read(args.eval_split)) if args.eval_split else _split(train, args.val_fraction, seed)
    else:
        train = data.fashion_mnist_pairs("train", args.train_num_samples, seed)
        val = data.fashion_mnist_pairs("test", args.val_num_samples, seed + 1)
    return _cap(train, args.train_num_samples, seed), _cap(val, args.val_num_samples, seed)


def check_output_dir(path: str, overwrite: bool):
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise FileExistsError(f"Output directory {path} exists and is not empty; use --overwrite_output_dir to train "
                              "into it anyway, or choose another --output_dir.")


def build(model_args: ModelArguments, train: data.Pairs):
    clip, model_cfg, preprocess_cfg, tokenizer, preprocess, description = data.build_clip(
        model_args.model, model_args.pretrained, model_args.image_size, model_args.context_length)
    heads = None
    if model_args.mode == "classify":
        if train.labels is None or not train.classnames:
            raise ValueError("--mode classify needs class labels: the default data, --csv_label_key or --label_column.")
        heads = data.class_embeddings(clip, tokenizer, train.classnames)
    model = OpenCLIPForMaskSub(clip, model_args.mode, heads, model_args.mask_text, model_cfg, preprocess_cfg)
    return model, tokenizer, preprocess, description


def train_one(model_args, data_args, training_args, pairs) -> Dict:
    set_seed(training_args.seed)
    train_pairs, val_pairs = pairs
    if model_args.model_name_or_path:  # a transformers image-text model: its own loss, saved with save_pretrained
        return hf_clip.train_one(model_args, training_args, train_pairs, val_pairs)
    model, tokenizer, preprocess, description = build(model_args, train_pairs)
    with_labels = model_args.mode == "classify"
    train_set = data.ClipDataset(train_pairs, preprocess, tokenizer, with_labels)
    val_set = data.ClipDataset(val_pairs, preprocess, tokenizer, with_labels)
    trainer = MaskSubTrainer(model=model, args=training_args, train_dataset=train_set, callbacks=[ClampLogitScale()])
    result = trainer.train()
    trainer.save_model()
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()
    metrics = {}
    if trainer.is_world_process_zero():
        metrics = {f"eval_{k}": v for k, v in data.evaluate_clip(trainer.model, val_set, tokenizer).items()}
        metrics.update(eval_samples=len(val_set), train_runtime=result.metrics["train_runtime"])
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", {**metrics, "model": description, "data": train_pairs.source})
        trainer.model.save_open_clip(os.path.join(training_args.output_dir, "open_clip"))
    return metrics


def comparison_table(results: Dict[str, Dict], description: str, source: str) -> str:
    keys = [k for k in next(iter(results.values())) if k.startswith("eval_") and k != "eval_samples"]
    keys.append("train_runtime")
    lines = [f"model: {description}", f"data: {source}", "",
             "| run | " + " | ".join(k.replace("eval_", "") for k in keys) + " |",
             "|---" * (len(keys) + 1) + "|"]
    for name, metrics in results.items():
        cells = [f"{100 * metrics[k]:.1f}" if k != "train_runtime" else f"{metrics[k]:.0f} s" for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> Dict:
    model_args, data_args, run_args, training_args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO,
                        handlers=[logging.StreamHandler(sys.stdout)])
    transformers.utils.logging.set_verbosity_warning()
    check_model(model_args)
    if run_args.compare_baseline:
        if training_args.masksub_type == "none":
            raise ValueError("--compare_baseline trains a baseline beside MaskSub: give --masksub_type mask, drop or path.")
        runs = [(name, replace(training_args, output_dir=os.path.join(training_args.output_dir, name),
                               masksub_type=kind))
                for name, kind in (("baseline", "none"), (RUN_NAMES[training_args.masksub_type], training_args.masksub_type))]
    else:
        runs = [(None, training_args)]
    for _, args in runs:
        check_output_dir(args.output_dir, run_args.overwrite_output_dir)
    pairs = load_pairs(data_args, training_args.seed)
    logger.info("data: %s (%d train / %d eval pairs)", pairs[0].source, len(pairs[0]), len(pairs[1]))
    results = {}
    for name, args in runs:
        if name:
            logger.info("=== %s run (masksub_type=%s) -> %s", name, args.masksub_type, args.output_dir)
        results[name] = train_one(model_args, data_args, args, pairs)
    if not run_args.compare_baseline:
        return results[None]
    if training_args.process_index == 0:
        description = model_args.model_name_or_path or data.OFFLINE_MODELS.get(model_args.model, model_args.model)
        with open(os.path.join(training_args.output_dir, "comparison.json"), "w") as f:
            json.dump({"model": description, "data": pairs[0].source, "runs": results}, f, indent=2)
        print(comparison_table(results, description, pairs[0].source))
    return results


def check_model(model_args: ModelArguments):
    """An unknown model name is refused before any data is read."""
    if model_args.model_name_or_path:
        return hf_clip.check_model(model_args.model_name_or_path, model_args.mode)
    import open_clip

    name = model_args.model
    known = (name in data.OFFLINE_MODELS or name.endswith(".json") or name.startswith(("hf-hub:", "local-dir:"))
             or name in open_clip.list_models())
    if not known:
        raise ValueError(f"--model {name!r} is unknown: give an open_clip model name (open_clip.list_models()), a JSON "
                         f"model config file, local-dir:/path, or one of the offline models {', '.join(data.OFFLINE_MODELS)}.")
    if name.endswith(".json") and not os.path.isfile(name):
        raise FileNotFoundError(f"--model {name}: no such model config file.")


if __name__ == "__main__":
    from tasks.cli import run_cli

    run_cli(main, "run_clip.py")
