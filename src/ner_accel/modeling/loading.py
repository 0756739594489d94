"""Loading models and tokenizers, from a directory or the Hub (local only when it is unreachable)."""

from __future__ import annotations

import re
from pathlib import Path

from transformers import (
    AutoConfig,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedTokenizerBase,
)

from ..errors import UsageError
from ..hub import hub_reachable, is_local
from .heads import HEADS
from .unpadding import UNPADDED, VARLEN, Packer, register_unpadded_attention, use_packed_kernel


def pretrained_kwargs(name: str, trust_remote_code: bool) -> dict:
    """Arguments for from_pretrained: never run repository code unless asked; stay local when offline."""
    if Path(name).is_file():  # e.g. .../model/config.json: the directory is what loads
        raise UsageError(f"--model {name}: is a file; pass the model directory that holds it ({Path(name).parent})")
    if not is_local(name):
        if name.startswith((".", "/", "~")) or name.count("/") > 1:  # a path, not a Hub id (owner/name)
            raise UsageError(f"--model {name}: directory not found; pass an existing model directory or a Hub id")
        if not hub_reachable():
            return {"trust_remote_code": trust_remote_code, "local_files_only": True}
    return {"trust_remote_code": trust_remote_code}


def load_error(name: str, what: str, error: OSError) -> UsageError:
    """The one-line message for a model directory or Hub id whose `what` (tokenizer, config) cannot be loaded."""
    if "local_files_only" in pretrained_kwargs(name, False):
        return UsageError(
            f"--model {name}: not a local directory and the Hugging Face Hub is unreachable (nor is it cached); "
            "pass --model <local model directory> (e.g. ../shared/models/minilm-l6-h384-uncased)"
        )
    return UsageError(f"--model {name}: cannot load its {what} ({error}); pass a model directory with one")


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
    packed lengths) left the GPU waiting, 0.60-0.97x the seed recipe against 1.42-1.68x padded. The collator now
    packs on the host (no sync), and VARLEN attends the packed row with torch's varlen_attn on CUDA; neither is
    measured on a GPU yet, so auto stays sdpa there. On CPU every skipped padding token is saved work.
    """
    if choice != "auto":
        return choice
    return "sdpa" if device_type == "cuda" else UNPADDED


def batch_packing(attention: str, compile_choice: str = "off") -> Packer | None:
    """What the collator adds for a model of this --attention: its packing (token-count buckets under --compile,
    whose layers then see a few shapes), or None for a padded model."""
    if attention not in (UNPADDED, VARLEN):
        return None
    return Packer(token_buckets=compile_choice != "off")


def load_model(
    name: str,
    labels: list[str],
    trust_remote_code: bool = False,
    from_config: bool = False,
    attention: str = UNPADDED,
    **overrides,
):
    """Pretrained body (or random weights, from_config=True) with a freshly initialised classifier.

    attention: a transformers attention implementation; the default UNPADDED runs on real tokens only, and VARLEN
    is that model with its packed row attended by torch's varlen_attn where it runs (unpadding.py).
    """
    register_unpadded_attention()
    config = model_config(name, labels, trust_remote_code, **overrides)
    head = HEADS[config.model_type]
    implementation = UNPADDED if attention == VARLEN else attention
    if from_config:
        model = head._from_config(config, attn_implementation=implementation)
    else:  # transformers prefers safetensors and opens any pickle fallback with torch.load(weights_only=True).
        model = head.from_pretrained(
            name, config=config, attn_implementation=implementation, **pretrained_kwargs(name, trust_remote_code)
        )
    if attention == VARLEN:
        use_packed_kernel(model, VARLEN)
    return model


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
