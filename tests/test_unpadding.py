"""The unpadded forward (real tokens packed into one row) computes exactly what the padded model computes."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import varlen_cpu
from transformers import BertConfig, XLMRobertaConfig

from ner_accel.modeling.heads import BertForTokenClassification, XLMRobertaForTokenClassification
from ner_accel.modeling.unpadding import (
    BUCKETS,
    UNPADDED,
    VARLEN,
    Packer,
    Packing,
    length_buckets,
    register_unpadded_attention,
    token_bucket,
    use_packed_kernel,
)

# .ci/run also runs these on the AVX2 bf16 kernels of a CPU with native bf16 (they round differently).
pytestmark = pytest.mark.numerics

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


def packed(batch: dict, token_buckets: bool = False) -> dict:
    """The batch with its packing, as the collator (data/batching.py) adds it on the host."""
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    return {**batch, "packing": Packing.of_lengths(lengths, batch["input_ids"].shape[1], token_buckets)}


def with_pad_column(batch: dict, pad_token_id: int) -> dict:
    """One more padded column, as the collator adds when token buckets find no pad position to copy."""
    pads = {"input_ids": pad_token_id, "labels": -100, "attention_mask": 0}
    return {name: F.pad(value, (0, 1), value=pads[name]) for name, value in batch.items()}


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


# ---------------------------------------------------------------------------------------------------------------
# The varlen kernel (torch.nn.attention.varlen, CUDA only: run here through tests/varlen_cpu.py) and token buckets


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("kernel", [BUCKETS, VARLEN])
@pytest.mark.parametrize("token_buckets", [False, True])
@pytest.mark.parametrize("lengths", [[7, 3, 5, 1], [6, 6], [40, 3, 2, 9, 33]])
def test_packed_kernels_and_token_buckets_equal_the_padded_model(family, kernel, token_buckets, lengths, monkeypatch):
    """Both kernels of the packed row, with and without filler tokens: the padded model's logits, loss, gradients."""
    calls = varlen_cpu.enable(monkeypatch)
    unpadded, padded = twin_models(family)
    assert use_packed_kernel(unpadded, kernel) == unpadded.config.num_hidden_layers
    batch = padded_batch(unpadded.config, lengths)
    if token_buckets and len(set(lengths)) == 1:
        batch = with_pad_column(batch, unpadded.config.pad_token_id)
    before = dict(calls)
    ours, reference = unpadded(**packed(batch, token_buckets)), padded(**batch)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(ours.logits[real], reference.logits[real], rtol=1e-5, atol=1e-6)
    assert (ours.logits[~real] == 0).all()
    torch.testing.assert_close(ours.loss, reference.loss, rtol=1e-5, atol=1e-6)
    ours.loss.backward()
    reference.loss.backward()
    gradients = dict(padded.named_parameters())
    for name, parameter in unpadded.named_parameters():
        torch.testing.assert_close(parameter.grad, gradients[name].grad, rtol=1e-4, atol=1e-6, msg=name)
    layers = unpadded.config.num_hidden_layers
    ran = {"forward": calls["forward"] - before["forward"], "backward": calls["backward"] - before["backward"]}
    assert ran == ({"forward": layers, "backward": layers} if kernel == VARLEN else {"forward": 0, "backward": 0})


def test_varlen_keeps_attention_dropout_by_the_buckets(monkeypatch):
    """varlen_attn has no dropout: a training forward with attention dropout attends by buckets, one without (or an
    evaluation) by varlen."""
    calls = varlen_cpu.enable(monkeypatch)
    head, config = FAMILIES["xlm-roberta"]
    register_unpadded_attention()
    for dropout, mode, expected in [(0.1, "train", 0), (0.1, "eval", 2), (0.0, "train", 2)]:
        model = head._from_config(copy.deepcopy(config), attn_implementation=UNPADDED)
        use_packed_kernel(model, VARLEN)
        for name, module in model.named_modules():
            if name.endswith("attention.self"):  # what transformers passes to attention as `dropout` in training
                module.dropout.p = dropout
        getattr(model, mode)()
        before = calls["forward"]
        model(**packed(padded_batch(model.config, [5, 3])))
        assert calls["forward"] - before == expected, (dropout, mode)


def test_varlen_without_a_kernel_for_the_device_attends_by_buckets():
    """On a device (or dtype) varlen_attn has no kernel for, a VARLEN model runs as the unpadded one."""
    unpadded, padded = twin_models("bert")
    use_packed_kernel(unpadded, VARLEN)
    batch = padded_batch(unpadded.config, [7, 3, 5])
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(
        unpadded(**packed(batch)).logits[real], padded(**batch).logits[real], rtol=1e-5, atol=1e-6
    )


def test_token_buckets_fill_the_row_to_a_few_sizes_with_a_fixed_count_of_sequences():
    assert [token_bucket(n) for n in (0, 1, 64, 65, 80, 81, 112, 113, 128, 129, 1000)] == [
        64, 64, 64, 80, 80, 96, 112, 128, 128, 160, 1024,
    ]  # fmt: skip
    shapes: dict[int, set] = {}
    for total in range(1, 1500, 7):
        lengths = [total // 24 + (i < total % 24) for i in range(24)]  # 24 sentences of `total` tokens
        packing = Packing.of_lengths(lengths, max(lengths) + 1, token_buckets=True)
        size = token_bucket(total)
        assert packing.positions.shape == (size,) and packing.real_tokens == total
        assert packing.cu_seqlens[-1] == size and packing.max_seqlen >= max(lengths)
        assert packing.max_seqlen & (packing.max_seqlen - 1) == 0  # a power of two: few distinct values
        assert packing.positions[total:].unique().numel() <= 1  # the filler copies one pad position
        shapes.setdefault(size, set()).add(tuple(packing.cu_seqlens.shape))
    assert all(len(counts) == 1 for counts in shapes.values()), shapes  # one cu_seqlens shape per bucket
    assert len(shapes) == 19  # 64 to 1,536 tokens: 4 sizes a doubling
    with pytest.raises(ValueError, match="pad position"):
        Packing.of_lengths([3, 3], 3, token_buckets=True)
    assert Packer()([3, 1], 3).positions.tolist() == [0, 1, 2, 3]  # no buckets: the real tokens only


def test_attention_choices_resolve_and_load(tiny_model):
    from ner_accel.modeling.loading import batch_packing, load_model, resolve_attention

    assert resolve_attention(VARLEN, "cuda") == VARLEN and resolve_attention(VARLEN, "cpu") == VARLEN
    assert resolve_attention("auto", "cuda") == "sdpa"  # varlen is not measured on a GPU yet
    assert batch_packing("sdpa") is None and batch_packing("eager", "regions") is None
    assert batch_packing(UNPADDED) == Packer() and batch_packing(VARLEN) == Packer()
    assert batch_packing(VARLEN, "graphs") == Packer(token_buckets=True)
    model = load_model(str(tiny_model), ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"], attention=VARLEN)
    assert model.config._attn_implementation == UNPADDED  # the same packed model; only its kernel differs
    kernels = {getattr(m, "packed_kernel", None) for n, m in model.named_modules() if n.endswith("attention.self")}
    assert kernels == {VARLEN}


def test_collator_with_token_buckets_adds_a_pad_column_only_when_the_rows_fill_the_width():
    from conftest import build_tokenizer

    from ner_accel.data.batching import Collator

    tokenizer = build_tokenizer()
    collate = Collator(tokenizer, pack=Packer(token_buckets=True))
    rows = [{"input_ids": [2, 7, 3], "attention_mask": [1, 1, 1], "labels": [-100, 1, -100]} for _ in range(2)]
    batch = collate([dict(row) for row in rows])
    assert batch["input_ids"].tolist() == [[2, 7, 3, 0]] * 2 and batch["labels"][:, 3].tolist() == [-100, -100]
    assert batch["attention_mask"][:, 3].tolist() == [0, 0]
    packing = batch["packing"]
    assert packing.real_tokens == 6 and packing.positions.shape == (64,) and packing.positions[6:].unique() == 3
    shorter = collate([dict(rows[0]), {"input_ids": [2, 3], "attention_mask": [1, 1], "labels": [-100, -100]}])
    assert shorter["input_ids"].shape == (2, 3) and shorter["packing"].positions[5:].unique() == 5  # its own pad
    assert Collator(tokenizer, pack=True).pack == Packer() and Collator(tokenizer, pack=None).pack is None
