from transformers import AutoModelForSequenceClassification, AutoTokenizer


def test_tiny_bert_dir_loads_offline(tiny_bert_dir):
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    enc = tok(["a gorgeous, witty film"], return_tensors="pt")
    assert tok.unk_token_id not in enc["input_ids"][0, 1:-1].tolist()
    assert model(**enc).logits.shape == (1, 2)
