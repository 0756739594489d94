"""One typed configuration for a training run, read from the command line and an optional YAML/JSON file."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from transformers import HfArgumentParser

from ..data.corpus import CorpusOptions
from ..data.readers import READ_HELP
from ..errors import UsageError
from ..inference.decoding import DEFAULT_DECODING
from ..reporting.tracking import REPORT_TO_CHOICES, resolve_trackers
from .checks import check_values
from .parsing import DataclassParser


@dataclass
class TrainConfig:
    """Everything a run needs; defaults follow the seed recipe (xlm-roberta-base on PAN-X German)."""

    # Model and data
    model: str = field(
        default="xlm-roberta-base",
        metadata={"help": "Hub id or local directory of a pretrained encoder with a fast tokenizer."},
    )
    dataset: str = field(
        default="google/xtreme",
        metadata={"help": "Hub id (or local copy in the Hub layout) of XTREME; PAN-X.<lang> is read from it."},
    )
    languages: list[str] = field(
        default_factory=lambda: ["de"], metadata={"help": "PAN-X languages to train on (Hub data)."}
    )
    data_dir: list[str] | None = field(
        default=None,
        metadata={
            "help": "Local directories with train/validation[/test] .conll or .jsonl files (replaces --dataset)."
        },
    )
    language_fractions: list[float] | None = field(
        default=None,
        metadata={"help": "Fraction of each language's training set to use, one per language (multilingual runs)."},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N training sentences of each language or data directory."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N validation sentences of each language or data directory."}
    )
    max_length: int | None = field(
        default=None, metadata={"help": "Truncate to this many sub-tokens (default: the model's limit, at most 512)."}
    )
    tag_scheme: Literal["auto", "iob1", "iob2", "bioes", "iobes", "bilou"] = field(
        default="auto",
        metadata={"help": "Tag scheme of --data-dir files (auto: detected per file); read as IOB2 whatever it is."},
    )
    token_column: str | None = field(default=None, metadata={"help": READ_HELP["token_column"]})
    tag_column: str | None = field(default=None, metadata={"help": READ_HELP["tag_column"]})
    annotator: str | None = field(default=None, metadata={"help": READ_HELP["annotator"]})
    snap_spans: bool = field(default=False, metadata={"help": READ_HELP["snap_spans"]})
    nested_spans: Literal["refuse", "outer", "inner"] = field(
        default="refuse", metadata={"help": READ_HELP["nested_spans"]}
    )
    label_all_tokens: bool = field(
        default=False,
        metadata={"help": "Label every sub-token of a word (continuations become I-), not only the first."},
    )
    attention: Literal["auto", "ner_accel_unpadded", "ner_accel_varlen", "sdpa", "eager", "flash_attention_2"] = field(
        default="auto",
        metadata={
            "help": "ner_accel_unpadded: every layer but attention on real tokens only (same results, less work); "
            "ner_accel_varlen: the same, attended by torch's varlen_attn on CUDA at bf16/fp16 without attention "
            "dropout (evaluation; training keeps the buckets while the model has attention dropout), not measured "
            "on a GPU yet; sdpa or eager: transformers' padded model; flash_attention_2 where the flash-attn package "
            "is installed; auto: sdpa on CUDA (faster there, see BENCHMARKS.md), ner_accel_unpadded elsewhere."
        },
    )
    decode: Literal["argmax", "viterbi"] = field(
        default=DEFAULT_DECODING,
        metadata={
            "help": "How validation reads tags from the word-level label probabilities: each word's most probable "
            "(argmax), or the most probable sequence IOB2 allows (viterbi, the default: no I-X after O or another type; "
            "0.014-0.056 F1 better in BENCHMARKS.md)."
        },
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow model code from the model repository to run (off: never executed)."}
    )

    # Optimisation
    num_train_epochs: int = field(default=3, metadata={"help": "Passes over the training set."})
    per_device_train_batch_size: int = field(default=24, metadata={"help": "Sentences per device per micro-batch."})
    # Larger than training's: no gradients to hold, and batches of sorted lengths (1.5x the sentences/s of 24 on CPU).
    per_device_eval_batch_size: int = field(default=96, metadata={"help": "Sentences per device in evaluation."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate of AdamW.", "aliases": ["--lr"]})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases and LayerNorm)."})
    lr_scheduler_type: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt"
    ] = field(
        default="linear",
        metadata={
            "help": "A transformers.get_scheduler schedule stepped once per optimizer step (no extra arguments)."
        },
    )
    warmup_steps: int = field(default=0, metadata={"help": "Warmup optimizer steps (wins over --warmup-ratio)."})
    warmup_ratio: float = field(default=0.0, metadata={"help": "Warmup as a fraction of all optimizer steps."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Clip gradients to this global norm (0: off)."})
    layer_lr_decay: float = field(
        default=1.0,
        metadata={"help": "Each encoder layer learns at this factor times the layer above (1: one rate for all)."},
    )
    freeze_word_embeddings: bool = field(
        default=False,
        metadata={"help": "Keep the word-embedding matrix fixed (XLM-R's 250k x hidden, most of the parameters)."},
    )
    seed: int = field(default=42, metadata={"help": "Seed for weights, dropout and batch order."})
    recipe: Literal["ner_accel", "seed", "small-encoder"] = field(
        default="ner_accel",
        metadata={
            "help": "Defaults for the hyper-parameters: ner_accel's, the seed notebook's (lr 5e-5, no warmup, "
            "one rate for all layers, every weight trained), or small-encoder's for encoders about 384 wide (lr "
            "2e-4, layer-wise decay 0.9); flags and --config still override them."
        },
    )

    # Runtime
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = field(
        default="auto",
        metadata={"help": "auto: the accelerate config's choice, else bf16 where the device supports it, else no."},
    )
    group_by_length: bool = field(
        default=True, metadata={"help": "Batch sentences of similar length together (same data, less padding)."}
    )
    dataloader_num_workers: int = field(default=0, metadata={"help": "Worker processes for collation."})
    compile: Literal["off", "regions", "graphs"] = field(
        default="off",
        metadata={
            "help": "regions: torch.compile the encoder layer in place (compiled once, shared by every layer), with "
            "packed rows topped up to a few token counts (changes the dropout stream); graphs: the same with CUDA "
            "graphs (mode reduce-overhead) on CUDA. Off until measured on a GPU (BENCHMARKS.md)."
        },
    )
    non_blocking: bool = field(
        default=False,
        metadata={"help": "Copy batches to the GPU from pinned memory without waiting (accelerate's non_blocking)."},
    )

    # Logging, evaluation and artifacts
    output_dir: str = field(default="artifacts", metadata={"help": "Runs are written to <output-dir>/<run-name>/."})
    run_name: str | None = field(
        default=None, metadata={"help": "Default: <model>-finetuned-panx-<languages>, like the seed."}
    )
    logging_steps: int = field(default=50, metadata={"help": "Log loss and learning rate every N optimizer steps."})
    report_to: list[str] = field(
        default_factory=lambda: ["none"],
        metadata={"help": f"Experiment trackers to log to: {', '.join(REPORT_TO_CHOICES)} (several at once)."},
    )
    eval_steps: int | None = field(
        default=None, metadata={"help": "Evaluate every N optimizer steps (default: each epoch)."}
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace a finished run already in the run directory."})
    push_to_hub: str | None = field(
        default=None,
        metadata={"help": "Hub repository (user/name) to upload the saved model/ to after the final save."},
    )

    # Checkpoints and resume
    checkpoint_steps: int | None = field(
        default=None, metadata={"help": "Save a resumable checkpoint every N optimizer steps (and at each epoch end)."}
    )
    keep_checkpoints: int = field(
        default=2,
        metadata={
            "help": "Keep the last K checkpoints that verify (2: one to fall back on if the newest is damaged; "
            "with --load-best the best is kept too)."
        },
    )
    load_best: bool = field(default=False, metadata={"help": "Make the final model the best by validation F1."})
    patience: int | None = field(default=None, metadata={"help": "Stop after N evaluations without a better F1."})
    resume: str | None = field(default=None, metadata={"help": "'latest' or a checkpoint directory to continue from."})

    def __post_init__(self) -> None:
        check_values(vars(self))
        resolve_trackers(self.report_to)  # an unknown or uninstalled tracker fails before any work
        sources = self.data_dir if self.data_dir else self.languages
        if self.language_fractions is not None:
            if len(self.language_fractions) != len(sources):
                raise UsageError(
                    f"--language-fractions has {len(self.language_fractions)} values for {len(sources)} "
                    "languages/data directories; give one fraction each"
                )
            if not all(0 < f <= 1 for f in self.language_fractions):
                raise UsageError(f"--language-fractions must lie in (0, 1], got {self.language_fractions}")

    def loop_settings(self, num_processes: int) -> dict:
        """What fixes the sequence of batches and the learning-rate schedule: a checkpoint resumes only under
        the same values, so that the resumed run is the run that was interrupted."""
        # Local files: how they are read decides the sentences too (columns, annotator, spans).
        reading = ["tag_scheme", "token_column", "tag_column", "annotator", "snap_spans", "nested_spans"]
        source = ["data_dir", *reading] if self.data_dir else ["dataset", "languages"]
        names = [
            *source, "language_fractions", "max_train_samples", "max_length", "label_all_tokens",
            "seed", "group_by_length", "per_device_train_batch_size", "gradient_accumulation_steps",
            "num_train_epochs", "learning_rate", "weight_decay", "lr_scheduler_type", "warmup_steps", "warmup_ratio",
            "layer_lr_decay", "freeze_word_embeddings",
        ]  # fmt: skip
        settings = {name: getattr(self, name) for name in names}
        if self.data_dir:  # the same directories, however the path is spelled
            settings["data_dir"] = [os.path.abspath(d) for d in self.data_dir]
        model = os.path.abspath(self.model) if os.path.isdir(self.model) else self.model
        return {**settings, "model": model, "num_processes": num_processes}

    def corpus_options(self) -> CorpusOptions:
        """The options that say which corpus this run reads."""
        return CorpusOptions(**{f.name: getattr(self, f.name) for f in dataclasses.fields(CorpusOptions)})

    @property
    def default_run_name(self) -> str:
        model = Path(self.model.rstrip("/")).name
        if self.data_dir:
            data = "-".join(Path(d.rstrip("/")).name for d in self.data_dir)
        else:
            data = "panx-" + "-".join(self.languages)
        return f"{model}-finetuned-{data}"

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / (self.run_name or self.default_run_name)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# The hyper-parameters each --recipe sets as defaults. The seed notebook's stay reproducible one flag away when
# ner_accel's own defaults move on.
RECIPES: dict[str, dict] = {
    "ner_accel": {},
    "seed": dict(
        learning_rate=5e-5, weight_decay=0.01, lr_scheduler_type="linear", warmup_steps=0, warmup_ratio=0.0,
        layer_lr_decay=1.0, freeze_word_embeddings=False, decode="argmax",  # its compute_metrics reads the argmax
    ),
    # The trials' winner on multilingual-e5-small (hidden 384): ahead of the seed recipe on de, fr and en for each
    # of seeds 42, 43, 44 (mean F1 +0.029 over seeds 43-44, +0.046 on 42; BENCHMARKS.md). Not the default:
    # xlm-roberta-base, twice as wide, is fine-tuned at 2e-5 to 5e-5.
    "small-encoder": dict(
        learning_rate=2e-4, weight_decay=0.01, lr_scheduler_type="linear", warmup_steps=0, warmup_ratio=0.0,
        layer_lr_decay=0.9, freeze_word_embeddings=False,
    ),
}  # fmt: skip


def _read_config_file(path: str) -> dict:
    """Read a YAML or JSON mapping of option names (dashes or underscores) to values."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"{path}: config file not found; pass an existing .yaml or .json file to --config")
    text = file.read_text(encoding="utf-8")
    try:
        values = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise UsageError(
            f"{path}: not valid {'JSON' if file.suffix == '.json' else 'YAML'} ({' '.join(str(error).split())}); fix the syntax"
        ) from None
    if not isinstance(values, dict):
        raise UsageError(f"{path}: expected a mapping of option names to values at the top level")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {key.replace("-", "_"): value for key, value in values.items()}
    for key in values:
        if key not in names:
            raise UsageError(f"{path}: unknown key '{key}'; run with --help for the option names")
    return values


def _takes_list(hint) -> bool:
    """list[...] or list[...] | None: the option takes several values (nargs="+")."""
    return typing.get_origin(hint) is list or any(typing.get_origin(arg) is list for arg in typing.get_args(hint))


def _typed_file_values(path: str, values: dict, config_class: type) -> dict:
    """The file's values converted and checked exactly as the same flags on the command line would be."""
    hints = typing.get_type_hints(config_class)
    unset = {f.name for f in dataclasses.fields(config_class) if f.default is None}
    argv = []
    for key, value in values.items():
        if value is None:
            if key not in unset:
                raise UsageError(f"{path}: {key} is empty; give it a value or remove the key")
            continue
        many = _takes_list(hints[key])
        if isinstance(value, dict) or (isinstance(value, list) and not many):
            raise UsageError(f"{path}: {key} takes a single value, got {value!r}")
        items = value if isinstance(value, list) else [value]  # one value for a list option: a list of one
        argv += [f"--{key}", *map(str, items)] if many else [f"--{key}={value}"]
    try:
        parsed, _ = HfArgumentParser(config_class, exit_on_error=False).parse_known_args(argv)
    except argparse.ArgumentError as error:
        raise UsageError(f"{path}: {error}; fix the value") from None
    return {key: getattr(parsed, key) for key in values if values[key] is not None}


TRAIN_DESCRIPTION = """Fine-tune a token classifier for NER (ner_accel). Every option below; --config FILE sets any of them
from YAML or JSON (the same names, dashes or underscores), and flags given here win over the file.

Local model and data, one process:
    python -m ner_accel.train --model ../shared/models/minilm-l6-h384-uncased --data-dir ../shared/data/panx/en
The default job (xlm-roberta-base on PAN-X German from the Hub), on every GPU of the node:
    accelerate launch -m ner_accel.train
"""


def parse_config(argv: list[str] | None = None, config_class: type = TrainConfig):
    """Parse argv (default sys.argv[1:]); `--config FILE` supplies values that command-line flags override."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = DataclassParser(config_class, "train", description=TRAIN_DESCRIPTION)
    parser.add_argument("--config", default=None, help="YAML or JSON file of options (flags given here win).")
    layers = argparse.ArgumentParser(add_help=False, allow_abbrev=False)  # only the two options that set defaults
    layers.add_argument("--config")
    layers.add_argument("--recipe")
    given, _ = layers.parse_known_args(argv)
    file_values = (
        _typed_file_values(given.config, _read_config_file(given.config), config_class) if given.config else {}
    )
    recipe = given.recipe or file_values.get("recipe", "ner_accel")
    # Defaults in layers: the dataclass, then the recipe's, then the config file's; command-line flags win over all.
    parser.set_defaults(**{**RECIPES.get(recipe, {}), **file_values})
    config, *_, extra = parser.parse_args_into_dataclasses(
        argv, return_remaining_strings=True, look_for_args_file=False
    )
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return config
