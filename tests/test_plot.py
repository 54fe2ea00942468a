"""masksub_hf.plot: the comparison figure from two or more runs' trainer_state.json."""
import json

import pytest

from masksub_hf import plot

EXPECTED_TITLES = {f"{panel} {suffix}" for panel, _, _ in plot.PANELS for _, _, suffix in plot.AXES}


def write_run(root, name, sub_branch, steps=6, in_checkpoint=False):
    """A trainer_state.json shaped as MaskSubTrainer writes it (train entries, eval entries, the summary)."""
    history = []
    for step in range(1, steps + 1):
        entry = {"step": step, "epoch": step / steps, "loss": 2.0 / step, "grad_norm": 1.0 + step,
                 "learning_rate": 1e-3, "elapsed_s": 0.5 * step * (1.5 if sub_branch else 1.0)}
        if sub_branch:
            entry.update(loss_main=1.8 / step, loss_sub=2.2 / step)
        history.append(entry)
        if step % 2 == 0:
            history.append({"step": step, "eval_accuracy": 0.1 * step, "eval_loss": 1.0, "elapsed_s": entry["elapsed_s"]})
    history.append({"step": steps, "train_runtime": 9.0, "train_loss": 1.0, "elapsed_s": 9.0})
    run = root / name
    folder = run / f"checkpoint-{steps}" if in_checkpoint else run
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": steps, "log_history": history}))
    return run


def lines_by_title(fig):
    return {ax.get_title(): {line.get_label(): line for line in ax.get_lines()} for ax in fig.axes}


def test_two_runs_draw_every_panel_with_a_legend(tmp_path):
    runs = [write_run(tmp_path, "baseline", False), write_run(tmp_path, "masksub", True)]
    out = tmp_path / "figs" / "cmp.png"
    fig = plot.plot_runs(runs, str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    assert {ax.get_title() for ax in fig.axes} == EXPECTED_TITLES and len(EXPECTED_TITLES) == 8
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["baseline", "masksub"]
    lines = lines_by_title(fig)
    # the main-branch loss is loss_main for MaskSub and falls back to loss for the baseline
    main = lines["training loss, main branch vs step"]
    assert list(main["masksub"].get_ydata()) == pytest.approx([1.8 / s for s in range(1, 7)])
    assert list(main["baseline"].get_ydata()) == pytest.approx([2.0 / s for s in range(1, 7)])
    # only the MaskSub run has a sub-branch; the summary entry is never a point
    assert set(lines["training loss, perturbed sub-branch vs wall-clock"]) == {"masksub"}
    accuracy = lines["validation accuracy vs wall-clock"]["masksub"]
    # wall-clock from the run's first log (0.75 s): its start-up is not on the axis
    assert list(accuracy.get_xdata()) == pytest.approx([0.75, 2.25, 3.75]) and len(accuracy.get_ydata()) == 3
    steps = fig.axes[0].xaxis.get_major_locator()
    assert all(float(t).is_integer() for t in steps.tick_values(1, 6))  # whole steps on the step axis


def test_cli_with_names_and_a_run_still_in_progress(tmp_path, capsys):
    runs = [write_run(tmp_path / "seed0", "masksub", True), write_run(tmp_path / "seed1", "masksub", True),
            write_run(tmp_path, "live", True, in_checkpoint=True)]
    out = tmp_path / "three.png"
    plot.main([str(r) for r in runs] + ["-o", str(out), "--title", "three runs"])
    assert out.exists() and "wrote" in capsys.readouterr().out
    assert plot.run_names([str(r) for r in runs]) == ["seed0/masksub", "seed1/masksub", "live"]
    fig = plot.plot_runs(runs, str(out), names=["a", "b", "c"])
    assert set(lines_by_title(fig)["gradient norm vs step"]) == {"a", "b", "c"}


def test_another_metric_in_the_first_row_and_an_unlogged_one_refused(tmp_path):
    runs = [write_run(tmp_path, "baseline", False), write_run(tmp_path, "masksub", True)]
    fig = plot.plot_runs(runs, str(tmp_path / "loss.png"), metric="eval_loss")
    lines = lines_by_title(fig)
    assert "validation accuracy vs step" not in lines
    assert list(lines["validation loss vs step"]["masksub"].get_ydata()) == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="no run logged 'eval_pearson'.*eval_accuracy, eval_loss"):
        plot.plot_runs(runs, str(tmp_path / "x.png"), metric="eval_pearson")


def test_missing_state_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no trainer_state.json"):
        plot.plot_runs([tmp_path / "empty"], str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match="1 names for 2 runs"):
        plot.plot_runs([write_run(tmp_path, "a", False), write_run(tmp_path, "b", False)], str(tmp_path / "x.png"),
                       names=["one"])


def test_the_cli_says_what_is_wrong_in_one_line(tmp_path, capsys):
    runs = [write_run(tmp_path, "baseline", False), write_run(tmp_path, "masksub", True)]
    assert plot.main([str(r) for r in runs] + ["-o", str(tmp_path / "x.png"), "--metric", "eval_pearson"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m masksub_hf.plot: error: no run logged 'eval_pearson'")
    assert plot.main([str(tmp_path / "nowhere"), "-o", str(tmp_path / "y.png")]) == 2
    assert "no trainer_state.json" in capsys.readouterr().err


def test_a_comparison_root_stands_for_its_runs(tmp_path, capsys):
    write_run(tmp_path / "cmp", "baseline", False)
    write_run(tmp_path / "cmp", "masksub", True)
    assert plot.main([str(tmp_path / "cmp"), "-o", str(tmp_path / "cmp.png")]) == 0
    fig = plot.plot_runs([tmp_path / "cmp"], str(tmp_path / "cmp.png"))
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["baseline", "masksub"]
