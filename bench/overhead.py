"""Step time and peak memory of MaskSubTrainer against transformers.Trainer, side by side.

Every configuration of one model shape lives in its own worker process (so its peak memory is its
own), all built and warmed up at once on the same synthetic batch. The parent then runs them in
interleaved rounds: in each round every worker times a few optimizer steps in turn, in a rotated
order. A change of load on a shared machine then hits every configuration alike, and each ratio
is the median over rounds of (configuration / plain Trainer in the same round).

    python bench/overhead.py                 # CPU-sized models (default)
    python bench/overhead.py --preset gpu    # BERT-base L=128 and ViT-B/16 224px, batch 256, bf16
    python bench/overhead.py --shapes bert-zero2   # the BERT row under DeepSpeed ZeRO-2, two processes

Memory: on a GPU, torch.cuda.max_memory_allocated during the timed steps; on CPU (glibc), the
peak of the bytes malloc has handed out, sampled every millisecond during the timed steps, less
the bytes in use when they began: what a step adds on top of weights, gradients and optimizer
state. (The resident set would hide it: the allocator reuses the warm-up steps' memory.)

A `-zero2` shape runs each configuration as two processes (torchrun, gloo on CPU) under DeepSpeed
ZeRO-2, each with half the batch; its memory is the larger process's. Needs the deepspeed extra.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

PRESETS = {
    "cpu": {"bert": dict(hidden=256, layers=4, heads=4, seq=128, batch=32),
            "llama": dict(hidden=256, layers=4, heads=4, seq=128, batch=32),
            "llama-lm": dict(hidden=256, layers=4, heads=4, seq=128, batch=16),
            "vit": dict(hidden=192, layers=6, heads=3, image=112, patch=16, batch=32),
            "beit": dict(hidden=192, layers=6, heads=3, image=112, patch=16, batch=32),
            "clip": dict(hidden=192, layers=6, heads=3, image=112, patch=16, batch=32, seq=32)},
    "gpu": {"bert": dict(hidden=768, layers=12, heads=12, seq=128, batch=256),
            "llama": dict(hidden=768, layers=12, heads=12, seq=128, batch=256),
            "llama-lm": dict(hidden=768, layers=12, heads=12, seq=512, batch=32),
            "vit": dict(hidden=768, layers=12, heads=12, image=224, patch=16, batch=256),
            "beit": dict(hidden=768, layers=12, heads=12, image=224, patch=16, batch=256),
            "clip": dict(hidden=768, layers=12, heads=12, image=224, patch=16, batch=256, seq=77)},
}
SHAPES = {  # what each row stands for
    "bert": "BERT-shaped text encoder, absolute positions",
    "llama": "Llama-shaped decoder classifier, rotary positions",
    "llama-lm": "Llama-shaped causal LM, 32k vocabulary, labels on the second half (a prompt, then its answer)",
    "vit": "ViT-shaped image classifier",
    "beit": "BEiT-shaped image classifier, relative position bias (mask token)",
    "clip": "CLIP-shaped image-text model, ViT image tower",
    "bert-zero2": "the BERT row under DeepSpeed ZeRO-2: 2 processes, half the batch each; memory per process",
}
ZERO2 = {  # as users write one for Trainer: "auto" fields, Trainer's optimizer, buckets of realistic size
    "zero_optimization": {"stage": 2, "reduce_bucket_size": "auto", "allgather_bucket_size": 5e7},
    "train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto", "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto", "zero_allow_untested_optimizer": True, "steps_per_print": 10 ** 9}
PROCESSES = 2  # per -zero2 configuration
RUNS = {"none": "Trainer", "mask": "MaskSub mask 0.5", "combined": "MaskSub mask 0.5, one combined backward",
        "drop": "DropSub drop 0.5", "path": "PathSub path 0.5"}
ALL_RUNS = {"bert": list(RUNS), "vit": list(RUNS), "llama": ["none", "mask"], "llama-lm": ["none", "mask", "drop"],
            "beit": ["none", "mask"],
            "clip": ["none", "mask"], "bert-zero2": ["none", "mask", "combined", "drop"]}
DEFAULT_SHAPES = [shape for shape in SHAPES if not shape.endswith("-zero2")]


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
    import transformers as tf

    shape = shape.removesuffix("-zero2")  # the same model, launched as several processes
    p = PRESETS[preset][shape]
    torch.manual_seed(0)
    n = p["batch"] * 4
    hidden = dict(hidden_size=p["hidden"], num_hidden_layers=p["layers"], num_attention_heads=p["heads"],
                  intermediate_size=4 * p["hidden"])
    if shape == "llama-lm":  # the token-level relaxed loss over the 32k vocabulary at every labelled position
        model = tf.LlamaForCausalLM(tf.LlamaConfig(**hidden, num_key_value_heads=p["heads"], vocab_size=32000,
                                                   pad_token_id=0, attention_dropout=0.1))
        ids = torch.randint(1000, 30000, (n, p["seq"]))
        labels = ids.clone()
        labels[:, : p["seq"] // 2] = -100
        return model, InMemory(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels), p["batch"]
    if shape in ("bert", "llama"):
        if shape == "bert":
            model = tf.BertForSequenceClassification(tf.BertConfig(**hidden, num_labels=2))
        else:
            model = tf.LlamaForSequenceClassification(tf.LlamaConfig(**hidden, num_key_value_heads=p["heads"],
                                                                      vocab_size=32000, pad_token_id=0, num_labels=2))
        data = {"input_ids": torch.randint(1000, 30000, (n, p["seq"])), "labels": torch.randint(0, 2, (n,))}
        data["attention_mask"] = torch.ones_like(data["input_ids"])
        return model, InMemory(**data), p["batch"]
    vision = dict(**hidden, image_size=p["image"], patch_size=p["patch"])
    pixels = torch.randn(p["batch"], 3, p["image"], p["image"]).repeat(4, 1, 1, 1)
    if shape == "clip":
        text = dict(hidden_size=p["hidden"], num_hidden_layers=p["layers"] // 2, num_attention_heads=p["heads"],
                    intermediate_size=4 * p["hidden"], max_position_embeddings=p["seq"])
        model = tf.CLIPModel(tf.CLIPConfig(text_config=text, vision_config=vision))
        ids = torch.randint(1000, 49000, (n, p["seq"]))
        ids[:, 0], ids[:, -1] = 49406, 49407  # <|startoftext|> ... <|endoftext|>, the token CLIP pools
        return model, InMemory(pixel_values=pixels, input_ids=ids, attention_mask=torch.ones_like(ids)), p["batch"]
    if shape == "vit":
        model = tf.ViTForImageClassification(tf.ViTConfig(**vision, num_labels=10))
    else:
        model = tf.BeitForImageClassification(tf.BeitConfig(**vision, num_labels=10, use_relative_position_bias=True))
    return model, InMemory(pixel_values=pixels, labels=torch.randint(0, 10, (n,))), p["batch"]


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


def child(shape, run, preset, warmup, steps, rounds):
    """One configuration as a worker: warm up, then per line 'go' on stdin time `steps` optimizer steps
    and answer one JSON line on stdout."""
    import torch
    from transformers import Trainer, TrainerCallback

    from masksub_hf import MaskSubConfig, MaskSubTrainer

    class CombinedBackward(MaskSubTrainer):
        """The naive alternative: one backward through both branches' graphs at once."""

        def one_combined_backward(self):
            return True

    class Rounds(TrainerCallback):
        """Waits for the parent's 'go' at each round's first step, times the round, reports it."""

        def __init__(self):
            self.peak, self.sampling = 0, False

        def _sample_heap(self):
            start = heap_in_use()
            while self.sampling:
                self.peak = max(self.peak, heap_in_use() - start)
                time.sleep(0.001)

        def on_step_begin(self, args, state, control, **kw):
            done = state.global_step - warmup
            if done >= 0 and done % steps == 0:
                if done == 0 and rank == 0:
                    print("READY", flush=True)
                if rank == 0:  # the processes of a -zero2 worker share its stdin: the first reads, all start
                    sys.stdin.readline()
                if zero2:
                    torch.distributed.barrier()
                self.peak = 0
                if gpu:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                else:
                    self.sampling = True
                    self.sampler = threading.Thread(target=self._sample_heap, daemon=True)
                    self.sampler.start()
                self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            done = state.global_step - warmup
            if done > 0 and done % steps == 0:
                if gpu:
                    torch.cuda.synchronize()
                    self.peak = torch.cuda.max_memory_allocated()
                elapsed = time.perf_counter() - self.t0
                self.sampling = False
                if not gpu:
                    self.sampler.join()
                if zero2:  # the slower process's time, the larger process's peak
                    both = torch.tensor([elapsed, float(self.peak)], dtype=torch.float64)
                    torch.distributed.all_reduce(both, op=torch.distributed.ReduceOp.MAX)
                    elapsed, self.peak = both[0].item(), int(both[1].item())
                if rank == 0:
                    print("RESULT " + json.dumps({"step_s": elapsed / steps, "peak_bytes": self.peak}), flush=True)

    gpu = torch.cuda.is_available()
    zero2 = shape.endswith("-zero2")
    rank = int(os.environ.get("RANK", 0))
    model, data, batch = build(shape, preset)
    extra = dict(deepspeed=ZERO2, ddp_backend=None if gpu else "gloo") if zero2 else {}
    if zero2:
        batch //= PROCESSES
    args = MaskSubConfig(
        output_dir="/tmp/masksub-overhead", masksub_type="mask" if run == "combined" else run,
        per_device_train_batch_size=batch, max_steps=warmup + steps * rounds, optim="sgd", learning_rate=1e-4,
        logging_steps=10_000, save_strategy="no", report_to=[], disable_tqdm=True, bf16=gpu, use_cpu=not gpu,
        dataloader_num_workers=2 if gpu else 0, remove_unused_columns=False, **extra)
    cls = {"none": Trainer, "combined": CombinedBackward}.get(run, MaskSubTrainer)
    collate = None
    if shape == "clip":  # as transformers' contrastive image-text example: the model computes its own loss
        from transformers import default_data_collator

        def collate(rows):
            return {**default_data_collator(rows), "return_loss": True}
    trainer = cls(model=model, args=args, train_dataset=data, callbacks=[Rounds()], data_collator=collate)
    trainer.train()


def _read(worker, prefix):
    """The next line of a worker's stdout that starts with prefix (None if it died)."""
    for line in worker.stdout:
        if line.startswith(prefix):
            return line[len(prefix):].strip()
    return None


def _last_error(worker) -> str:
    """The last line a dead worker wrote to stderr."""
    worker.wait()
    worker.stderr_file.seek(0)
    return (worker.stderr_file.read().strip().splitlines() or ["no output"])[-1]


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def measure(shape, runs, a):
    """Start a worker per configuration, then interleave `rounds` rounds; per-round results by run."""
    workers = {}
    launch, env = [sys.executable], dict(os.environ)
    if shape.endswith("-zero2"):
        launch += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(PROCESSES)]
        env.setdefault("DS_ACCELERATOR", "cpu" if not _has_cuda() else "cuda")
    for run in runs:
        cmd = launch + [__file__, "--preset", a.preset, "--warmup", str(a.warmup), "--steps", str(a.steps),
                        "--rounds", str(a.rounds), "--child", shape, run]
        errors = tempfile.TemporaryFile("w+")
        # stderr to a file: a worker that logs much (DeepSpeed, torchrun) must not block on a full pipe
        workers[run] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=errors, text=True, env=env)
        workers[run].stderr_file = errors
    results, failed = {run: [] for run in runs}, {}
    for run, worker in workers.items():  # warm-up happens one worker at a time too
        if _read(worker, "READY") is None:
            failed[run] = _last_error(worker)
    live = [r for r in runs if r not in failed]
    for i in range(a.rounds if live else 0):
        for run in live[i % len(live):] + live[:i % len(live)]:  # rotate who goes first
            if run in failed:
                continue
            workers[run].stdin.write("go\n")
            workers[run].stdin.flush()
            line = _read(workers[run], "RESULT ")
            if line is None:
                failed[run] = _last_error(workers[run])
            else:
                results[run].append(json.loads(line))
    for worker in workers.values():
        worker.stdin.close()
        worker.wait()
    return results, failed


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=list(PRESETS), default="cpu")
    parser.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps first")
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per configuration and round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; figures are medians over them")
    parser.add_argument("--shapes", default=",".join(DEFAULT_SHAPES),
                        help="comma-separated: " + ", ".join(SHAPES) + " (default: all but -zero2)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.child:
        return child(a.child[0], a.child[1], a.preset, a.warmup, a.steps, a.rounds)
    shapes = a.shapes.split(",")
    unknown = [shape for shape in shapes if shape not in SHAPES]
    if unknown:
        parser.error(f"--shapes {','.join(unknown)}: unknown; choose from {', '.join(SHAPES)}")
    if any(shape.endswith("-zero2") for shape in shapes):
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            parser.error("the -zero2 shapes need DeepSpeed: pip install -c constraints.txt -e '.[deepspeed]'")
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"device: {device}; preset {a.preset}; {a.rounds} interleaved rounds of {a.steps} steps; "
          "time and memory are medians of per-round ratios to Trainer (min-max in brackets)")
    print(f"{'model':8} {'configuration':42} {'step s':>8} {'time':>7} {'(range)':>13} {'peak MiB':>9} {'memory':>7}")
    for shape in shapes:
        results, failed = measure(shape, ALL_RUNS[shape], a)
        base = results["none"]
        for run in ALL_RUNS[shape]:
            if run in failed or not results[run] or not base:
                print(f"{shape:8} {RUNS[run]:42} failed: {failed.get(run, failed.get('none'))}")
                continue
            rounds = list(zip(results[run], base))
            time_ratio = [r["step_s"] / b["step_s"] for r, b in rounds]
            mem_ratio = [r["peak_bytes"] / max(b["peak_bytes"], 1) for r, b in rounds]
            step = statistics.median(r["step_s"] for r in results[run])
            peak = statistics.median(r["peak_bytes"] for r in results[run])
            spread = f"({min(time_ratio):.2f}-{max(time_ratio):.2f})"
            print(f"{shape:8} {RUNS[run]:42} {step:8.3f} {statistics.median(time_ratio):6.2f}x {spread:>13} "
                  f"{peak / 2**20:9.0f} {statistics.median(mem_ratio):6.2f}x", flush=True)
        print(f"{'':8} ({SHAPES[shape]})")


if __name__ == "__main__":
    main()
