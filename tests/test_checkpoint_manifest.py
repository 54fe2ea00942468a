"""Checkpoints prove they are complete (checkpoints.py): a save ends with manifest.json, and a damaged or missing
file in the newest checkpoint makes the resume skip it with its reason and end with the uninterrupted weights."""
import json
import os

import pytest
import torch

from masksub_hf import MaskSubTrainer
from masksub_hf.checkpoints import MANIFEST, incomplete_reason
from tests.helpers import args, image_dataset, tiny_vit


def run(tmp_path, digits, resume=None):
    trainer = MaskSubTrainer(model=tiny_vit(), train_dataset=image_dataset(digits),
                             args=args(tmp_path, max_steps=4, save_strategy="steps", save_steps=2))
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def flip_a_byte(path):
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))


DAMAGE = {
    "model.safetensors truncated": ("model.safetensors", truncate, "its model.safetensors is truncated or changed"),
    "optimizer.pt truncated": ("optimizer.pt", truncate, "its optimizer.pt is truncated or changed"),
    "optimizer.pt deleted": ("optimizer.pt", os.remove, "its optimizer.pt is missing"),
    "scheduler.pt deleted": ("scheduler.pt", os.remove, "its scheduler.pt is missing"),
    "rng_state.pth deleted": ("rng_state.pth", os.remove, "its rng_state.pth is missing"),
    "model.safetensors bit flip": ("model.safetensors", flip_a_byte, "its model.safetensors does not match"),
}


def test_every_saved_checkpoint_ends_with_its_manifest(digits, tmp_path):
    run(tmp_path, digits)
    for step in (2, 4):
        checkpoint = tmp_path / f"checkpoint-{step}"
        files = json.loads((checkpoint / MANIFEST).read_text())["files"]
        assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"} <= set(files)
        assert all(files[n]["size"] == os.path.getsize(checkpoint / n) for n in files)
        assert incomplete_reason(str(checkpoint)) is None


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_newest_checkpoint_is_skipped_with_its_reason(digits, tmp_path, caplog, damage):
    whole = {k: v.clone() for k, v in run(tmp_path, digits).model.state_dict().items()}
    name, act, reason = DAMAGE[damage]
    act(str(tmp_path / "checkpoint-4" / name))
    assert incomplete_reason(str(tmp_path / "checkpoint-4")).startswith(reason)
    with caplog.at_level("WARNING", logger="masksub_hf.checkpoints"):
        resumed = run(tmp_path, digits, resume=True)
    assert f"Skipping {tmp_path / 'checkpoint-4'}: {reason}" in caplog.text
    assert f"Resuming from {tmp_path / 'checkpoint-2'}" in caplog.text
    for k, v in resumed.model.state_dict().items():
        assert torch.equal(v, whole[k]), k
