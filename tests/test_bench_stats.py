"""The benchmark statistics (bench/stats.py) against values computed by hand."""
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import stats  # noqa: E402

T975_DF4 = 2.7764451  # Student t quantile 0.975, 4 degrees of freedom (tables)
T975_DF2 = 4.3026527


def test_paired_ci_five_seeds():
    # differences 1..5: mean 3, sample std sqrt(2.5), half width t * std / sqrt(5)
    ci = stats.paired_ci([11, 12, 13, 14, 15], [10, 10, 10, 10, 10])
    half = T975_DF4 * math.sqrt(2.5) / math.sqrt(5)
    assert ci["n"] == 5
    assert ci["mean"] == pytest.approx(3.0)
    assert ci["std"] == pytest.approx(math.sqrt(2.5))
    assert ci["low"] == pytest.approx(3.0 - half) and ci["low"] == pytest.approx(1.03676, abs=1e-5)
    assert ci["high"] == pytest.approx(4.96324, abs=1e-5)
    assert stats.verdict(ci) == "better (CI excludes 0)"
    assert stats.verdict(ci, higher_is_better=False) == "worse (CI excludes 0)"


def test_paired_ci_including_zero_is_not_established():
    # differences 0.5, -0.5, 1.0: mean 1/3, variance (1/36 + 25/36 + 16/36) / 2 = 7/12
    ci = stats.paired_ci([1.5, 0.5, 3.0], [1.0, 1.0, 2.0])
    half = T975_DF2 * math.sqrt(7 / 12) / math.sqrt(3)
    assert ci["mean"] == pytest.approx(1 / 3)
    assert (ci["low"], ci["high"]) == (pytest.approx(1 / 3 - half), pytest.approx(1 / 3 + half))
    assert ci["low"] == pytest.approx(-1.56396, abs=1e-5)
    assert stats.verdict(ci) == "not established (CI includes 0)"


def test_paired_ci_is_paired_not_pooled():
    # large spread between seeds, constant difference: the paired interval has zero width
    ci = stats.paired_ci([10.5, 50.5, 90.5], [10, 50, 90])
    assert (ci["mean"], ci["low"], ci["high"]) == (pytest.approx(0.5), pytest.approx(0.5), pytest.approx(0.5))


def test_single_seed_has_no_interval_and_mismatch_is_refused():
    ci = stats.paired_ci([1.0], [0.0])
    assert ci["mean"] == 1.0 and math.isnan(ci["low"]) and math.isnan(ci["high"])
    assert stats.verdict(ci).startswith("not established")
    with pytest.raises(ValueError, match="pair the runs by seed"):
        stats.paired_ci([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="paired values"):
        stats.win_count([1], [1, 2])


def test_win_count_ties_are_no_win_and_direction_matters():
    assert stats.win_count([1, 2, 3], [1, 1, 4]) == (1, 3)  # 2 > 1 only; 1 = 1 is a tie
    assert stats.win_count([1, 2, 3], [1, 1, 4], higher_is_better=False) == (1, 3)  # 3 < 4 only (losses)
    assert stats.win_count([0.9, 0.8, 0.7, 0.6, 0.5], [0.5] * 5) == (4, 5)


def test_mean_std_and_first_reach():
    assert stats.mean_std([2, 4, 6]) == (4, 2)
    assert math.isnan(stats.mean_std([3])[1])
    curve = [(10.0, 0.5), (20.0, 0.7), (30.0, 0.8)]
    assert stats.first_reach(curve, 0.7) == 20.0
    assert stats.first_reach(curve, 0.9) is None
    assert stats.first_reach([(1, 2.0), (2, 1.0)], 1.5, higher_is_better=False) == 2


def test_paired_table_pairs_by_seed_and_reports_ci_and_wins():
    rows = {"baseline": {s: {"acc": 0.10} for s in range(5)},
            "masksub": {s: {"acc": 0.10 + (s + 1) / 100} for s in range(5)}}
    rows["masksub"][9] = {"acc": 0.99}  # no baseline for seed 9: left out of the pairs
    table = stats.paired_table(rows, [("acc", "accuracy (%)", 100, 2, True)])
    line = next(l for l in table.splitlines() if l.startswith("| masksub"))
    assert "| 5 | +3.00 [+1.04, +4.96] | 5/5 | better (CI excludes 0) |" in line
    arms = stats.arm_table(rows, [("acc", "accuracy (%)", 100, 2)])
    assert "| baseline | 5 | 10.00 ± 0.00 |" in arms


def test_quality_harness_resumes_pairs_by_seed_and_tunes_the_baseline_first(tmp_path, monkeypatch, capsys):
    """bench/quality.py with the training replaced by a stand-in: the grid runs the baseline on the tune seed
    only, every arm then uses its best rate, finished runs are not trained again, rates never mix."""
    import json as _json
    import os

    import quality

    calls = []

    def fake_execute(preset, argv, out, seed, root):
        arm = "plain" if "--masksub_plain" in argv else "masksub" if "mask" in argv else "baseline"
        lr = float(argv[argv.index("--learning_rate") + 1])
        calls.append((arm, seed, lr))
        acc = 0.80 - abs(lr - 2e-3) * 10 + (0.01 * (seed + 1) if arm == "masksub" else 0)
        os.makedirs(out, exist_ok=True)
        curve = [{"step": s, "epoch": s / 10, "elapsed_s": s * (1.5 if arm == "masksub" else 1.0),
                  "eval_accuracy": acc * s / 40, "eval_loss": 1.0 / s} for s in (10, 20, 30, 40)]
        with open(os.path.join(out, "trainer_state.json"), "w") as f:
            _json.dump({"log_history": curve}, f)
        return {"eval_accuracy": acc, "eval_loss": 0.25, "train_runtime": 40.0}

    monkeypatch.setattr(quality, "execute", fake_execute)
    args = ["--preset", "image-long", "--seeds", "0", "1", "2", "--output_dir", str(tmp_path)]
    quality.main(args)
    tune = [c for c in calls if c[1] == 100]
    assert sorted(c[2] for c in tune) == [1e-3, 2e-3, 4e-3] and {c[0] for c in tune} == {"baseline"}
    assert [c for c in calls if c[1] != 100] == [(arm, s, 2e-3) for s in (0, 1, 2) for arm in ("baseline", "masksub", "plain")]
    report = capsys.readouterr().out
    assert "| masksub | test accuracy (%) | 3 | +2.00 [" in report and "| 3/3 |" in report
    assert "masksub: wall-clock s0 1.50 / s1 1.50 / s2 1.50; steps s0 1.00" in report
    table = quality.main(["--summary", "--seeds", "0", "1", "2", "--output_dir", str(tmp_path)])
    assert table.splitlines()[2].startswith("| image-long | masksub | test accuracy (%) | 3 | 80.00 ± 0.00 | 82.00 ± 1.00 "
                                            "| +2.00 [-0.48, +4.48] | 3/3 | not established (CI includes 0) |")
    assert "\n- image-long:" not in table  # complete: grid inside its edges, every arm on every seed
    assert "\n- text-long: the baseline's learning-rate grid; baseline seeds 0 1 2; masksub seeds 0 1 2;" in table
    os.remove(tmp_path / "image-long" / "masksub" / "seed1.json")
    os.remove(tmp_path / "image-long" / "tune-lr0.004" / "seed100.json")
    table = quality.summary(str(tmp_path), [0, 1, 2])
    assert "\n- image-long: the baseline's learning-rate grid; masksub seeds 1\n" in table
    assert quality.grid_line(str(tmp_path), "image-long", 100) == (  # an unfinished grid says how far it got
        "learning rate not tuned yet (the baseline's grid so far, test accuracy (%) on seed 100: 0.001 79.00 / 0.002 80.00)")
    calls.clear()
    quality.main(args)  # trains exactly what the list named
    assert sorted(calls) == [("baseline", 100, 4e-3), ("masksub", 1, 2e-3)]
    calls.clear()
    quality.main(args)  # everything finished: nothing trains again
    assert calls == []
    doc = tmp_path / "RESULTS.md"
    doc.write_text("intro\n<!-- quality:image-long:start -->\nold figures\n<!-- quality:image-long:end -->\nafter\n"
                   "<!-- quality:summary:start -->\n<!-- quality:summary:end -->\n"
                   "<!-- quality:forest:start -->\n<!-- quality:forest:end -->\n")
    assert quality.write_docs(str(doc), str(tmp_path), [0, 1, 2], check=True) == ["image-long", "summary", "forest"]
    assert not (tmp_path / quality.FOREST_PNG).exists()
    assert "old figures" in doc.read_text()  # a check writes nothing
    quality.main(["--write_docs", str(doc), "--seeds", "0", "1", "2", "--output_dir", str(tmp_path)])
    text = doc.read_text()
    assert text.startswith("intro\n<!-- quality:image-long:start -->\n") and "end -->\nafter\n" in text
    assert "\n| image-long | masksub | test accuracy (%) | 3 | 80.00 ± 0.00 | 82.00 ± 1.00 |" in text
    assert "old figures" not in text
    assert ("learning rate 0.002, the baseline's best test accuracy (%) on seed 100 over its grid: 0.001 79.00 / "
            "**0.002** 80.00 / 0.004 78.00." in text)
    assert "| masksub | test accuracy (%) | 3 | +2.00 [-0.48, +4.48] | 3/3 |" in text
    assert "- masksub: s0 81.00 / s1 82.00 / s2 83.00" in text
    assert "- masksub: steps s0 1.00 / s1 1.00 / s2 1.00" in text and "wall-clock s0" not in text
    assert "Arms paired on 2+ seeds: 2; figures digest" in text and (tmp_path / quality.FOREST_PNG).stat().st_size > 0
    assert quality.write_docs(str(doc), str(tmp_path), [0, 1, 2], check=True) == []
    doc.write_text("<!-- quality:image-lng:start -->\n<!-- quality:image-lng:end -->\n")
    with pytest.raises(SystemExit, match="no preset named image-lng"):
        quality.write_docs(str(doc), str(tmp_path), [0, 1, 2])
    doc.write_text("<!-- quality:image-long:start -->\nfigures, and no end marker\n")
    with pytest.raises(SystemExit, match="has no <!-- quality:image-long:end --> after it"):
        quality.write_docs(str(doc), str(tmp_path), [0, 1, 2])
    with pytest.raises(SystemExit, match="no such file"):
        quality.main(["--write_docs", str(tmp_path / "RESULT.md"), "--output_dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="learning rate 0.002, not 0.001"):
        quality.main(args + ["--lr", "1e-3"])
    assert _json.loads((tmp_path / "image-long" / "masksub" / "seed1.json").read_text())["device"] == "cpu"
    monkeypatch.setattr(quality, "device_name", lambda: "cuda:NVIDIA H200")  # a later session that has a GPU
    with pytest.raises(SystemExit, match="trained on cpu, and this process would train on cuda:NVIDIA H200"):
        quality.main(args)


def test_a_rebuilt_split_never_meets_a_subset_of_the_old_one(tmp_path, monkeypatch):
    """Per-seed training subsets are cached; one drawn from a split that has since been rebuilt (a task whose
    construction changed) must not be reused: it would train on the old task and evaluate on the new one."""
    import quality
    import tasks.glue

    split = {name: tmp_path / f"{name}.jsonl" for name in ("train", "validation", "test")}
    for name, path in split.items():
        path.write_text("".join(f'{{"sentence": "old {name} {i}", "label": 0}}\n' for i in range(10)))
    monkeypatch.setattr(tasks.glue, "movie_split_files", lambda task: {k: str(v) for k, v in split.items()})
    old = quality.text_files("movie-pairs", 4, 0, str(tmp_path / "root"))
    split["train"].write_text("".join(f'{{"sentence": "new train {i}", "label": 1}}\n' for i in range(10)))
    new = quality.text_files("movie-pairs", 4, 0, str(tmp_path / "root"))
    assert new[1] != old[1] and all('"new train' in line for line in open(new[1]))
    assert quality.text_files("movie-pairs", 4, 0, str(tmp_path / "root")) == new  # reused while the split stands


def test_the_docs_show_what_the_committed_runs_give():
    """The generated blocks of README.md (the summary rows) and docs/RESULTS.md (per-preset tables, what is still
    to run) match bench/results."""
    import quality

    root = Path(__file__).resolve().parent.parent
    for doc in ("README.md", "docs/RESULTS.md"):
        stale = quality.write_docs(str(root / doc), str(root / "bench" / "results"), [0, 1, 2, 3, 4], check=True)
        assert stale == [], f"stale blocks {stale} in {doc}: python bench/quality.py --write_docs README.md docs/RESULTS.md"


def test_a_grid_still_at_its_edge_after_its_extensions_is_not_called_tuned(tmp_path, monkeypatch, capsys):
    """The grid extends x2 past a best rate at its top, at most max_extensions times; a best rate still at the edge
    then is reported (run, summary, docs) as a grid to widen, never passed off as the tuned rate."""
    import os

    import quality

    rates = []

    def rising(preset, argv, out, seed, root):  # accuracy keeps rising with the rate
        rates.append(float(argv[argv.index("--learning_rate") + 1]))
        os.makedirs(out, exist_ok=True)
        return {"eval_accuracy": rates[-1], "eval_loss": 0.25}

    monkeypatch.setattr(quality, "execute", rising)
    assert quality.tuned_lr(str(tmp_path), "image-long", 100) == 3.2e-2
    assert sorted(rates) == [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2]  # three extensions, nothing past them
    assert "best rate 0.032 still at the grid's edge after 3 extensions: widen the preset's lr_grid" in capsys.readouterr().out
    assert "- image-long: the baseline's learning-rate grid, whose best rate 0.032 is at its edge: widen lr_grid" in (
        quality.still_to_run(str(tmp_path), [0], 100))
    assert quality.grid_line(str(tmp_path), "image-long", 100).endswith("(**at the grid's edge**: not yet a tuned rate)")


def test_a_short_twin_trains_at_its_long_presets_tuned_rate_or_refuses(tmp_path, monkeypatch):
    """image-short borrows image-long's tuned rate; before image-long's grid has run it has no rate, and says so
    (run, still to run, docs) instead of training at a stand-in."""
    import json as _json

    import quality

    monkeypatch.setattr(quality, "execute", lambda *a: pytest.fail("nothing may train without its rate"))
    with pytest.raises(SystemExit, match="image-short trains at image-long's tuned learning rate, and image-long's "
                                         "grid has not run yet: run `python bench/quality.py --preset image-long"):
        quality.main(["--preset", "image-short", "--seeds", "0", "--output_dir", str(tmp_path)])
    assert "- image-short: image-long's learning-rate grid (its rate is borrowed)" in quality.still_to_run(
        str(tmp_path), [0], 100)
    assert quality.grid_line(str(tmp_path), "image-short", 100).startswith("learning rate not tuned yet")
    for lr, acc in [(1e-3, 0.80), (2e-3, 0.83), (4e-3, 0.81)]:
        path = Path(quality.result_path(str(tmp_path), "image-long", f"tune-lr{lr:g}", 100))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_json.dumps({"lr": lr, "eval_accuracy": acc}))
    assert quality.tuned_lr(str(tmp_path), "image-short", 100) == 2e-3
    assert quality.grid_line(str(tmp_path), "image-short", 100) == "learning rate 0.002, image-long's"


def test_compare_pairs_an_arm_at_another_rate_with_the_tuned_baseline(tmp_path):
    """--compare pairs by seed across presets that train the same thing at different rates, and refuses presets that
    train different things (their seeds would not share data)."""
    import json as _json

    import quality

    for preset, arm, lr, accs in [("image-long-2e-3", "masksub", 2e-3, [0.84, 0.85, 0.83]),
                                  ("image-long-2e-3", "baseline", 2e-3, [0.81, 0.83]),
                                  ("image-long", "baseline", 2.5e-4, [0.82, 0.84])]:
        for seed, acc in enumerate(accs):
            path = Path(quality.result_path(str(tmp_path), preset, arm, seed))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(_json.dumps({"lr": lr, "eval_accuracy": acc}))
    line = quality.main(["--compare", "image-long-2e-3:masksub", "image-long:baseline", "--seeds", "0", "1", "2",
                         "--output_dir", str(tmp_path)])
    assert line.startswith("image-long-2e-3:masksub (lr 0.002) against image-long:baseline (lr 0.00025), test accuracy "
                           "(%), 2 seeds paired: 84.50 ± 0.71 against 83.00 ± 1.41; +1.50 [")  # seed 2 has no pair
    assert "2/2 wins" in line
    assert "82.00 ± 1.41 against 83.00 ± 1.41; -1.00 [" in quality.compare(  # baseline against baseline: two rates
        str(tmp_path), [0, 1], "image-long-2e-3:baseline", "image-long:baseline")
    assert quality.grid_line(str(tmp_path), "image-long-2e-3", 100) == "learning rate 0.002, fixed by the preset (no grid)"
    with pytest.raises(SystemExit, match="image-short and image-long train different things"):
        quality.compare(str(tmp_path), [0, 1], "image-short:masksub", "image-long:baseline")
    with pytest.raises(SystemExit, match="--compare takes PRESET:ARM"):
        quality.compare(str(tmp_path), [0, 1], "image-long", "image-long:baseline")


def test_still_to_run_estimates_the_cpu_time_from_the_finished_runs(tmp_path):
    """Each preset's missing runs are costed at the mean CPU seconds of the same arm's finished runs; a preset with
    an arm never run gets no estimate rather than a wrong one."""
    import json as _json

    import quality

    for arm, seed, cpu in [("baseline", 0, 600), ("baseline", 1, 600), ("masksub", 0, 1000), ("masksub", 2, 1400),
                           ("dropsub-p0.3", 0, 900)]:
        path = Path(quality.result_path(str(tmp_path), "pair-long", arm, seed))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_json.dumps({"lr": 1e-4, "cpu_s": cpu}))
    todo = quality.still_to_run(str(tmp_path), [0, 1, 2], 100)
    assert "\n- pair-long: the baseline's learning-rate grid; baseline seeds 2; masksub seeds 1; dropsub-p0.3 seeds 1 2 " \
           "(~60 CPU min by its finished runs)\n" in todo  # 600 + 1200 + 2 x 900 s
    (tmp_path / "pair-long" / "dropsub-p0.3" / "seed0.json").unlink()
    assert "dropsub-p0.3 seeds 0 1 2\n" in quality.still_to_run(str(tmp_path), [0, 1, 2], 100)


def test_every_preset_names_what_the_harness_reads():
    """A preset missing a key, or tuning on a metric it does not report, would fail only hours into a run."""
    import quality

    for name, p in quality.PRESETS.items():
        rate = {"lr_from"} if "lr_from" in p else {"lr_grid"}  # a short twin takes its long preset's tuned rate
        missing = ({"domain", "argv", "arms", "metrics", "select", "curve", "about"} | rate) - set(p)
        assert not missing, f"{name} lacks {missing}"
        assert p["select"] in [m[0] for m in p["metrics"]], name
        assert p["arms"][0] == "baseline" and set(p["arms"]) <= set(quality.ARMS), name
        assert "lr_from" not in p or p["lr_from"] in quality.PRESETS, name
