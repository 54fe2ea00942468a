"""FSDP2 on two CPU processes (gloo), parameters really sharded (DTensors): MaskSub ends where DDP ends, and
its inner no-sync does not end Trainer's outer one (one gradient reduction per optimizer step, as Trainer).

All configurations run in one launched job (fsdp_train.py loops over them).
"""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("fsdp_train.py")
FSDP = ["fsdp2:none:2", "fsdp2:mask:1", "fsdp2:mask:2", "fsdp2:drop:2"]
# last: TrainingArguments(fsdp=...) leaves ACCELERATE_USE_FSDP set in the process
JOBS = [job.replace("fsdp2", "ddp") for job in FSDP] + FSDP + ["fsdp-args:mask:1", "fsdp-args:none:1"]


@pytest.fixture(scope="module")
def results(tiny_bert_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("fsdp")
    out = work / "results.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT),
           str(tiny_bert_dir), str(out), str(work), ",".join(JOBS)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return torch.load(out)


@pytest.mark.parametrize("job", FSDP)
def test_fsdp2_shards_and_equals_ddp(results, job):
    fsdp, ddp = results[job], results[job.replace("fsdp2", "ddp")]
    assert ddp["wrapped"] == "DistributedDataParallel" and ddp["sharding"]["dtensors"] == 0
    shards = fsdp["sharding"]
    assert shards["dtensors"] == shards["params"] > 0  # every parameter a DTensor ...
    assert shards["local"] < 0.55 * shards["total"]  # ... of which this rank holds about half
    assert fsdp["steps"] == ddp["steps"] == 3
    for name, w in ddp["weights"].items():
        assert torch.allclose(w, fsdp["weights"][name], atol=1e-5, rtol=1e-4), name
    assert len(fsdp["logs"]) == len(ddp["logs"]) == 3
    for x, y in zip(ddp["logs"], fsdp["logs"]):
        assert x["loss"] == pytest.approx(y["loss"], abs=2e-4)


def test_training_moved_the_weights(results):
    """The comparison can fail: the runs train, and differently per type."""
    none, mask = results["fsdp2:none:2"]["weights"], results["fsdp2:mask:2"]["weights"]
    assert max((none[k] - mask[k]).abs().max().item() for k in none) > 1e-3


def test_nested_no_sync_reduces_once_per_optimizer_step(results):
    """Under accumulation Trainer defers the first micro-batch's reduction; MaskSub's own no-sync for the main
    half must restore that, not turn sync back on (accelerate 1.15's FSDP2 no_sync would: 2x the reductions)."""
    trainer = results["fsdp2:none:2"]["reduce_scatters"]
    assert trainer > 0
    assert results["fsdp2:mask:2"]["reduce_scatters"] == results["fsdp2:drop:2"]["reduce_scatters"] == trainer
    assert results["fsdp2:mask:1"]["reduce_scatters"] == trainer  # and one per step without accumulation


def test_fsdp_that_accelerate_runs_as_ddp_on_cpu_is_said_once(results):
    """accelerate 1.15 runs TrainingArguments(fsdp=...) as DDP on CPU, silently; MaskSubTrainer says so, once."""
    first, second = results["fsdp-args:mask:1"], results["fsdp-args:none:1"]
    assert first["wrapped"] == second["wrapped"] == "DistributedDataParallel"
    assert first["sharding"]["dtensors"] == 0
    assert len(first["fsdp_warnings"]) == 1 and "DDP instead" in first["fsdp_warnings"][0]
    assert second["fsdp_warnings"] == []  # once per process
    assert results["fsdp2:mask:1"]["fsdp_warnings"] == []  # really sharded: nothing to say
