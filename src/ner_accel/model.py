"""The seed's token-classification head over an encoder body, and loading it with its tokenizer."""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForTokenClassification,
    AutoTokenizer,
    BertConfig,
    BertModel,
    BertPreTrainedModel,
    PreTrainedTokenizerBase,
    XLMRobertaConfig,
    XLMRobertaModel,
    XLMRobertaPreTrainedModel,
)
from transformers.modeling_outputs import TokenClassifierOutput
from transformers.models.xlm_roberta.modeling_xlm_roberta import XLMRobertaEmbeddings

from .errors import UsageError
from .hub import load_error, pretrained_kwargs
from .unpadding import UNPADDED, Packing, register_unpadded_attention


class EncoderForTokenClassification:
    """Encoder body without pooler, dropout, linear classifier, cross-entropy ignoring -100 (the seed's head).

    Mixed into each encoder family's PreTrainedModel below, so the logic lives once. Parameter names match
    transformers' own *ForTokenClassification, so a saved model loads there with no ner_accel import.
    """

    encoder_class: type

    def __init__(self, config) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        # add_pooling_layer=False: every hidden state is needed, not only the one of the first token.
        setattr(self, self.base_model_prefix, self.encoder_class(config, add_pooling_layer=False))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
        **kwargs,
    ) -> TokenClassifierOutput:
        """num_items_in_batch: labelled tokens in the whole effective batch, to normalise the summed loss by.

        With the UNPADDED attention the encoder, dropout and classifier run on the batch's real tokens only
        (see unpadding.py); logits come back in the padded (batch, length, labels) layout either way.
        """
        encoder = getattr(self, self.base_model_prefix)
        packing = self.packing(input_ids, attention_mask, kwargs)
        if packing is None:
            outputs = encoder(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, **kwargs)
        else:
            outputs = encoder(
                packing.pack(input_ids),
                token_type_ids=None if token_type_ids is None else packing.pack(token_type_ids),
                position_ids=packing.pack(self.padded_position_ids(input_ids)),
                packing=packing,
                **kwargs,
            )
            labels = None if labels is None else packing.pack(labels)
        logits = self.classifier(self.dropout(outputs[0]))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits.view(-1, self.num_labels).float(), labels.reshape(-1), ignore_index=-100, reduction="sum"
            )
            loss = loss / (num_items_in_batch if num_items_in_batch is not None else (labels != -100).sum())
        return TokenClassifierOutput(
            loss=loss,
            logits=logits if packing is None else packing.unpack(logits),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def packing(self, input_ids, attention_mask, kwargs) -> Packing | None:
        """How to pack this forward's real tokens, or None to run padded (per-layer outputs keep their layout)."""
        if self.config._attn_implementation != UNPADDED or attention_mask is None or input_ids is None:
            return None
        if "position_ids" in kwargs or any(
            kwargs.get(name, getattr(self.config, name, False))
            for name in ("output_hidden_states", "output_attentions")
        ):
            return None
        return Packing.of(attention_mask)

    def padded_position_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The position ids the encoder's embeddings would use for this padded batch."""
        raise NotImplementedError


class XLMRobertaForTokenClassification(EncoderForTokenClassification, XLMRobertaPreTrainedModel):
    config_class = XLMRobertaConfig
    encoder_class = XLMRobertaModel

    def padded_position_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        # RoBERTa counts positions over non-pad tokens, starting after padding_idx.
        return XLMRobertaEmbeddings.create_position_ids_from_input_ids(input_ids, self.config.pad_token_id)


class BertForTokenClassification(EncoderForTokenClassification, BertPreTrainedModel):
    config_class = BertConfig
    encoder_class = BertModel

    def padded_position_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)


HEADS = {"xlm-roberta": XLMRobertaForTokenClassification, "bert": BertForTokenClassification}


def sequence_limit(tokenizer: PreTrainedTokenizerBase, requested: int | None = None) -> int:
    """Sub-tokens per sequence: what was asked for, within the tokenizer's limit and at most 512 (the position
    embeddings of BERT and XLM-R; some tokenizers report a huge model_max_length)."""
    return min(requested or tokenizer.model_max_length, tokenizer.model_max_length, 512)


def load_tokenizer(name: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """A fast tokenizer (word_ids() is what aligns labels to sub-tokens)."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, **pretrained_kwargs(name, trust_remote_code))
    except (OSError, ValueError) as error:  # ValueError: a config.json without model_type, no tokenizer files
        raise load_error(name, "tokenizer", error) from error
    if not tokenizer.is_fast:
        raise UsageError(
            f"--model {name}: the tokenizer is a slow (Python) tokenizer without word_ids(); "
            "use a model that ships tokenizer.json (a fast tokenizer)"
        )
    return tokenizer


def model_config(name: str, labels: list[str], trust_remote_code: bool = False, **overrides):
    """The seed's AutoConfig step: the pretrained config with our label set."""
    try:
        config = AutoConfig.from_pretrained(
            name,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            **pretrained_kwargs(name, trust_remote_code),
            **overrides,
        )
    except (OSError, ValueError) as error:
        raise load_error(name, "config", error) from error
    if config.model_type not in HEADS:
        raise UsageError(
            f"--model {name}: model type '{config.model_type}' has no head here; use one of {sorted(HEADS)}"
        )
    return config


def resolve_attention(choice: str, device_type: str) -> str:
    """--attention auto: transformers' padded sdpa on CUDA, the unpadded forward elsewhere.

    Measured on an H200 at batch 24 (BENCHMARKS.md, "GPU"): the unpadded forward's host sync per batch (the
    packed lengths) leaves the GPU waiting, 0.60-0.97x the seed recipe against 1.42-1.68x padded. On CPU every
    skipped padding token is saved work, and there is no device queue to stall.
    """
    if choice != "auto":
        return choice
    return "sdpa" if device_type == "cuda" else UNPADDED


def load_model(
    name: str,
    labels: list[str],
    trust_remote_code: bool = False,
    from_config: bool = False,
    attention: str = UNPADDED,
    **overrides,
):
    """Pretrained body (or random weights, from_config=True) with a freshly initialised classifier.

    attention: a transformers attention implementation; the default UNPADDED runs on real tokens only.
    """
    register_unpadded_attention()
    config = model_config(name, labels, trust_remote_code, **overrides)
    head = HEADS[config.model_type]
    if from_config:
        return head._from_config(config, attn_implementation=attention)
    # transformers prefers safetensors and opens any pickle fallback with torch.load(weights_only=True).
    return head.from_pretrained(
        name, config=config, attn_implementation=attention, **pretrained_kwargs(name, trust_remote_code)
    )


def load_trained(directory: str, trust_remote_code: bool = False):
    """A saved token classifier for inference: ner_accel's head (unpadded) where it has one, else transformers'."""
    kwargs = pretrained_kwargs(directory, trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(directory, **kwargs)
    except (OSError, ValueError) as error:
        raise load_error(directory, "config", error) from error
    register_unpadded_attention()
    labels = [str(label) for label in config.id2label.values()]
    if all(re.fullmatch(r"LABEL_\d+", label) for label in labels):  # a pretrained encoder's untrained head
        raise UsageError(
            f"--model {directory}: its labels are transformers' placeholders ({', '.join(labels[:3])}, ...), not "
            "entity tags; pass a model fine-tuned for NER, e.g. a ner_accel.train run directory"
        )
    try:
        if config.model_type in HEADS:
            return HEADS[config.model_type].from_pretrained(
                directory, config=config, attn_implementation=UNPADDED, **kwargs
            )
        return AutoModelForTokenClassification.from_pretrained(directory, config=config, **kwargs)
    except (OSError, ValueError) as error:
        raise load_error(directory, "model", error) from error
