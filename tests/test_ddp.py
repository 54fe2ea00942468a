"""DDP on CPU (gloo): 2 processes x batch B end where 1 process x batch 2B ends."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("ddp_train.py")


def _run(cmd):
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_processes_match_one_and_all_reduce_once_per_step(tiny_bert_dir, tmp_path):
    one, two = tmp_path / "one" / "w.pt", tmp_path / "two" / "w.pt"
    for p in (one, two):
        p.parent.mkdir()
    _run([sys.executable, str(SCRIPT), str(tiny_bert_dir), str(one), "8", "none,mask"])
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT), str(tiny_bert_dir), str(two), "4", "none,mask"])
    single, ddp = torch.load(one), torch.load(two)
    # the main branch's backward runs under no_sync: MaskSub all-reduces no more often than plain training
    assert ddp["mask"]["all_reduces"] == ddp["none"]["all_reduces"] > 0
    a, b = single["mask"], ddp["mask"]
    assert (a["world"], b["world"]) == (1, 2)
    for name, w in a["weights"].items():
        assert torch.allclose(w, b["weights"][name], atol=1e-5, rtol=1e-4), name
    # and the logged losses are global means, not one rank's
    for x, y in zip(a["logs"], b["logs"]):
        for key in ("loss", "loss_main", "loss_sub"):
            assert x[key] == pytest.approx(y[key], abs=2e-4)
