"""Tag raw text with a trained model: entities with type, character offsets, surface text and score, as JSON Lines.

Texts as arguments (one document each):
    python -m ner_accel.predict --model artifacts/run "Angela Merkel besuchte Paris." "Jeff Dean works at Google."
A text file (one document per line) or JSON Lines ({"text": ...} per line, other fields kept):
    python -m ner_accel.predict --model artifacts/run --input docs.txt --output entities.jsonl
Pre-annotations to import into an annotation tool (--format label-studio, doccano or spacy, also for Prodigy):
    python -m ner_accel.predict --model artifacts/run --input docs.jsonl --format label-studio --output tasks.json

Text is split into words as PAN-X is: at whitespace, with punctuation marks and CJK ideographs words of their own,
except that hyphens, apostrophes and periods between letters or digits stay inside a word (Baden-Württemberg,
d'Italie, U.S, 6–3) and a final 's is a word (Merkel 's). Each word is tagged by its first sub-token (as in training),
and texts longer than the model's limit are tagged in overlapping windows, each word taking its tags from the window
where it sits most central. On text without those word-internal marks the same model gives the same entities as
transformers.pipeline("token-classification", aggregation_strategy="first") (BERT-style tokenizers, which split at
every punctuation mark; see tests/test_predict.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import TextIO

import torch
from tqdm.auto import tqdm

from .data.lines import numbered_lines
from .errors import UsageError, run_command
from .inference.decoding import DECODINGS, DEFAULT_DECODING
from .inference.export_formats import EXPORT_FORMATS, EntityWriter, model_version
from .inference.tagger import Tagger
from .options.checks import check_values
from .options.parsing import CommandParser
from .rundir.files import atomic_write, check_output_file


def is_json_lines(path: Path) -> bool:
    return path.suffix.lower() in (".jsonl", ".ndjson", ".json")


def read_documents(path: Path, text_field: str) -> Iterator[dict]:
    """{"text": ...} per line of a text file, or the objects of a JSON Lines file (other fields kept)."""
    for number, line in numbered_lines(path):
        if not is_json_lines(path):
            yield {"text": line}
            continue
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise UsageError(f"{path}:{number}: not valid JSON ({error.msg}); write one object per line") from error
        if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
            raise UsageError(f'{path}:{number}: expected an object with a "{text_field}" string (see --text-field)')
        yield row


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = CommandParser("predict", __doc__, "--model DIR (TEXT [TEXT ...] | --input FILE) [options]")
    parser.add_argument("texts", nargs="*", help="Texts to tag, one document each.")
    parser.add_argument(
        "--model", required=True, help="Run directory (with model/), model directory or ONNX export (ner_accel.export)."
    )
    # Input and output
    parser.add_argument(
        "--input",
        help="Text file (one document a line) or JSON Lines file (.jsonl, .ndjson, .json: objects with --text-field).",
    )
    parser.add_argument("--text-field", default="text", help="Field holding the text in JSON Lines input.")
    parser.add_argument("--output", help="File to write, in --format (default: standard output).")
    parser.add_argument(
        "--format", default="jsonl", choices=EXPORT_FORMATS,
        help="jsonl: the input rows with their entities; label-studio (a JSON array of tasks with predictions), "
        "doccano or spacy (JSON Lines, also Prodigy's): pre-annotations to import into the tool.",
    )  # fmt: skip
    # Runtime
    parser.add_argument("--batch-size", type=int, default=64, help="Windows per forward pass.")
    parser.add_argument(
        "--max-length", type=int, help="Sub-tokens per window (default: the model's limit, at most 512)."
    )
    parser.add_argument("--overlap", type=int, help="Sub-tokens repeated between windows (default: a quarter).")
    parser.add_argument(
        "--decode", default=DEFAULT_DECODING, choices=DECODINGS,
        help="Tags from word probabilities: argmax, or viterbi (the best IOB2-valid sequence).",
    )  # fmt: skip
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available).")
    parser.add_argument("--chunk-size", type=int, default=4096, help="Documents read and tagged at a time.")
    parser.add_argument("--trust-remote-code", action="store_true", help="Allow model code from the model directory.")
    args = parser.parse_args(argv)
    if bool(args.texts) == bool(args.input):
        raise UsageError("give texts as arguments or --input <file>, not both and not neither")
    if args.input and not Path(args.input).is_file():
        raise UsageError(f"--input {args.input}: file not found")
    check_values(vars(args))
    if args.device is not None:
        check_device(args.device)
    if args.output is not None:
        check_output_file(args.output, "--output")
        if args.input and Path(args.output).resolve() == Path(args.input).resolve():
            raise UsageError(f"--output {args.output}: is the input file; write the entities to another file")
    return args


def check_device(name: str) -> None:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name}: not a device name; pass cpu, cuda or cuda:<index>") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise UsageError(
            f"--device {name}: no such CUDA device here ({torch.cuda.device_count()} found); pass --device cpu"
        )


def run(args: argparse.Namespace) -> int:
    """Tag every document and write one JSON line per document, in input order; return the number tagged.

    A bad input line fails before any tagging (the count pass reads and checks every line), and --output is
    written beside its target and renamed into place at the end: an error leaves no half-written file and an
    earlier file of that name untouched.
    """
    if args.input:
        path = Path(args.input)
        total = sum(1 for _ in read_documents(path, args.text_field))
        documents = read_documents(path, args.text_field)
        field = args.text_field if is_json_lines(path) else "text"
    else:
        documents, field, total = ({"text": text} for text in args.texts), "text", len(args.texts)
    tagger = Tagger.load(
        args.model, args.max_length, args.overlap, args.batch_size, args.device, args.trust_remote_code, args.decode
    )
    with (
        output_stream(args.output) as output,
        tqdm(total=total, unit="doc", desc="tagging", disable=not args.input) as progress,
    ):
        writer, count = EntityWriter(output, args.format, field, model_version(args.model)), 0
        while chunk := list(islice(documents, args.chunk_size)):
            for row, entities in zip(chunk, tagger.tag([row[field] for row in chunk], progress)):
                writer.write(row, entities)
            count += len(chunk)
        writer.close()
    return count


@contextmanager
def output_stream(path: str | None) -> Iterator[TextIO]:
    """Standard output, or --output written through the run's atomic write: it replaces the file only when
    everything was written, and a failed write (a full disk) is one line naming --output, no partial file left."""
    if path is None:
        yield sys.stdout
        return
    target = Path(path)
    with atomic_write(target, f"--output {target}") as staging, staging.open("w", encoding="utf-8") as stream:
        yield stream


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: exit 0 on success, 2 on bad input (one line on stderr)."""
    return run_command(lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
