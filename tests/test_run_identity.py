"""A checkpoint of another run is refused with one line (checkpoints.py, trainer.py): another sub-branch setting,
label set or architecture, a checkpoint without its config, and weights that would be initialised afresh."""
import os

import pytest
from safetensors.torch import load_file, save_file

from masksub_hf import MaskSubTrainer
from masksub_hf.checkpoints import MANIFEST
from tests.helpers import args, image_dataset, tiny_bert, tiny_vit


def trained(tmp_path, digits, model=None, **kw):
    settings = dict(max_steps=2, save_strategy="steps", save_steps=2, masksub_type="mask")
    settings.update(kw)
    trainer = MaskSubTrainer(model=model or tiny_vit(), train_dataset=image_dataset(digits),
                             args=args(tmp_path, **settings))
    trainer.train()
    return str(tmp_path / "checkpoint-2")


def resume(tmp_path, digits, checkpoint, model=None, **kw):
    settings = dict(max_steps=4, masksub_type="mask")
    settings.update(kw)
    trainer = MaskSubTrainer(model=model or tiny_vit(), train_dataset=image_dataset(digits),
                             args=args(tmp_path / "again", **settings))
    return trainer.train(resume_from_checkpoint=checkpoint)


@pytest.mark.parametrize("change, difference", [
    (dict(masksub_type="drop"), "its masksub is '--masksub_type mask --masksub_ratio 0.5', this run's is "
                                "'--masksub_type drop --masksub_ratio 0.5'"),
    (dict(masksub_ratio=0.25), "this run's is '--masksub_type mask --masksub_ratio 0.25'"),
])
def test_another_sub_branch_setting_is_refused(digits, tmp_path, change, difference):
    checkpoint = trained(tmp_path, digits)
    with pytest.raises(ValueError, match="it is a checkpoint of another run") as err:
        resume(tmp_path, digits, checkpoint, **change)
    assert difference in str(err.value) and "--overwrite_output_dir" in str(err.value)


def test_another_label_set_or_architecture_is_refused(digits, tmp_path):
    checkpoint = trained(tmp_path, digits)
    with pytest.raises(ValueError, match="its num_labels is 10, this run's is 5"):
        resume(tmp_path, digits, checkpoint, model=tiny_vit(num_labels=5))
    with pytest.raises(ValueError, match="its model is 'ViTForImageClassification', this run's is "
                                         "'BertForSequenceClassification'"):
        resume(tmp_path, digits, checkpoint, model=tiny_bert())


def test_a_checkpoint_without_its_config_is_refused(digits, tmp_path):
    checkpoint = trained(tmp_path, digits)
    os.remove(os.path.join(checkpoint, "config.json"))
    os.remove(os.path.join(checkpoint, MANIFEST))  # as plain Trainer writes them: no manifest
    with pytest.raises(ValueError, match="it has no config.json to tell which model it holds"):
        resume(tmp_path, digits, checkpoint)


def test_weights_that_would_be_initialised_afresh_are_refused(digits, tmp_path):
    checkpoint = trained(tmp_path, digits)
    weights = os.path.join(checkpoint, "model.safetensors")
    tensors = load_file(weights)
    save_file({k: v for k, v in tensors.items() if "classifier" not in k}, weights, metadata={"format": "pt"})
    os.remove(os.path.join(checkpoint, MANIFEST))
    with pytest.raises(ValueError, match=r"weights of this ViTForImageClassification are missing from it .*classifier"):
        resume(tmp_path, digits, checkpoint)
