"""Step time and peak memory of MaskSubTrainer against transformers.Trainer, side by side.

Each configuration runs in a fresh subprocess (so peak memory is its own), on the same
synthetic batch of a randomly initialised BERT-shaped and ViT-shaped model, and the parent
prints every figure as a ratio to the plain Trainer step of the same model.

    python bench/overhead.py                 # CPU-sized models (default)
    python bench/overhead.py --preset gpu    # BERT-base L=128 and ViT-B/16 224px, batch 256, bf16

Memory: on a GPU, torch.cuda.max_memory_allocated during the timed steps; on CPU (glibc), the
peak of the bytes malloc has handed out, sampled every millisecond during the timed steps, less
the bytes in use when they began: what a step adds on top of weights, gradients and optimizer
state. (The resident set would hide it: the allocator reuses the warm-up steps' memory.)
"""
import argparse
import json
import os
import threading
import subprocess
import sys
import time

PRESETS = {
    "cpu": {"bert": dict(hidden=256, layers=4, heads=4, seq=128, batch=32),
            "vit": dict(hidden=192, layers=6, heads=3, image=112, patch=16, batch=32)},
    "gpu": {"bert": dict(hidden=768, layers=12, heads=12, seq=128, batch=256),
            "vit": dict(hidden=768, layers=12, heads=12, image=224, patch=16, batch=256)},
}
RUNS = [("Trainer", "none"), ("MaskSub mask 0.5", "mask"), ("MaskSub mask 0.5, one combined backward", "combined"),
        ("DropSub drop 0.5", "drop"), ("PathSub path 0.5", "path")]


class InMemory:
    """A map-style dataset of ready tensors, so data loading costs next to nothing in the timings."""

    def __init__(self, **columns):
        self.columns = columns

    def __len__(self):
        return len(next(iter(self.columns.values())))

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.columns.items()}


def build(shape, preset):
    import torch
    from transformers import BertConfig, BertForSequenceClassification, ViTConfig, ViTForImageClassification

    p = PRESETS[preset][shape]
    torch.manual_seed(0)
    n = p["batch"] * 4
    if shape == "bert":
        model = BertForSequenceClassification(BertConfig(
            hidden_size=p["hidden"], num_hidden_layers=p["layers"], num_attention_heads=p["heads"],
            intermediate_size=4 * p["hidden"], num_labels=2))
        data = {"input_ids": torch.randint(1000, 30000, (n, p["seq"])), "labels": torch.randint(0, 2, (n,))}
        data["attention_mask"] = torch.ones_like(data["input_ids"])
    else:
        model = ViTForImageClassification(ViTConfig(
            hidden_size=p["hidden"], num_hidden_layers=p["layers"], num_attention_heads=p["heads"],
            intermediate_size=4 * p["hidden"], image_size=p["image"], patch_size=p["patch"], num_labels=10))
        data = {"pixel_values": torch.randn(p["batch"], 3, p["image"], p["image"]).repeat(4, 1, 1, 1),
                "labels": torch.randint(0, 10, (n,))}
    return model, InMemory(**data), p["batch"]


def heap_in_use() -> int:
    """Bytes glibc malloc has handed out and not taken back (small blocks + mmapped large ones)."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


def child(shape, run, preset, warmup, steps):
    """One configuration: time `steps` optimizer steps after `warmup`, report JSON on stdout."""
    import torch
    from transformers import Trainer, TrainerCallback

    from masksub_hf import MaskSubConfig, MaskSubTrainer

    class CombinedBackward(MaskSubTrainer):
        """The naive alternative: one backward through both branches' graphs at once."""

        def training_step(self, model, inputs, num_items_in_batch=None):
            model.train()
            inputs = self._prepare_inputs(inputs)
            with self.compute_loss_context_manager():
                loss = self.compute_loss(model, inputs)
            self.accelerator.backward(loss / self.current_gradient_accumulation_steps)
            return loss.detach() / self.current_gradient_accumulation_steps

    class Clock(TrainerCallback):
        """Times the steps after warm-up and tracks the memory they add."""

        def __init__(self):
            self.peak, self.sampling = 0, False

        def _sample_heap(self):
            start = heap_in_use()
            while self.sampling:
                self.peak = max(self.peak, heap_in_use() - start)
                time.sleep(0.001)

        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == warmup:
                if gpu:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                else:
                    self.sampling = True
                    self.sampler = threading.Thread(target=self._sample_heap, daemon=True)
                    self.sampler.start()
                self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == warmup + steps:
                if gpu:
                    torch.cuda.synchronize()
                    self.peak = torch.cuda.max_memory_allocated()
                self.elapsed = time.perf_counter() - self.t0
                self.sampling = False

    gpu = torch.cuda.is_available()
    model, data, batch = build(shape, preset)
    args = MaskSubConfig(
        output_dir="/tmp/masksub-overhead", masksub_type="mask" if run == "combined" else run,
        per_device_train_batch_size=batch, max_steps=warmup + steps, optim="sgd", learning_rate=1e-4,
        logging_steps=10_000, save_strategy="no", report_to=[], disable_tqdm=True, bf16=gpu, use_cpu=not gpu,
        dataloader_num_workers=2 if gpu else 0)
    cls = {"none": Trainer, "combined": CombinedBackward}.get(run, MaskSubTrainer)
    clock = Clock()
    trainer = cls(model=model, args=args, train_dataset=data, callbacks=[clock])
    trainer.train()
    print(json.dumps({"step_s": clock.elapsed / steps, "peak_bytes": clock.peak}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=list(PRESETS), default="cpu")
    parser.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps first")
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps")
    parser.add_argument("--shapes", default="bert,vit", help="comma-separated: bert, vit")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.child:
        return child(a.child[0], a.child[1], a.preset, a.warmup, a.steps)
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"device: {device}; preset {a.preset}: {PRESETS[a.preset]}")
    print(f"{'model':6} {'configuration':42} {'step s':>8} {'time':>7} {'peak MiB':>9} {'memory':>7}")
    for shape in a.shapes.split(","):
        base = None
        for label, run in RUNS:
            cmd = [sys.executable, __file__, "--preset", a.preset, "--warmup", str(a.warmup), "--steps", str(a.steps),
                   "--child", shape, run]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{shape:6} {label:42} failed: {out.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            base = base or r
            print(f"{shape:6} {label:42} {r['step_s']:8.3f} {r['step_s'] / base['step_s']:6.2f}x "
                  f"{r['peak_bytes'] / 2**20:9.0f} {r['peak_bytes'] / max(base['peak_bytes'], 1):6.2f}x", flush=True)


if __name__ == "__main__":
    main()
