"""The seed's token-classification head over XLM-R and BERT bodies, running packed when the attention is unpadded."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    BertConfig,
    BertModel,
    BertPreTrainedModel,
    XLMRobertaConfig,
    XLMRobertaModel,
    XLMRobertaPreTrainedModel,
)
from transformers.modeling_outputs import TokenClassifierOutput
from transformers.models.xlm_roberta.modeling_xlm_roberta import XLMRobertaEmbeddings

from .unpadding import UNPADDED, Packing


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
        packing: Packing | None = None,
        **kwargs,
    ) -> TokenClassifierOutput:
        """num_items_in_batch: labelled tokens in the whole effective batch, to normalise the summed loss by.
        packing: where the batch's real tokens sit (the collator's, data/batching.py); with the UNPADDED attention
        the encoder, dropout and classifier then run on the real tokens only (see unpadding.py). Logits come back
        in the padded (batch, length, labels) layout either way.
        """
        encoder = getattr(self, self.base_model_prefix)
        if not self.runs_packed(packing, kwargs):
            if attention_mask is None and self.config._attn_implementation == UNPADDED:
                attention_mask = torch.ones_like(input_ids)  # a padded forward of this attention always has a mask
            outputs = encoder(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, **kwargs)
            packing = None
        else:
            # The body's embeddings, then its layers, called here rather than through its forward: a packed row has
            # no mask (attention reads the sentences' bounds from `packing`), and the forward would build one, which
            # since transformers 5.25 scans the position ids for packed sequences and reads the verdict back to the
            # host (a sync per step).
            embedded = encoder.embeddings(
                input_ids=packing.pack(input_ids),
                token_type_ids=None if token_type_ids is None else packing.pack(token_type_ids),
                position_ids=packing.pack(self.padded_position_ids(input_ids)),
            )
            outputs = encoder.encoder(embedded, attention_mask=None, packing=packing, **kwargs)
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

    def runs_packed(self, packing: Packing | None, kwargs: dict) -> bool:
        """Packed when the batch brings its packing and the attention is UNPADDED; padded when per-layer outputs
        are asked for (they keep the padded layout) or positions are given."""
        if packing is None or self.config._attn_implementation != UNPADDED or "position_ids" in kwargs:
            return False
        return not any(
            kwargs.get(name, getattr(self.config, name, False))
            for name in ("output_hidden_states", "output_attentions")
        )

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
