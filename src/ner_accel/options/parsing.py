"""What the three commands' parsers share: their program names, --help with one spelling per flag, short errors."""

from __future__ import annotations

import argparse
import difflib
import re

from transformers import HfArgumentParser


class CommandHelp(argparse.RawDescriptionHelpFormatter):
    """--help as a user reads it: one spelling per flag (--data-dir; --data_dir is accepted too), a switch without a
    value placeholder, each default once, and what a --no-X flag does."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        spellings = [name for name in action.option_strings if "_" not in name] or action.option_strings
        if action.nargs == "?" and action.const is True:  # a switch: --overwrite (an explicit true/false works too)
            return ", ".join(spellings)
        metavar = action.metavar or {int: "N", float: "X"}.get(action.type)  # choices, else the field's name
        action = argparse.Action(spellings, action.dest, action.nargs, choices=action.choices, metavar=metavar)
        return super()._format_action_invocation(action)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.const is False and action.nargs == 0:  # HfArgumentParser's --no-X for a switch that is on
            return f"Turn {action.option_strings[-1].replace('--no-', '--', 1)} off."
        default = action.default
        if default is None or isinstance(default, bool) or default == argparse.SUPPRESS or "default" in text:
            return text
        shown = " ".join(map(str, default)) if isinstance(default, list) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


class ShortErrors:
    """Mixed into a parser: a mistake is one line naming it and the closest option, not the whole usage."""

    def add_argument(self, *names, **kwargs):
        self.__dict__.setdefault("flags", []).extend(name for name in names if name.startswith("--"))
        return super().add_argument(*names, **kwargs)

    def error(self, message: str):
        message = re.sub(r"--\w+/(--[\w-]+)", r"\1", message)  # "argument --max_length/--max-length": one spelling
        self.exit(2, f"{self.prog}: error: {message}{suggestion(message, self.__dict__.get('flags', []))}\n")


def suggestion(message: str, flags: list[str]) -> str:
    """'; did you mean --x?' for the first unknown flag in an argparse message that resembles a known one."""
    known = [flag for flag in flags if "_" not in flag]
    for unknown in re.findall(r"(--[\w-]+)", message.partition("unrecognized arguments:")[2]):
        close = difflib.get_close_matches(unknown.replace("_", "-"), known, n=1, cutoff=0.6)
        if close:
            return f"; did you mean {close[0]}? (--help lists every option)"
    return " (--help lists every option)"


class CommandParser(ShortErrors, argparse.ArgumentParser):
    """The parser of `python -m ner_accel.<command>`."""

    def __init__(self, command: str, description: str | None, usage: str) -> None:
        super().__init__(
            prog=f"python -m ner_accel.{command}",
            usage=f"%(prog)s {usage}",
            description=description,
            formatter_class=CommandHelp,
            allow_abbrev=False,  # --num-train-epoch must not silently mean --num-train-epochs
        )


class DataclassParser(ShortErrors, HfArgumentParser):
    """HfArgumentParser (flags from a typed dataclass) with the commands' program name, help and errors."""

    def __init__(self, dataclass_type: type, command: str, description: str | None, **kwargs) -> None:
        super().__init__(
            dataclass_type,
            prog=f"python -m ner_accel.{command}",
            usage=f"%(prog)s [options]   (accelerate launch -m ner_accel.{command} [options] for several processes)",
            description=description,
            formatter_class=CommandHelp,
            allow_abbrev=False,
            **kwargs,
        )
