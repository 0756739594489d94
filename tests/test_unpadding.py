"""The unpadded forward (real tokens packed into one row) computes exactly what the padded model computes."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import BertConfig, XLMRobertaConfig

from ner_accel.modeling.heads import BertForTokenClassification, XLMRobertaForTokenClassification
from ner_accel.modeling.unpadding import UNPADDED, Packing, length_buckets, register_unpadded_attention

SIZES = dict(
    vocab_size=120,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=64,
    num_labels=5,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)
FAMILIES = {
    "bert": (BertForTokenClassification, BertConfig(pad_token_id=0, type_vocab_size=2, **SIZES)),
    # RoBERTa positions start after padding_idx and count non-pad tokens only.
    "xlm-roberta": (XLMRobertaForTokenClassification, XLMRobertaConfig(pad_token_id=1, **SIZES)),
}


def padded_batch(config, lengths: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    input_ids = torch.randint(3, config.vocab_size, (len(lengths), width), generator=generator)
    labels = torch.randint(0, config.num_labels, (len(lengths), width), generator=generator)
    attention_mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        attention_mask[row, :length] = 1
    input_ids[attention_mask == 0] = config.pad_token_id
    labels[attention_mask == 0] = -100
    labels[:, 0] = -100  # a special token
    return dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels)


def packed(batch: dict) -> dict:
    """The batch with its packing, as the collator (data/batching.py) adds it on the host."""
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    return {**batch, "packing": Packing.of_lengths(lengths, batch["input_ids"].shape[1])}


def twin_models(family: str):
    head, config = FAMILIES[family]
    torch.manual_seed(0)
    # Each model gets its own config: the attention implementation is stored on it.
    register_unpadded_attention()  # load_model and load_trained do this; here the heads are built directly
    unpadded = head._from_config(copy.deepcopy(config), attn_implementation=UNPADDED)
    padded = head._from_config(copy.deepcopy(config), attn_implementation="sdpa")
    assert unpadded.config._attn_implementation == UNPADDED and padded.config._attn_implementation == "sdpa"
    padded.load_state_dict(unpadded.state_dict())
    return unpadded, padded


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("lengths", [[7, 3, 5, 1], [6, 6], [9], [40, 3, 2, 9, 33]])
def test_unpadded_forward_and_gradients_equal_the_padded_model(family, lengths):
    unpadded, padded = twin_models(family)
    batch = padded_batch(unpadded.config, lengths)
    ours, reference = unpadded(**packed(batch)), padded(**batch)
    real = batch["attention_mask"].bool()
    assert ours.logits.shape == reference.logits.shape
    torch.testing.assert_close(ours.logits[real], reference.logits[real], rtol=1e-5, atol=1e-6)
    assert (ours.logits[~real] == 0).all()
    torch.testing.assert_close(ours.loss, reference.loss, rtol=1e-5, atol=1e-6)
    ours.loss.backward()
    reference.loss.backward()
    gradients = dict(padded.named_parameters())
    for name, parameter in unpadded.named_parameters():
        torch.testing.assert_close(parameter.grad, gradients[name].grad, rtol=1e-4, atol=1e-6, msg=name)


def test_token_type_ids_are_packed_with_the_tokens():
    unpadded, padded = twin_models("bert")
    batch = padded_batch(unpadded.config, [5, 8, 2])
    batch["token_type_ids"] = (torch.arange(8) >= 4).long().expand(3, 8).clone()
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(
        unpadded(**packed(batch)).logits[real], padded(**batch).logits[real], rtol=1e-5, atol=1e-6
    )


def test_layer_outputs_requested_run_the_padded_layout():
    unpadded, _ = twin_models("bert")
    batch = padded_batch(unpadded.config, [4, 2])
    outputs = unpadded(**packed(batch), output_hidden_states=True)
    assert outputs.hidden_states[-1].shape[:2] == (2, 4)


def test_packing_round_trip():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    values = torch.arange(12).view(3, 4)
    packing = Packing.of_lengths(mask.sum(dim=1).tolist(), mask.shape[1])
    assert packing.pack(values).tolist() == [[0, 1, 2, 4, 8, 9, 10, 11]]
    assert packing.unpack(packing.pack(values)).tolist() == [[0, 1, 2, 0], [4, 0, 0, 0], [8, 9, 10, 11]]
    assert packing.positions.tolist() == [0, 1, 2, 4, 8, 9, 10, 11]  # flat (row * length + column) positions


def test_training_attention_defaults_to_unpadded_off_cuda_and_sdpa_on_cuda():
    from ner_accel.modeling.loading import resolve_attention
    from ner_accel.options.train_config import TrainConfig

    assert TrainConfig().attention == "auto"
    assert resolve_attention("auto", "cpu") == UNPADDED
    assert resolve_attention("auto", "cuda") == "sdpa"  # the host sync per forward stalls the GPU (BENCHMARKS.md)
    assert resolve_attention(UNPADDED, "cuda") == UNPADDED  # an explicit choice is kept on every device
    assert resolve_attention("eager", "cpu") == "eager"


def test_attention_buckets_pad_each_length_class_to_its_own_longest():
    # Packed row: sentence 0 holds tokens 0-511, sentence 1 512-561, sentence 2 562-601, sentence 4 602-604.
    buckets = length_buckets([512, 50, 40, 0, 3])
    assert [tuple(b.real.shape) for b in buckets] == [(1, 512), (2, 50), (1, 3)]  # the empty sentence is in none
    long, middle, short = buckets
    assert middle.real.sum(dim=1).tolist() == [50, 40]
    assert middle.tokens.tolist() == list(range(512, 602))
    assert middle.slots.tolist() == list(range(50)) + list(range(50, 90))
    assert short.tokens.tolist() == [602, 603, 604] and short.slots.tolist() == [0, 1, 2]


def test_a_packed_row_that_arrives_without_its_packing_raises():
    """If a transformers release stopped passing `packing` through its layers, attention would see one row and no
    mask: attending across the whole row would mix sentences, so it refuses."""
    unpadded, _ = twin_models("bert")
    batch = packed(padded_batch(unpadded.config, [5, 3]))
    packing = batch["packing"]
    positions = torch.arange(5).expand(2, 5)
    with pytest.raises(RuntimeError, match="without its packing"):
        unpadded.bert(packing.pack(batch["input_ids"]), position_ids=packing.pack(positions))  # no packing=


def test_without_packing_or_mask_the_unpadded_model_runs_padded():
    unpadded, padded = twin_models("xlm-roberta")
    batch = padded_batch(unpadded.config, [6, 6])
    torch.testing.assert_close(
        unpadded(input_ids=batch["input_ids"]).logits, padded(input_ids=batch["input_ids"]).logits, rtol=1e-5, atol=1e-6
    )
