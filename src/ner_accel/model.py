"""The seed's token-classification head over an encoder body, and loading it with its tokenizer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
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

from .config import UsageError
from .hub import load_error, pretrained_kwargs


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
        """num_items_in_batch: labelled tokens in the whole effective batch, to normalise the summed loss by."""
        encoder = getattr(self, self.base_model_prefix)
        outputs = encoder(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, **kwargs)
        logits = self.classifier(self.dropout(outputs[0]))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits.view(-1, self.num_labels).float(), labels.view(-1), ignore_index=-100, reduction="sum"
            )
            loss = loss / (num_items_in_batch if num_items_in_batch is not None else (labels != -100).sum())
        return TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class XLMRobertaForTokenClassification(EncoderForTokenClassification, XLMRobertaPreTrainedModel):
    config_class = XLMRobertaConfig
    encoder_class = XLMRobertaModel


class BertForTokenClassification(EncoderForTokenClassification, BertPreTrainedModel):
    config_class = BertConfig
    encoder_class = BertModel


HEADS = {"xlm-roberta": XLMRobertaForTokenClassification, "bert": BertForTokenClassification}


def load_tokenizer(name: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """A fast tokenizer (word_ids() is what aligns labels to sub-tokens)."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, **pretrained_kwargs(name, trust_remote_code))
    except OSError as error:
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
    except OSError as error:
        raise load_error(name, "config", error) from error
    if config.model_type not in HEADS:
        raise UsageError(
            f"--model {name}: model type '{config.model_type}' has no head here; use one of {sorted(HEADS)}"
        )
    return config


def load_model(name: str, labels: list[str], trust_remote_code: bool = False, from_config: bool = False, **overrides):
    """Pretrained body (or random weights, from_config=True) with a freshly initialised classifier."""
    config = model_config(name, labels, trust_remote_code, **overrides)
    head = HEADS[config.model_type]
    if from_config:
        return head(config)
    # transformers prefers safetensors and opens any pickle fallback with torch.load(weights_only=True).
    return head.from_pretrained(name, config=config, **pretrained_kwargs(name, trust_remote_code))
