"""GLUE metrics (tasks/glue.py) against values computed by hand on small fixed inputs."""
import math

import numpy as np
import pytest
from transformers import EvalPrediction

from tasks.glue import TASKS, GlueInputError, compute_metrics_fn, get_task, glue_metrics

# preds vs labels: TP=2, TN=1, FP=1, FN=0
PREDS, LABELS = [1, 0, 1, 1], [1, 0, 0, 1]
ACCURACY = 3 / 4
F1 = 2 * (2 / 3) * 1 / (2 / 3 + 1)  # precision 2/3, recall 1 -> 0.8
MATTHEWS = (2 * 1 - 1 * 0) / math.sqrt((2 + 1) * (2 + 0) * (1 + 1) * (1 + 0))  # 2 / sqrt(12)
# x vs y = x^2: monotone (Spearman 1) but not linear; Pearson = 25 / sqrt(5 * 129)
X, Y = [1.0, 2.0, 3.0, 4.0], [1.0, 4.0, 9.0, 16.0]
PEARSON, SPEARMAN = 25 / math.sqrt(5 * 129), 1.0


def test_accuracy_and_f1_with_combined_score_for_mrpc_and_qqp():
    for task in ("mrpc", "qqp"):
        result = glue_metrics(task, PREDS, LABELS)
        assert result["accuracy"] == pytest.approx(ACCURACY)
        assert result["f1"] == pytest.approx(0.8) == pytest.approx(F1)
        assert result["combined_score"] == pytest.approx((ACCURACY + F1) / 2)
        assert set(result) == {"accuracy", "f1", "combined_score"}


def test_matthews_correlation_for_cola():
    result = glue_metrics("cola", PREDS, LABELS)
    assert result == {"matthews_correlation": pytest.approx(MATTHEWS)}
    assert MATTHEWS == pytest.approx(0.57735, abs=1e-5)


def test_pearson_spearman_and_combined_score_for_stsb():
    result = glue_metrics("stsb", X, Y)
    assert result["pearson"] == pytest.approx(PEARSON) and PEARSON == pytest.approx(0.98437, abs=1e-5)
    assert result["spearmanr"] == pytest.approx(SPEARMAN)
    assert result["combined_score"] == pytest.approx((PEARSON + SPEARMAN) / 2)


@pytest.mark.parametrize("task", ["sst2", "mnli", "qnli", "rte", "wnli", "movie-sentiment"])
def test_accuracy_only_tasks_have_no_combined_score(task):
    assert glue_metrics(task, PREDS, LABELS) == {"accuracy": pytest.approx(ACCURACY)}


def test_without_a_task_mse_or_accuracy_as_the_hf_script():
    assert glue_metrics(None, [1.0, 2.0], [1.0, 4.0], is_regression=True) == {"mse": pytest.approx(2.0)}
    assert glue_metrics(None, PREDS, LABELS) == {"accuracy": pytest.approx(ACCURACY)}


def test_compute_metrics_takes_argmax_of_logits_or_the_squeezed_score():
    logits = np.array([[0.1, 0.9], [2.0, -1.0], [0.0, 3.0], [-1.0, 1.0]])  # argmax = PREDS
    result = compute_metrics_fn("mrpc", False)(EvalPrediction(predictions=logits, label_ids=np.array(LABELS)))
    assert result["accuracy"] == pytest.approx(ACCURACY) and result["f1"] == pytest.approx(F1)
    scores = np.array(X)[:, None]
    result = compute_metrics_fn("stsb", True)(EvalPrediction(predictions=scores, label_ids=np.array(Y)))
    assert result["pearson"] == pytest.approx(PEARSON) and result["spearmanr"] == pytest.approx(SPEARMAN)


def test_task_table_matches_glue():
    assert {"cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"} <= set(TASKS)
    assert get_task("stsb").is_regression and get_task("stsb").num_labels == 1
    assert get_task("mnli").num_labels == 3 and get_task("mnli").keys == ("premise", "hypothesis")
    assert get_task("movie-sentiment-score").is_regression
    with pytest.raises(GlueInputError, match="unknown --task_name 'sst-2'.*cola, sst2"):
        get_task("sst-2")
