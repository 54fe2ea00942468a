"""transformers image-text checkpoints (CLIPModel, SiglipModel, VisionTextDualEncoderModel...) for run_clip.py.

The model is trained as transformers' contrastive image-text example trains it: rows of
pixel_values (the checkpoint's image processor), input_ids / attention_mask (its tokenizer,
padded to --context_length) and return_loss=True, the model's own loss. At the end the output
directory holds what `from_pretrained` needs: the model, its tokenizer and its image processor.
"""
import inspect
import os
from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, default_collate

from . import clip as data

TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def check_model(name_or_path: str, mode: str) -> None:
    """Refuse what cannot work before any data is read."""
    if mode != "contrastive":
        raise ValueError(f"--mode {mode} works with open_clip models (--model); a --model_name_or_path image-text "
                         "model trains contrastively (--mode contrastive).")
    if os.path.isdir(name_or_path) and not os.path.isfile(os.path.join(name_or_path, "config.json")):
        raise FileNotFoundError(f"--model_name_or_path {name_or_path}: no config.json in that directory; give a "
                                "directory written by save_pretrained or a hub id (e.g. openai/clip-vit-base-patch32).")


def features(output) -> torch.Tensor:
    """get_image_features / get_text_features return a tensor in older transformers, an output with the projected
    pooler_output in 5.x."""
    return output.pooler_output if hasattr(output, "pooler_output") else output


def build(name_or_path: str, mask_text: bool = False):
    """(model, tokenizer, image processor, description) for a transformers image-text checkpoint."""
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    try:
        model = AutoModel.from_pretrained(name_or_path)
    except OSError as err:  # neither a local checkpoint nor a reachable hub id
        raise ValueError(f"--model_name_or_path {name_or_path}: cannot load it ({str(err).splitlines()[0]}); give a "
                         "directory written by save_pretrained or a hub id.") from err
    if not (hasattr(model, "vision_model") and hasattr(model, "text_model") and hasattr(model, "get_image_features")):
        raise ValueError(f"--model_name_or_path {name_or_path} is a {type(model).__name__}: run_clip.py needs an image-text "
                         "model with a vision_model and a text_model returning logits_per_image (CLIPModel, "
                         "SiglipModel, VisionTextDualEncoderModel...).")
    model.mask_text = mask_text  # read by the image-text family: also drop caption tokens in the sub-branch
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    image_processor = AutoImageProcessor.from_pretrained(name_or_path)
    return model, tokenizer, image_processor, f"transformers {type(model).__name__} from {name_or_path}"


def caption_length(model, context_length: int) -> int:
    limit = getattr(getattr(model.config, "text_config", None), "max_position_embeddings", None)
    return min(context_length, limit) if limit else context_length


class ImageTextDataset(Dataset):
    """Rows {pixel_values, input_ids, attention_mask...}: images through the image processor, captions tokenised
    once to `max_length` (SigLIP is trained on captions padded to a fixed length; CLIP's causal tower ignores padding)."""

    def __init__(self, pairs: data.Pairs, image_processor, tokenizer, max_length: int, accepted: Sequence[str]):
        self.pairs, self.image_processor = pairs, image_processor
        enc = tokenizer(list(pairs.captions), padding="max_length", truncation=True, max_length=max_length,
                        return_tensors="pt")
        self.text = {k: v for k, v in enc.items() if k in TEXT_INPUTS and k in accepted}

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        pixels = self.image_processor(images=data.to_pil(self.pairs.images[i]), return_tensors="pt")["pixel_values"][0]
        return {"pixel_values": pixels, **{k: v[i] for k, v in self.text.items()}}


def collate(rows):
    """As the transformers example's collate_fn: stacked tensors and return_loss=True (the model's own loss)."""
    return {**default_collate(rows), "return_loss": True}


@torch.no_grad()
def embed_texts(model, tokenizer, captions: Sequence[str], max_length: int, accepted: Sequence[str]) -> torch.Tensor:
    device = next(model.parameters()).device
    enc = tokenizer(list(captions), padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    enc = {k: v.to(device) for k, v in enc.items() if k in TEXT_INPUTS and k in accepted}
    return F.normalize(features(model.get_text_features(**enc)).float(), dim=-1)


@torch.no_grad()
def evaluate(model, dataset: ImageTextDataset, tokenizer, max_length: int, batch_size: int = 256) -> Dict[str, float]:
    """Zero-shot accuracy (class-name prompts, when the pairs have classes) and image<->text recall@1/5/10."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    images, texts = [], []
    for batch in torch.utils.data.DataLoader(dataset, batch_size=batch_size):
        batch = {k: v.to(device) for k, v in batch.items()}
        images.append(F.normalize(features(model.get_image_features(pixel_values=batch.pop("pixel_values"))).float(), dim=-1).cpu())
        texts.append(F.normalize(features(model.get_text_features(**batch)).float(), dim=-1).cpu())
    accepted = tuple(dataset.text)
    classes = None
    pairs = dataset.pairs
    if pairs.labels is not None and pairs.classnames:
        classes = torch.stack([F.normalize(embed_texts(model, tokenizer, [t.format(c) for t in data.TEMPLATES],
                                                       max_length, accepted).mean(0), dim=-1).cpu()
                               for c in pairs.classnames])
    model.train(was_training)
    labels = torch.tensor(pairs.labels) if pairs.labels is not None else None
    return data.retrieval_metrics(torch.cat(images), torch.cat(texts), labels, classes)


def accepted_inputs(model) -> Sequence[str]:
    return tuple(inspect.signature(model.forward).parameters)


def train_one(model_args, training_args, train_pairs: data.Pairs, val_pairs: data.Pairs, resume=None) -> Dict:
    """Train, save (model, tokenizer, image processor: from_pretrained loads the directory), evaluate on process 0."""
    model, tokenizer, image_processor, description = build(model_args.model_name_or_path, model_args.mask_text)
    max_length = caption_length(model, model_args.context_length)
    accepted = accepted_inputs(model)
    train_set = ImageTextDataset(train_pairs, image_processor, tokenizer, max_length, accepted)
    val_set = ImageTextDataset(val_pairs, image_processor, tokenizer, max_length, accepted)
    trainer = data.CLIPEvalTrainer(model=model, args=training_args, train_dataset=train_set, eval_dataset=val_set,
                                   data_collator=collate, evaluate_fn=lambda m: evaluate(m, val_set, tokenizer, max_length))
    metrics = data.train_and_evaluate(trainer, resume, len(val_set), description, train_pairs.source)
    if trainer.is_world_process_zero():  # from_pretrained(output_dir) loads all three
        tokenizer.save_pretrained(training_args.output_dir)
        image_processor.save_pretrained(training_args.output_dir)
    return metrics
