"""GLUE tasks for run_glue.py: input columns, label sets, metrics, and the offline movie-review tasks.

Metrics are computed with scikit-learn and scipy because `evaluate.load("glue", ...)` fetches
its script from the hub; the keys and definitions are GLUE's (and the HF script's).
"""
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef


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
}


def get_task(name: str) -> GlueTask:
    if name not in TASKS:
        raise GlueInputError(f"unknown --task_name {name!r}; choose one of {', '.join(TASKS)}.")
    return TASKS[name]


# ---- metrics ----------------------------------------------------------------------------------
def accuracy(preds, labels) -> float:
    return float((np.asarray(preds) == np.asarray(labels)).mean())


def f1(preds, labels) -> float:
    return float(f1_score(labels, preds))


def matthews_correlation(preds, labels) -> float:
    return float(matthews_corrcoef(labels, preds))


def pearson(preds, labels) -> float:
    return float(pearsonr(preds, labels)[0])


def spearman(preds, labels) -> float:
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
    """{split: jsonl path} for movie-sentiment(-score): one seeded split of all snippets, written
    once under the cache directory and reused, so every run and both variants see the same sentences."""
    from tasks.assets import cache_dir, movie_reviews

    get_task(task_name)
    out = Path(root or cache_dir()) / "glue" / task_name
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
        examples = []
        for i in index:
            text, score = rows[i]
            if task_name == "movie-sentiment":
                if abs(score) < MIN_ABS_SCORE:
                    continue
                examples.append({"idx": i, "sentence": text, "label": int(score > 0)})
            else:
                examples.append({"idx": i, "sentence": text, "label": score})
        tmp = files[split] + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(e, ensure_ascii=False) + "\n" for e in examples)
        os.replace(tmp, files[split])
    return files


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
