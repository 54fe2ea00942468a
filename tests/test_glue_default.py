"""run_glue.py's default run: the long small-data regime, and the eval-loss summary its comparison prints."""
import json

import run_glue
from tasks.compare import eval_loss_curve, table as comparison_table


def test_embedded_default_is_the_long_small_data_regime():
    _, data_args, training_args, run_args = run_glue.parse_args([])
    assert data_args.task_name == "movie-sentiment" and data_args.max_train_samples == 400
    assert data_args.max_eval_samples == 250  # evaluation costs a third of the run; it does not touch training
    assert training_args.num_train_epochs == 6 and training_args.per_device_train_batch_size == 16
    assert training_args.eval_strategy == "epoch"  # the eval-loss curve the comparison summarises
    assert run_args.compare_baseline
    assert training_args.masksub_type == "auto" and training_args.masksub_ratio is None  # the measured best for text


def test_comparison_prints_best_and_final_eval_loss(tmp_path):
    history = [{"epoch": 1.0, "eval_loss": 0.44, "step": 50}, {"epoch": 1.0, "loss": 0.5, "step": 50},
               {"epoch": 2.0, "eval_loss": 0.61, "step": 100}, {"epoch": 3.0, "eval_loss": 0.79, "step": 150}]
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    curve = eval_loss_curve(str(tmp_path))
    assert curve == {"curve_best_eval_loss": 0.44, "curve_best_epoch": 1.0, "curve_final_eval_loss": 0.79}
    assert eval_loss_curve(str(tmp_path / "missing")) == {}
    results = {"baseline": {"masksub_setting": "--masksub_type none", "eval_accuracy": 0.82, "train_runtime": 10.0,
                            **curve},
               "masksub": {"masksub_setting": "--masksub_type drop --masksub_ratio 0.1", "eval_accuracy": 0.84, "train_runtime": 14.0, "curve_best_eval_loss": 0.45,
                           "curve_best_epoch": 3.0, "curve_final_eval_loss": 0.48}}
    table = comparison_table(results, "movie-sentiment")
    assert "(baseline: --masksub_type none, masksub: --masksub_type drop --masksub_ratio 0.1)" in table.splitlines()[0]
    assert "| baseline | 0.8200 | 10.0 s |" in table
    assert "baseline best 0.4400 (epoch 1), final 0.7900; masksub best 0.4500 (epoch 3), final 0.4800" in table
    assert "curve_" not in table.split("eval loss during training")[0]  # not a table column
