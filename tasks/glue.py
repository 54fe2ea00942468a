"""GLUE tasks for run_glue.py: input columns, label sets, metrics, the offline movie-review tasks, and reading
the data and the model with the checks each needs (the script itself is arguments, one run and main).

Metrics are computed with scikit-learn and scipy because `evaluate.load("glue", ...)` fetches
its script from the hub; the keys and definitions are GLUE's (and the HF script's).
"""
import hashlib
import inspect
import json
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import datasets
import numpy as np
from datasets import load_dataset
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from masksub_hf.models.hf_text import TOKENIZER_FILES
from tasks.cli import warn
from tasks.files import SEPARATORS, read_text, rows_against_lines, table_layout

logger = logging.getLogger(__name__)


class GlueInputError(ValueError):
    """Bad user input (task name, files, columns, labels, model head): shown as one line, no traceback."""


@dataclass(frozen=True)
class GlueTask:
    keys: Tuple[str, Optional[str]]  # input text columns (second is None for single-sentence tasks)
    labels: Optional[Tuple[str, ...]]  # label names in id order; None for regression
    metrics: Tuple[str, ...]  # metric keys GLUE reports for the task
    hub: bool = True  # on the hub as nyu-mll/glue; False for the offline movie-review tasks

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)


TASKS: Dict[str, GlueTask] = {
    "cola": GlueTask(("sentence", None), ("unacceptable", "acceptable"), ("matthews_correlation",)),
    "sst2": GlueTask(("sentence", None), ("negative", "positive"), ("accuracy",)),
    "mrpc": GlueTask(("sentence1", "sentence2"), ("not_equivalent", "equivalent"), ("accuracy", "f1")),
    "qqp": GlueTask(("question1", "question2"), ("not_duplicate", "duplicate"), ("accuracy", "f1")),
    "stsb": GlueTask(("sentence1", "sentence2"), None, ("pearson", "spearmanr")),
    "mnli": GlueTask(("premise", "hypothesis"), ("entailment", "neutral", "contradiction"), ("accuracy",)),
    "qnli": GlueTask(("question", "sentence"), ("entailment", "not_entailment"), ("accuracy",)),
    "rte": GlueTask(("sentence1", "sentence2"), ("entailment", "not_entailment"), ("accuracy",)),
    "wnli": GlueTask(("sentence1", "sentence2"), ("not_entailment", "entailment"), ("accuracy",)),
    # Real Rotten Tomatoes snippets with human scores (offline-assets.md): SST-2-like and STS-B-like.
    "movie-sentiment": GlueTask(("sentence", None), ("negative", "positive"), ("accuracy",), hub=False),
    "movie-sentiment-score": GlueTask(("sentence", None), None, ("pearson", "spearmanr"), hub=False),
    # built pairs (no package ships real sentence pairs): a snippet and a distractor snippet; is the first positive?
    "movie-pairs": GlueTask(("sentence1", "sentence2"), ("negative", "positive"),
                            ("accuracy", "f1"), hub=False),
}


def get_task(name: str) -> GlueTask:
    if name not in TASKS:
        raise GlueInputError(f"unknown --task_name {name!r}; choose one of {', '.join(TASKS)}.")
    return TASKS[name]


# ---- metrics ----------------------------------------------------------------------------------
def accuracy(preds, labels) -> float:
    return float((np.asarray(preds) == np.asarray(labels)).mean())


# scipy and sklearn are imported where a metric needs them: together ~0.7 s of every start, --help included.
def f1(preds, labels) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(labels, preds))


def matthews_correlation(preds, labels) -> float:
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(labels, preds))


def pearson(preds, labels) -> float:
    from scipy.stats import pearsonr

    return float(pearsonr(preds, labels)[0])


def spearman(preds, labels) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(preds, labels)[0])


METRICS = {
    "accuracy": accuracy,
    "f1": f1,
    "matthews_correlation": matthews_correlation,
    "pearson": pearson,
    "spearmanr": spearman,
    "mse": lambda p, l: float(((np.asarray(p) - np.asarray(l)) ** 2).mean()),
}


def glue_metrics(task_name: Optional[str], preds, labels, is_regression: bool = False) -> Dict[str, float]:
    """The HF script's metric dict: the task's GLUE metrics, plus `combined_score` (their mean) when
    there are several. Without a task: mse for regression, accuracy otherwise."""
    names = get_task(task_name).metrics if task_name else (("mse",) if is_regression else ("accuracy",))
    result = {name: METRICS[name](preds, labels) for name in names}
    if len(result) > 1:
        result["combined_score"] = float(np.mean(list(result.values())))
    return result


def compute_metrics_fn(task_name: Optional[str], is_regression: bool):
    """A Trainer compute_metrics: logits -> predictions (argmax, or the squeezed score) -> glue_metrics."""

    def compute_metrics(p):
        logits = p.predictions[0] if isinstance(p.predictions, tuple) else p.predictions
        preds = np.squeeze(logits) if is_regression else np.argmax(logits, axis=1)
        return glue_metrics(task_name, preds, p.label_ids, is_regression)

    return compute_metrics


# ---- the offline movie-review tasks -------------------------------------------------------------
SPLIT_SEED = 20140601  # fixed: the split is part of the task, not of a training run
SPLIT_SIZES = {"validation": 1000, "test": 1000}  # of the 10,605 snippets; the rest is train
MIN_ABS_SCORE = 0.5  # binary task: drop near-neutral snippets, as offline-assets.md describes


def movie_split_files(task_name: str, root: Optional[Path] = None) -> Dict[str, str]:
    """{split: jsonl path} for movie-sentiment(-score) and movie-pairs: one seeded split of all snippets, written
    once under the cache directory and reused, so every run and both variants see the same sentences."""
    from tasks.assets import cache_dir, movie_reviews

    get_task(task_name)
    # the construction in the name: a changed movie_examples builds new files instead of reading the old ones
    build = hashlib.sha256(f"{SPLIT_SEED} {SPLIT_SIZES} {inspect.getsource(movie_examples)}".encode()).hexdigest()
    out = Path(root or cache_dir()) / "glue" / f"{task_name}-{build[:10]}"
    files = {split: str(out / f"{split}.jsonl") for split in ("train", "validation", "test")}
    if all(os.path.exists(f) for f in files.values()):
        return files
    rows = movie_reviews()
    order = list(range(len(rows)))
    random.Random(SPLIT_SEED).shuffle(order)
    n_val, n_test = SPLIT_SIZES["validation"], SPLIT_SIZES["test"]
    # keep the shuffled order: the source file is sorted by score, and --max_train_samples takes a prefix
    parts = {"validation": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}
    out.mkdir(parents=True, exist_ok=True)
    for split, index in parts.items():
        examples = movie_examples(task_name, rows, index, random.Random(f"{SPLIT_SEED}-{split}"))
        tmp = files[split] + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(e, ensure_ascii=False) + "\n" for e in examples)
        os.replace(tmp, files[split])
    return files


def movie_examples(task_name: str, rows, index: List[int], rng: random.Random) -> List[dict]:
    """One split's examples. movie-pairs pairs each snippet of movie-sentiment (|score| >= MIN_ABS_SCORE) with a random
    other one of the same split (so no sentence crosses splits): is the FIRST positive? The second is a distractor
    of either sentiment, so the answer is in which segment a sentiment sits, carried by the pair path (token type
    ids, positions). (Pairs of any two snippets, "which is the more positive?", stayed at chance on 400 pairs.)
    """
    polar = [i for i in index if abs(rows[i][1]) >= MIN_ABS_SCORE]
    if task_name == "movie-sentiment":
        return [{"idx": i, "sentence": rows[i][0], "label": int(rows[i][1] > 0)} for i in polar]
    if task_name == "movie-sentiment-score":
        return [{"idx": i, "sentence": rows[i][0], "label": rows[i][1]} for i in index]
    examples = []
    for i in polar:
        j = i
        while j == i:
            j = rng.choice(polar)
        examples.append({"idx": i, "sentence1": rows[i][0], "sentence2": rows[j][0], "label": int(rows[i][1] > 0)})
    return examples


# ---- columns and labels of local files ----------------------------------------------------------
KNOWN_PAIRS = tuple(dict.fromkeys(t.keys for t in TASKS.values() if t.keys[1] is not None))


def infer_text_keys(columns: List[str], text_columns: Optional[List[str]] = None,
                    source: str = "the data") -> Tuple[str, Optional[str]]:
    """Without a task name: the input text column(s). `columns` are the text-typed (string) columns
    other than the label; numbers (ids, scores) are never text. sentence1/sentence2 (or another GLUE
    pair) make a pair, a single text column a single sentence; more than one text column that is not
    a known pair is ambiguous (a metadata column must not become a second sentence): name them."""
    if text_columns:
        if len(text_columns) > 2:
            raise GlueInputError(f"--text_column_names takes one column or two (a pair); got {', '.join(text_columns)}.")
        return (text_columns[0], text_columns[1] if len(text_columns) == 2 else None)
    candidates = [c for c in columns if c != "idx"]
    for pair in KNOWN_PAIRS:
        if all(k in candidates for k in pair):
            return pair
    if not candidates:
        raise GlueInputError(f"{source} has no text column besides the label; name it with --text_column_names.")
    if len(candidates) == 1:
        return candidates[0], None
    raise GlueInputError(
        f"{source} has several text columns ({', '.join(candidates)}) and none is a known pair (sentence1/sentence2); "
        f"say which are the input with --text_column_names {candidates[0]} (one sentence) or "
        f"--text_column_names {candidates[0]},{candidates[1]} (a pair).")


def check_columns(split: str, source: str, columns: List[str], keys, needs_label: bool) -> None:
    wanted = [k for k in keys if k] + (["label"] if needs_label else [])
    missing = [k for k in wanted if k not in columns]
    if missing:
        hint = (" Rename the column in the file, or pass --label_column_name." if missing == ["label"] else
                " Rename the columns in the file, or pass --text_column_names.")
        raise GlueInputError(
            f"{source} ({split}) has no column {', '.join(repr(m) for m in missing)}; expected "
            f"{', '.join(repr(w) for w in wanted)}, found {', '.join(repr(c) for c in columns)}.{hint}"
        )


def label_to_id_map(labels: Optional[Tuple[str, ...]]) -> Optional[Dict]:
    """Ids for a task's labels, accepting the ids themselves and the label names (mrpc: 'equivalent')."""
    if labels is None:
        return None
    mapping = {i: i for i in range(len(labels))}
    mapping.update({name: i for i, name in enumerate(labels)})
    mapping.update({str(i): i for i in range(len(labels))})
    return mapping


def _is_number(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    try:
        float(str(value))
        return True
    except ValueError:
        return False


def _show(values, n=6) -> str:
    values = list(values)
    return ", ".join(repr(v) for v in values[:n]) + (", ..." if len(values) > n else "")


def check_unlabelled(split: str, source: str, values: List, is_regression: Optional[bool] = None) -> None:
    """-1 is GLUE's marker of an unlabelled test row; None/empty is a missing label. Neither can be trained
    or evaluated on. Among regression scores -1 is a real score, so there only a split that is -1 throughout
    (GLUE's STS-B test split) is refused; `is_regression` None: regression when a label is a non-integer number."""
    missing = sum(v is None or (isinstance(v, str) and not v.strip()) for v in values)
    minus = sum(v in (-1, "-1") and not isinstance(v, bool) for v in values)
    if missing:
        raise GlueInputError(f"{source} ({split}) has {missing} row(s) with an empty label; fill them in or remove them.")
    if is_regression is None:
        is_regression = any(isinstance(v, float) and not v.is_integer() for v in values)
    if minus and (not is_regression or minus == len(values)):
        raise GlueInputError(f"{source} ({split}) has {minus} row(s) labelled -1, GLUE's marker of unlabelled test "
                             "rows; remove them, or give that file as --test_file.")


def infer_labels(values: List, source: str, problem_type: Optional[str] = None):
    """(is_regression, label_list) from the training labels, refusing what is ambiguous: ids mixed with
    names, class ids written as floats, fewer than two classes."""
    distinct = sorted(set(values), key=lambda v: (str(type(v)), v))
    numeric = [v for v in distinct if _is_number(v)]
    names = [v for v in distinct if not _is_number(v)]
    if numeric and names:
        raise GlueInputError(f"{source} mixes class ids ({_show(numeric)}) and class names ({_show(names)}) in its "
                             "labels, which would make each class two; write every label one way.")
    floats = all(isinstance(v, float) for v in distinct) and bool(distinct)
    integral = floats and all(float(v).is_integer() for v in distinct)
    if problem_type == "regression":
        if names:
            raise GlueInputError(f"--problem_type regression needs numeric labels; {source} has {_show(names)}.")
        if len(distinct) < 2:
            raise GlueInputError(f"{source}: every label is {distinct[0]!r}; there is nothing to fit.")
        return True, None
    if floats and not integral and problem_type is None:
        if len(distinct) < 2:
            raise GlueInputError(f"{source}: every label is {distinct[0]!r}; there is nothing to fit.")
        return True, None
    if floats and not integral:
        raise GlueInputError(f"--problem_type {problem_type} needs class labels; {source} has fractional labels "
                             f"({_show(distinct)}).")
    if len(distinct) < 2:
        raise GlueInputError(f"{source} has a single class ({distinct[0]!r} in every row); a classifier needs at "
                             "least two classes in the training data.")
    if integral and problem_type is None:
        raise GlueInputError(
            f"{source} has labels {_show(distinct)}: class ids written as floats, or regression targets? Pass "
            "--problem_type single_label_classification or --problem_type regression.")
    if integral:
        distinct = sorted({int(v) for v in distinct})
    return False, tuple(distinct)


def check_labels(split: str, source: str, values, label_to_id: Optional[Dict], num_labels: int, what: str) -> None:
    """Every label must be one the head can predict; -1 marks an unlabelled test example (GLUE's convention)."""
    if label_to_id is None:  # regression
        bad = [v for v in values if not _is_number(v)]
        if bad:
            raise GlueInputError(f"{source} ({split}): {what} is regression but has non-numeric labels, e.g. {bad[0]!r}.")
        return
    bad = sorted({v for v in values if v not in label_to_id and not (split.startswith("test") and v in (-1, "-1"))},
                 key=str)
    if bad:
        valid = ", ".join(repr(k) for k in label_to_id if not (isinstance(k, str) and k.isdigit()))
        unseen = "" if what != "the training data" else (
            " A class the training data never shows cannot be learnt: remove those rows or add training examples.")
        raise GlueInputError(
            f"{source} ({split}) has label(s) {', '.join(map(repr, bad[:5]))} outside {what}'s {num_labels} "
            f"labels ({valid}).{unseen}"
        )


def empty_texts(values) -> List[int]:
    """Row numbers (0-based) whose text is missing or only whitespace."""
    return [i for i, v in enumerate(values) if v is None or not str(v).strip()]


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


def tokenize_splits(raw, keys, tokenizer, model_config, data_args, training_args, is_regression: bool,
                    label_to_id) -> Dict:
    """{split: tokenized dataset}, each truncated to its --max_*_samples first: the HF script's preprocessing, with
    labels as a new `labels` column (datasets keeps an existing column's type, a csv's strings)."""
    max_seq_length = max_length(data_args, tokenizer, model_config, pair=keys[1] is not None)
    padding = "max_length" if data_args.pad_to_max_length else False

    def preprocess(examples):
        texts = (examples[keys[0]],) if keys[1] is None else (examples[keys[0]], examples[keys[1]])
        result = tokenizer(*texts, padding=padding, max_length=max_seq_length, truncation=True)
        if "label" in examples:
            if is_regression:
                result["labels"] = [float(v) for v in examples["label"]]
            else:
                result["labels"] = [-1 if v == -1 else label_to_id[v] for v in examples["label"]]
        return result

    limits = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples,
              "validation_mismatched": data_args.max_eval_samples, "test": data_args.max_predict_samples,
              "test_mismatched": data_args.max_predict_samples}
    with training_args.main_process_first(desc="dataset map pre-processing"):
        return {split: (ds.select(range(min(limits[split], len(ds)))) if limits[split] is not None else ds).map(
                    preprocess, batched=True, load_from_cache_file=not data_args.overwrite_cache,
                    remove_columns=ds.column_names, desc=f"Running tokenizer on {split}")
                for split, ds in raw.items()}
