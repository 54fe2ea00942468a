"""Run run_clip.main with position-only masks (run by test_clip.py, once plainly and once under torchrun).

usage: [torchrun --nproc_per_node N] clip_ddp.py OUTPUT_DIR PER_DEVICE_BATCH -- RUN_CLIP_ARGS...
"""
import os
import sys

import torch

sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]


def fixed_scores():
    """Masks that depend on the position only, so every process split sees the same masks."""
    table = torch.rand(4096, generator=torch.Generator().manual_seed(1))
    return lambda shape, device: table[: shape[1]].expand(shape).to(device)


if __name__ == "__main__":
    import masksub_hf.perturb.tokens as tokens
    import run_clip

    tokens.random_scores = fixed_scores()
    out, batch, rest = sys.argv[1], sys.argv[2], sys.argv[4:]
    ddp = ["--ddp_backend", "gloo"] if "WORLD_SIZE" in os.environ else []
    run_clip.main(rest + ddp + ["--output_dir", out, "--per_device_train_batch_size", batch])
