"""run_glue.py end to end on a tiny BERT (tests/conftest.py) and small files of real movie-review sentences.

Single-sentence files hold the real sentences with their real labels. The sentence-pair files
(MRPC-, STS-B- and MNLI-style) are BUILT by pairing real sentences and deriving a label from
their two human scores; they exercise the pair code paths, they are not real pair data.
"""
import csv
import json
import os

import pytest

import run_glue
from tasks.glue import GlueInputError, movie_split_files


def write(path, rows):
    path = str(path)
    if path.endswith(".csv"):
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        with open(path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return path


def single(movie_reviews, start, n):
    """Real sentences, SST-2 labels (score > 0), near-neutral ones skipped."""
    rows = [(t, s) for t, s in movie_reviews[start:start + 4 * n] if abs(s) >= 0.5]
    return [{"sentence": t, "label": int(s > 0)} for t, s in rows[:n]]


def pairs(movie_reviews, start, n, label):
    """BUILT pairs: sentence i with sentence i + 1 of the real data, label = label(score_i, score_j)."""
    rows = movie_reviews[start:start + n + 1]
    return [{"a": a, "b": b, "label": label(sa, sb)} for (a, sa), (b, sb) in zip(rows, rows[1:])]


def rename(rows, **names):
    return [{names.get(k, k): v for k, v in r.items()} for r in rows]


def same_polarity(sa, sb):
    return int((sa > 0) == (sb > 0))


def nli(sa, sb):  # entailment / neutral / contradiction from the two scores
    if abs(sa) < 0.5 or abs(sb) < 0.5:
        return "neutral"
    return "entailment" if (sa > 0) == (sb > 0) else "contradiction"


def similarity(sa, sb):  # STS-B-like 0..5 from the score gap
    return round(5.0 - 5.0 * abs(sa - sb) / 8.0, 3)


@pytest.fixture
def base_args(tiny_bert_dir, tmp_path):
    def make(out="out", steps=3):
        return ["--model_name_or_path", str(tiny_bert_dir), "--output_dir", str(tmp_path / out),
                "--cache_dir", str(tmp_path / "hf-cache"), "--max_steps", str(steps),
                "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "32",
                "--learning_rate", "1e-3", "--logging_steps", "1", "--save_strategy", "no", "--disable_tqdm", "True", "--seed", "0"]
    return make


@pytest.fixture
def sst2_files(movie_reviews, tmp_path):
    return {
        "train": write(tmp_path / "train.csv", single(movie_reviews, 0, 48)),
        "validation": write(tmp_path / "validation.csv", single(movie_reviews, 4000, 24)),
        "test": write(tmp_path / "test.csv", [{"sentence": r["sentence"], "label": -1}
                                              for r in single(movie_reviews, 8000, 10)]),
    }


def results(tmp_path, out="out"):
    with open(tmp_path / out / "all_results.json") as f:
        return json.load(f)


def files_args(files):
    return [item for split, path in files.items() for item in (f"--{split}_file", path)]


@pytest.mark.parametrize("masksub_type", ["none", "mask", "drop", "path"])
def test_single_sentence_task_each_masksub_type(masksub_type, base_args, sst2_files, tmp_path):
    run_glue.main(base_args() + files_args(sst2_files) + [
        "--task_name", "sst2", "--do_train", "--do_eval", "--do_predict", "--masksub_type", masksub_type])
    res = results(tmp_path)
    assert 0.0 <= res["eval_accuracy"] <= 1.0 and res["eval_samples"] == 24 and res["train_samples"] == 48
    state = json.load(open(tmp_path / "out" / "trainer_state.json"))
    assert state["global_step"] == 3
    logged = [h for h in state["log_history"] if "loss" in h]
    assert ("loss_sub" in logged[-1]) == (masksub_type != "none")  # the sub-branch ran exactly when asked
    # the unlabelled (-1) test set: predictions written as the HF script does, no test metrics
    lines = open(tmp_path / "out" / "predict_results_sst2.txt").read().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 11
    assert {line.split("\t")[1] for line in lines[1:]} <= {"negative", "positive"}
    assert not any(k.startswith("test_") for k in res)


def test_sentence_pair_task_mrpc(base_args, movie_reviews, tmp_path):
    names = {"a": "sentence1", "b": "sentence2"}
    train = write(tmp_path / "train.json", rename(pairs(movie_reviews, 0, 40, same_polarity), **names))
    val = write(tmp_path / "val.json", rename(pairs(movie_reviews, 5000, 20, same_polarity), **names))
    run_glue.main(base_args() + ["--task_name", "mrpc", "--train_file", train, "--validation_file", val,
                                 "--do_train", "--do_eval"])
    res = results(tmp_path)
    assert {"eval_accuracy", "eval_f1", "eval_combined_score"} <= set(res)
    assert res["eval_combined_score"] == pytest.approx((res["eval_accuracy"] + res["eval_f1"]) / 2)


def test_stsb_regression_uses_one_output_and_mse_sub_loss(base_args, movie_reviews, tmp_path):
    names = {"a": "sentence1", "b": "sentence2"}
    train = write(tmp_path / "train.csv", rename(pairs(movie_reviews, 0, 40, similarity), **names))
    val = write(tmp_path / "val.csv", rename(pairs(movie_reviews, 5000, 20, similarity), **names))
    test = write(tmp_path / "test.csv", rename(pairs(movie_reviews, 7000, 6, similarity), **names))
    run_glue.main(base_args() + ["--task_name", "stsb", "--train_file", train, "--validation_file", val,
                                 "--test_file", test, "--do_train", "--do_eval", "--do_predict"])
    res = results(tmp_path)
    assert {"eval_pearson", "eval_spearmanr", "eval_combined_score"} <= set(res)
    config = json.load(open(tmp_path / "out" / "config.json"))
    assert config["num_labels"] == 1 if "num_labels" in config else len(config["id2label"]) == 1
    assert config["problem_type"] == "regression"
    lines = open(tmp_path / "out" / "predict_results_stsb.txt").read().splitlines()[1:]
    assert len(lines) == 6 and all("." in line.split("\t")[1] for line in lines)  # scores, "%3.3f"
    assert "test_pearson" in res  # this test file is labelled, so its metrics are reported


def test_mnli_matched_and_mismatched(base_args, movie_reviews, tmp_path):
    names = {"a": "premise", "b": "hypothesis"}
    train = write(tmp_path / "train.json", rename(pairs(movie_reviews, 0, 48, nli), **names))
    val = write(tmp_path / "val.json", rename(pairs(movie_reviews, 5000, 20, nli), **names))
    val_mm = write(tmp_path / "val_mm.json", rename(pairs(movie_reviews, 9000, 14, nli), **names))
    test_mm = write(tmp_path / "test_mm.json", rename(pairs(movie_reviews, 9500, 5, nli), **names))
    run_glue.main(base_args() + ["--task_name", "mnli", "--train_file", train, "--validation_file", val,
                                 "--validation_mismatched_file", val_mm, "--test_file", val,
                                 "--test_mismatched_file", test_mm, "--do_train", "--do_eval", "--do_predict"])
    res = results(tmp_path)
    assert res["eval_samples"] == 20 and res["eval_samples_mm"] == 14
    assert 0 <= res["eval_accuracy"] <= 1 and 0 <= res["eval_accuracy_mm"] <= 1
    out = tmp_path / "out"
    assert len(open(out / "predict_results_mnli.txt").read().splitlines()) == 21
    mm = open(out / "predict_results_mnli-mm.txt").read().splitlines()
    assert len(mm) == 6 and {line.split("\t")[1] for line in mm[1:]} <= {"entailment", "neutral", "contradiction"}


def test_without_task_name_columns_and_labels_are_inferred(base_args, movie_reviews, tmp_path):
    rows = [{"text": r["sentence"], "label": ["neg", "pos"][r["label"]]} for r in single(movie_reviews, 0, 40)]
    train = write(tmp_path / "train.csv", rows[:30])
    val = write(tmp_path / "val.csv", rows[30:])
    run_glue.main(base_args() + ["--train_file", train, "--validation_file", val, "--test_file", val,
                                 "--do_train", "--do_eval", "--do_predict"])
    res = results(tmp_path)
    assert "eval_accuracy" in res and res["test_samples"] == 10  # labelled test file: metrics too
    config = json.load(open(tmp_path / "out" / "config.json"))
    assert config["id2label"] == {"0": "neg", "1": "pos"}
    assert {line.split("\t")[1] for line in open(tmp_path / "out" / "predict_results_glue.txt").read().splitlines()[1:]} <= {"neg", "pos"}


def test_a_changed_construction_builds_new_split_files(tmp_path, monkeypatch):
    import tasks.glue

    files = movie_split_files("movie-sentiment", root=tmp_path)
    monkeypatch.setattr(tasks.glue, "SPLIT_SIZES", {"validation": 900, "test": 1000})  # what a changed build does
    rebuilt = movie_split_files("movie-sentiment", root=tmp_path)
    assert rebuilt["train"] != files["train"] and sum(1 for _ in open(rebuilt["validation"])) < 900


def test_movie_sentiment_split_is_seeded_saved_and_shared(tmp_path):
    files = movie_split_files("movie-sentiment", root=tmp_path)
    stamp = {k: os.path.getmtime(v) for k, v in files.items()}
    assert movie_split_files("movie-sentiment", root=tmp_path) == files
    assert {k: os.path.getmtime(v) for k, v in files.items()} == stamp  # reused, not rewritten
    rows = {k: [json.loads(line) for line in open(v)] for k, v in files.items()}
    idx = {k: {r["idx"] for r in v} for k, v in rows.items()}
    assert not (idx["train"] & idx["validation"]) and not (idx["train"] & idx["test"])
    assert len(rows["train"]) + len(rows["validation"]) + len(rows["test"]) == 10072
    assert 0.45 < sum(r["label"] for r in rows["train"][:2000]) / 2000 < 0.55  # prefixes are not one class
    scores = movie_split_files("movie-sentiment-score", root=tmp_path)
    score_idx = {r["idx"] for r in map(json.loads, open(scores["validation"]))}
    assert idx["validation"] <= score_idx and len(score_idx) == 1000  # same sentences, neutral ones kept


def test_movie_pairs_are_built_within_each_split_labelled_by_the_first_snippet(base_args, tmp_path):
    from tasks.assets import movie_reviews

    score = dict(movie_reviews())
    files = movie_split_files("movie-pairs", root=tmp_path)
    assert movie_split_files("movie-pairs", root=tmp_path) == files
    split_sentences = {k: {r["sentence"] for r in map(json.loads, open(v))}
                       for k, v in movie_split_files("movie-sentiment", root=tmp_path).items()}
    for split, path in files.items():
        rows = [json.loads(line) for line in open(path)]
        assert {r["sentence1"] for r in rows} == split_sentences[split]  # each polar snippet once, first
        assert {r["sentence2"] for r in rows} <= split_sentences[split]  # no sentence crosses splits
        assert all(r["sentence1"] != r["sentence2"] and r["label"] == int(score[r["sentence1"]] > 0) for r in rows)
        second = [r["label"] == int(score[r["sentence2"]] > 0) for r in rows]
        assert 0.4 < sum(second) / len(second) < 0.6  # the second snippet says nothing about the label
    res = run_glue.main(base_args(steps=2) + ["--task_name", "movie-pairs", "--train_file", files["train"],
                                              "--validation_file", files["validation"], "--do_train", "--do_eval",
                                              "--max_train_samples", "32", "--max_eval_samples", "32",
                                              "--masksub_type", "mask"])
    assert {"eval_accuracy", "eval_f1"} <= set(res)


def test_movie_sentiment_score_trains_on_its_real_scores_minus_one_included(base_args, tmp_path):
    files = movie_split_files("movie-sentiment-score", root=tmp_path / "split")
    assert any(json.loads(line)["label"] == -1 for line in open(files["train"]))  # a real score, not GLUE's marker
    res = run_glue.main(base_args(steps=1) + ["--task_name", "movie-sentiment-score", "--train_file", files["train"],
                                              "--validation_file", files["validation"], "--do_train", "--do_eval",
                                              "--max_train_samples", "64", "--max_eval_samples", "64"])
    assert {"eval_pearson", "eval_spearmanr"} <= set(res)


def test_compare_baseline_two_runs_side_by_side(base_args, sst2_files, tmp_path, capsys):
    runs = run_glue.main(base_args(steps=2) + files_args(sst2_files) + [
        "--task_name", "sst2", "--do_train", "--do_eval", "--compare_baseline", "--masksub_type", "mask"])
    assert set(runs) == {"baseline", "masksub"}
    for name in runs:
        assert results(tmp_path, f"out/{name}")["eval_accuracy"] == runs[name]["eval_accuracy"]
    assert json.load(open(tmp_path / "out" / "comparison.json")) == runs
    table = capsys.readouterr().out
    assert "| baseline |" in table and "| masksub |" in table and "eval_accuracy" in table
    assert (tmp_path / "out" / "comparison.png").stat().st_size > 10_000  # the same plot as run_image's
    assert f"plot: {tmp_path / 'out' / 'comparison.png'}" in table


def test_refuses_non_empty_output_dir_and_resumes_from_checkpoint(base_args, sst2_files, tmp_path):
    common = files_args(sst2_files) + ["--task_name", "sst2", "--do_train"]
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("keep me")
    with pytest.raises(GlueInputError, match="not empty.*--overwrite_output_dir"):
        run_glue.main(base_args() + common)
    args = base_args(out="ckpt", steps=2) + common + ["--save_strategy", "steps", "--save_steps", "2"]
    run_glue.main(args)
    assert (tmp_path / "ckpt" / "checkpoint-2").is_dir()
    run_glue.main(args[:args.index("--max_steps")] + ["--max_steps", "4"] + args[args.index("--max_steps") + 2:])
    state = json.load(open(tmp_path / "ckpt" / "trainer_state.json"))
    assert state["global_step"] == 4 and [h["step"] for h in state["log_history"] if "train_runtime" in h] == [4]
    run_glue.main(base_args() + common + ["--overwrite_output_dir"])  # explicit: allowed
    assert (tmp_path / "out" / "all_results.json").exists()


def test_help_lists_masksub_flags(capsys):
    with pytest.raises(SystemExit):
        run_glue.main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--masksub_type", "--masksub_ratio", "--task_name", "--overwrite_output_dir", "--compare_baseline"):
        assert flag in text


# ---- bad input: one clear line, no traceback -------------------------------------------------
def one_line_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_glue.cli(argv)
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("run_glue.py: error: ")
    return message


def test_unknown_task_lists_valid_ones(base_args, capsys):
    message = one_line_error(base_args() + ["--task_name", "sst-2", "--do_train"], capsys)
    assert "'sst-2'" in message and "sst2" in message and "movie-sentiment" in message


def test_file_without_expected_columns_names_them(base_args, movie_reviews, tmp_path, capsys):
    train = write(tmp_path / "train.csv", [{"text": r["sentence"], "label": r["label"]} for r in single(movie_reviews, 0, 8)])
    message = one_line_error(base_args() + ["--task_name", "mrpc", "--train_file", train, "--do_train"], capsys)
    assert "'sentence1'" in message and "'sentence2'" in message and "'text'" in message


def test_labels_outside_num_labels(base_args, movie_reviews, tmp_path, capsys):
    rows = single(movie_reviews, 0, 8)
    rows[3]["label"] = 2
    train = write(tmp_path / "train.csv", rows)
    message = one_line_error(base_args() + ["--task_name", "sst2", "--train_file", train, "--do_train"], capsys)
    assert "label(s) 2" in message and "2 labels" in message


def test_regression_task_with_classification_head(tiny_bert_dir, movie_reviews, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    head = tmp_path / "three-way"
    AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=3).save_pretrained(head)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(head)
    train = write(tmp_path / "train.csv", rename(pairs(movie_reviews, 0, 8, similarity), a="sentence1", b="sentence2"))
    message = one_line_error(["--model_name_or_path", str(head), "--output_dir", str(tmp_path / "o"), "--task_name",
                              "stsb", "--train_file", train, "--do_train"], capsys)
    assert "regression" in message and "3-label classification head" in message and "--ignore_mismatched_sizes" in message


def test_bad_masksub_ratio_is_one_line(base_args, capsys):
    message = one_line_error(base_args() + ["--task_name", "sst2", "--masksub_ratio", "1.5"], capsys)
    assert "--masksub_ratio" in message


def test_one_json_file_holds_all_arguments(tiny_bert_dir, sst2_files, tmp_path):
    """As the HF scripts: `run_glue.py args.json` instead of flags (here: evaluate the untrained model)."""
    config = {"model_name_or_path": str(tiny_bert_dir), "task_name": "sst2", "validation_file": sst2_files["validation"],
              "do_eval": True, "output_dir": str(tmp_path / "out"), "masksub_type": "none", "disable_tqdm": True}
    path = tmp_path / "args.json"
    path.write_text(json.dumps(config))
    metrics = run_glue.main([str(path)])
    assert results(tmp_path)["eval_samples"] == 24 and metrics["eval_accuracy"] == results(tmp_path)["eval_accuracy"]
    assert not (tmp_path / "out" / "train_results.json").exists()
