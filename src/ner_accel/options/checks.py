"""What each numeric option must satisfy, checked the same way for every command (train's dataclass, evaluate's and
predict's parsed arguments): one rule per option name, one message shape."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import UsageError


def _positive(value: float) -> bool:
    return value > 0


def _not_negative(value: float) -> bool:
    return value >= 0


# What each numeric option must satisfy, and how the error says it; an unset option (None) is not checked.
VALUE_RULES: dict[str, tuple[Callable[[float], bool], str]] = {
    "num_train_epochs": (_positive, "must be a positive integer"),
    "per_device_train_batch_size": (_positive, "must be a positive integer"),
    "per_device_eval_batch_size": (_positive, "must be a positive integer"),
    "gradient_accumulation_steps": (_positive, "must be a positive integer"),
    "logging_steps": (_positive, "must be a positive integer"),
    "keep_checkpoints": (_positive, "must be a positive integer"),
    "max_train_samples": (_positive, "must be a positive integer"),
    "max_eval_samples": (_positive, "must be a positive integer"),
    "eval_steps": (_positive, "must be a positive integer"),
    "checkpoint_steps": (_positive, "must be a positive integer"),
    "patience": (_positive, "must be a positive integer"),
    "max_length": (lambda value: value >= 3, "must leave room for special tokens and a word (3 or more)"),
    "learning_rate": (_positive, "must be positive"),
    "warmup_steps": (_not_negative, "must not be negative"),
    "warmup_ratio": (lambda value: 0 <= value < 1, "must be in [0, 1)"),
    "weight_decay": (_not_negative, "must not be negative"),
    "max_grad_norm": (_not_negative, "must not be negative"),
    "dataloader_num_workers": (_not_negative, "must not be negative"),
    "layer_lr_decay": (lambda value: 0 < value <= 1, "must be in (0, 1]"),
    # evaluate and predict
    "per_device_batch_size": (_positive, "must be a positive integer"),
    "batch_size": (_positive, "must be a positive integer"),
    "chunk_size": (_positive, "must be a positive integer"),
    "worst": (_not_negative, "must not be negative"),
    "top_tokens": (_not_negative, "must not be negative"),
    "overlap": (_not_negative, "must not be negative"),
}


def check_values(options: dict) -> None:
    """Refuse the first option whose value breaks its rule, naming the flag, the rule and the value; an unset
    option (None) and options without a rule are not checked."""
    for name, value in options.items():
        if name in VALUE_RULES and value is not None and not VALUE_RULES[name][0](value):
            raise UsageError(f"--{name.replace('_', '-')} {VALUE_RULES[name][1]}, got {value}")
