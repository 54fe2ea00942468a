"""DeepSpeed ZeRO-1/2/3 on two CPU processes (gloo): MaskSub's two backwards (the engine's accumulation
boundary shut for the main half) end where DDP ends, with one optimizer step per step.

All configurations run in one launched job (deepspeed_train.py loops over them): one launch, one DeepSpeed
import and one process group instead of thirty. Skipped when deepspeed is not installed.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.deepspeed
pytest.importorskip("deepspeed", reason="DeepSpeed tests need the deepspeed extra (pip install -e '.[deepspeed]')")

SCRIPT = Path(__file__).with_name("deepspeed_train.py")
TYPES, ACCUMULATIONS, BACKENDS = ("none", "mask", "drop"), (1, 2), ("zero1", "zero2", "zero3")
MATRIX = [f"{b}:{t}:{a}" for b in ("ddp",) + BACKENDS for t in TYPES for a in ACCUMULATIONS]


@pytest.fixture(scope="module")
def results(tiny_bert_dir, tmp_path_factory):
    """Run every configuration once, in one two-process job."""
    work = tmp_path_factory.mktemp("deepspeed")
    out = work / "results.pt"
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT),
           str(tiny_bert_dir), str(out), str(work), ",".join(MATRIX + ["resume", "nonfinite"])]
    # the first use JIT-builds DeepSpeed's shared-memory op with g++ (~2-3 minutes, then cached)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return torch.load(out)


def _max_difference(a, b):
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.mark.parametrize("accumulation", ACCUMULATIONS)
@pytest.mark.parametrize("masksub_type", TYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_equals_ddp(results, backend, masksub_type, accumulation):
    ddp, zero = results[f"ddp:{masksub_type}:{accumulation}"], results[f"{backend}:{masksub_type}:{accumulation}"]
    assert (ddp["steps"]["backend"], zero["steps"]["backend"]) == ("DistributedDataParallel", "DeepSpeedEngine")
    assert ddp["world"] == zero["world"] == 2
    for name, w in ddp["weights"].items():
        assert torch.allclose(w, zero["weights"][name], atol=1e-5, rtol=1e-4), name
    # one optimizer step per step: Trainer, the engine and the scheduler agree (DDP: Trainer and scheduler)
    assert zero["steps"]["trainer"] == zero["steps"]["engine"] == zero["steps"]["scheduler"] == 3
    assert zero["steps"]["engine_skipped"] == 0
    assert ddp["steps"]["trainer"] == ddp["steps"]["scheduler"] == 3
    assert len(ddp["logs"]) == len(zero["logs"]) == 3
    for x, y in zip(ddp["logs"], zero["logs"]):
        for key in ("loss", "loss_main", "loss_sub"):
            if key in x:
                assert x[key] == pytest.approx(y[key], abs=2e-4), key


def test_the_configurations_differ(results):
    """The comparison can fail: the types and accumulation settings train to different weights."""
    base = results["ddp:none:1"]["weights"]
    for job in ("ddp:mask:1", "ddp:drop:1", "ddp:mask:2"):
        assert _max_difference(base, results[job]["weights"]) > 1e-3, job


def test_zero2_resume_is_bit_exact(results):
    straight, resumed = results["resume"]["straight"], results["resume"]["resumed"]
    assert straight["steps"]["engine"] == resumed["steps"]["engine"] == 4
    assert resumed["steps"]["trainer"] == resumed["steps"]["scheduler"] == 4
    for name, w in straight["weights"].items():
        assert torch.equal(w, resumed["weights"][name]), name


def test_nonfinite_guard_stops_before_the_engine_steps(results):
    nan = results["nonfinite"]
    assert nan["error"] is not None and "step 2" in nan["error"] and "main-branch loss is nan" in nan["error"]
    assert nan["steps"]["trainer"] == nan["steps"]["engine"] == nan["steps"]["scheduler"] == 1
    for name, w in nan["before"].items():  # the weights after step 1, untouched by step 2
        assert torch.equal(w, nan["weights"][name]), name
    assert all(torch.isfinite(w).all() for w in nan["weights"].values() if w.is_floating_point())
