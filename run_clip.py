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
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from transformers import set_seed

from masksub_hf import MaskSubConfig
from masksub_hf.models.open_clip_training import MODES, ClampLogitScale, OpenCLIPForMaskSub
from tasks import clip as data
from tasks import clip_transformers, compare
from tasks.cli import (ArgumentParser, check_positive, check_training_args, parse_script_args, resume_checkpoint, run_cli,
                       script_parser, setup_logging)

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
EMBEDDED_DEFAULTS = {"max_steps": 100, "context_length": 16, "train_num_samples": 8000, "val_num_samples": 1000,
                     "compare_baseline": True}


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
    csv_separator: Optional[str] = field(default=None, metadata={
        "help": "Column separator of the CSV/TSV files (default: detected from the header, tab first, as open_clip's "
                "tab-separated files and HF's comma-separated ones both read)."})
    csv_encoding: Optional[str] = field(default=None, metadata={
        "help": "Text encoding of the CSV/TSV files (e.g. latin-1). Default: UTF-8, or UTF-16/UTF-8 when the file "
                "starts with a byte-order mark."})
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
    compare_baseline: bool = field(default=False, metadata={
        "help": "Also train the plain baseline (--masksub_type none) with the same budget, each run in its own "
                "subdirectory, and print both results side by side. On by default when no data is given."})


def parse_args(argv: Optional[List[str]] = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    return parse_script_args(build_parser(), argv,
                             lambda given: {} if given & {"train_data", "dataset_name"} else EMBEDDED_DEFAULTS)


def build_parser() -> ArgumentParser:
    return script_parser((ModelArguments, DataArguments, RunArguments, MaskSubConfig), __doc__, __file__,
                         {**DEFAULTS, "output_dir": DEFAULT_OUTPUT_DIR}, EMBEDDED_DEFAULTS,
                         "With no --train_data or --dataset_name")


def check_output_dir(path: str, overwrite: bool, resume_from_checkpoint: Optional[str] = None) -> Optional[str]:
    """The checkpoint to resume from (tasks/cli.py: the last complete one, as rerunning a command should);
    a non-empty directory without one is refused unless --overwrite_output_dir."""
    try:
        return resume_checkpoint(path, resume_from_checkpoint, overwrite)
    except ValueError as err:
        raise FileExistsError(str(err)) from None


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


def train_one(model_args, data_args, training_args, pairs, resume: Optional[str] = None) -> Dict:
    set_seed(training_args.seed)
    train_pairs, val_pairs = pairs
    if model_args.model_name_or_path:  # a transformers image-text model: its own loss, saved with save_pretrained
        return clip_transformers.train_one(model_args, training_args, train_pairs, val_pairs, resume)
    model, tokenizer, preprocess, description = build(model_args, train_pairs)
    with_labels = model_args.mode == "classify"
    train_set = data.ClipDataset(train_pairs, preprocess, tokenizer, with_labels)
    val_set = data.ClipDataset(val_pairs, preprocess, tokenizer, with_labels)
    trainer = data.CLIPEvalTrainer(model=model, args=training_args, train_dataset=train_set, eval_dataset=val_set,
                                   callbacks=[ClampLogitScale()],
                                   evaluate_fn=lambda m: data.evaluate_clip(m, val_set, tokenizer))
    metrics = data.train_and_evaluate(trainer, resume, len(val_set), description, train_pairs.source)
    if trainer.is_world_process_zero():
        trainer.model.save_open_clip(os.path.join(training_args.output_dir, "open_clip"))
    return metrics


def main(argv: Optional[List[str]] = None) -> Dict:
    model_args, data_args, run_args, training_args = parse_args(argv)
    check_training_args(training_args)
    for flag in ("train_num_samples", "val_num_samples"):
        check_positive(getattr(data_args, flag), flag)
    if not 0 < data_args.val_fraction < 1:
        raise ValueError(f"--val_fraction must be between 0 and 1; got {data_args.val_fraction}.")
    if not 0 <= data_args.max_bad_images < 1:
        raise ValueError(f"--max_bad_images is a share in [0, 1); got {data_args.max_bad_images}.")
    setup_logging(training_args)
    check_model(model_args)
    compared = compare.runs(training_args, run_args.compare_baseline)
    resumes = {args.output_dir: check_output_dir(args.output_dir, run_args.overwrite_output_dir, args.resume_from_checkpoint)
               for _, args in compared}
    pairs = data.load_pairs(data_args, training_args.seed)
    data.check_pairs(pairs, model_args.mode, training_args)
    logger.info("data: %s (%d train / %d eval pairs)", pairs[0].source, len(pairs[0]), len(pairs[1]))
    if data_args.train_data or data_args.dataset_name:
        csv = bool(data_args.train_data)
        label = data_args.csv_label_key if csv else data_args.label_column
        classes = pairs[0].classnames
        logger.info("columns: image %r, caption %r%s", data_args.csv_img_key if csv else data_args.image_column,
                    data_args.csv_caption_key if csv else data_args.caption_column,
                    f", label {label!r}: " + ", ".join(f"{c!r}->{i}" for i, c in enumerate(classes)) if label else "")
    description = model_args.model_name_or_path or data.OFFLINE_MODELS.get(model_args.model, model_args.model)
    return compare.run_all(compared, lambda args: train_one(model_args, data_args, args, pairs, resumes[args.output_dir]),
                           f"{description} on {pairs[0].source}", extra={"model": description, "data": pairs[0].source})


def check_model(model_args: ModelArguments):
    """An unknown model name is refused before any data is read."""
    if model_args.model_name_or_path:
        return clip_transformers.check_model(model_args.model_name_or_path, model_args.mode)
    import open_clip

    name = model_args.model
    known = (name in data.OFFLINE_MODELS or name.endswith(".json") or name.startswith(("hf-hub:", "local-dir:"))
             or name in open_clip.list_models())
    if not known:
        raise ValueError(f"--model {name!r} is unknown: give an open_clip model name (open_clip.list_models()), a JSON "
                         f"model config file, local-dir:/path, or one of the offline models {', '.join(data.OFFLINE_MODELS)}.")
    if name.endswith(".json") and not os.path.isfile(name):
        raise FileNotFoundError(f"--model {name}: no such model config file.")


def cli(argv: Optional[List[str]] = None):
    """Bad input ends in one line on stderr and exit status 2, not a traceback (tasks/cli.py; --traceback shows it)."""
    return run_cli(main, "run_clip.py", argv)


if __name__ == "__main__":
    cli()
