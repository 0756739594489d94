"""Export a trained model to ONNX (fp32, or INT8 weights) behind a parity gate: onnxruntime must tag the check
sentences as torch does, or nothing is written.

fp32, checked on the run's validation sentences:
    python -m ner_accel.export --model artifacts/run --output artifacts/run-onnx
INT8 (the graph fused by onnxruntime's transformer optimizer, then dynamic quantization: the word embedding and
every weight matrix in 8 bits), checked on other sentences:
    python -m ner_accel.export --model artifacts/run --output artifacts/run-int8 --quantize int8 --check-data data/de
Then tag or evaluate with the export as with the torch model:
    python -m ner_accel.predict --model artifacts/run-int8 "Angela Merkel besuchte Paris."

The output directory holds model.onnx (inputs input_ids and attention_mask, output logits; batch and sequence axes
dynamic), config.json with the labels, the tokenizer, README.md (the card, with the gate's numbers) and
export_check.json (the numbers). It loads in plain onnxruntime with transformers' tokenizer and config.

The gate runs the check sentences (the run's validation split, or --check-data) through the torch model as predict
runs it and through onnxruntime, with the same windows and decoding. fp32: every logit within --tolerance and the
same entities on every sentence. INT8: F1 within 0.005 of torch, overall and for each entity type. Otherwise one
line with the numbers, exit 1, and no export written (an earlier one at --output stays); --accept-drop writes it
anyway, with the numbers in its card.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from .data.corpus import subsample
from .data.panx_hub import load_hub_panx
from .data.readers import ReadOptions, find_split_file, missing_split, read_split
from .errors import Stopped, UsageError, run_command
from .evaluate import model_dir
from .inference.export_check import LOGITS_TOLERANCE, parity_report, verdict
from .inference.onnx_export import OPSET, export_fp32, onnx_opset, quantize_int8, require_export_tools
from .inference.onnx_model import ONNX_FILE, OnnxTokenClassifier, is_export
from .inference.windows import Windowing
from .modeling.loading import load_tokenizer, load_trained, sequence_limit
from .options.checks import check_values
from .options.parsing import CommandParser
from .rundir.artifacts import CONFIG_FILE, MODEL_DIR
from .rundir.files import atomic_write, check_output_dir, write_json, write_text

CHECK_FILE = "export_check.json"
CARD_FILE = "README.md"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = CommandParser("export", __doc__, "--model DIR --output DIR [--quantize int8] [options]")
    parser.add_argument("--model", required=True, help="Run directory (with model/) or model directory.")
    parser.add_argument("--output", required=True, help="Directory to write the export into (replaced whole).")
    parser.add_argument(
        "--quantize", default="none", choices=["none", "int8"],
        help="int8: the word embedding and every weight matrix in 8 bits (onnxruntime's dynamic quantization), a "
        "quarter of the size; none: fp32.",
    )  # fmt: skip
    parser.add_argument(
        "--check-data", nargs="+",
        help="Directories whose validation file the gate checks on (default: the run's validation data).",
    )  # fmt: skip
    parser.add_argument("--max-check-samples", type=int, help="Check only the first N sentences of each directory.")
    parser.add_argument(
        "--tolerance", type=float, default=LOGITS_TOLERANCE,
        help="fp32 gate: largest absolute logit difference allowed on any real token.",
    )  # fmt: skip
    parser.add_argument(
        "--accept-drop", action="store_true",
        help="Write the export even when the gate fails (its numbers go into the card).",
    )  # fmt: skip
    parser.add_argument("--opset", type=int, default=OPSET, help="ONNX opset of the exported graph.")
    parser.add_argument("--batch-size", type=int, default=64, help="Windows per forward pass in the gate.")
    parser.add_argument("--max-length", type=int, help="Sub-tokens per window in the gate (default: the model's).")
    parser.add_argument("--trust-remote-code", action="store_true", help="Allow model code from the model directory.")
    args = parser.parse_args(argv)
    check_values({k: v for k, v in vars(args).items() if k in ("batch_size", "max_length")})
    if args.max_check_samples is not None and args.max_check_samples < 1:
        raise UsageError(f"--max-check-samples must be a positive integer, got {args.max_check_samples}")
    for flag, value, low in (("--tolerance", args.tolerance, 0.0), ("--opset", args.opset, 14)):
        if value < low:
            raise UsageError(f"{flag} must be at least {low}, got {value}")
    check_output_dir(Path(args.output), "--output")
    return args


def source_directory(path: str, output: Path) -> Path:
    """The torch model directory to export; an export, or an --output that would replace the source, refused."""
    directory = model_dir(path)
    if is_export(directory):
        raise UsageError(f"--model {path}: is already an ONNX export; pass the run or model directory it came from")
    target = output.resolve()
    if target == directory.resolve() or directory.resolve().is_relative_to(target):
        raise UsageError(f"--output {output}: holds the model being exported; pass a new directory")
    return directory


def check_sentences(args: argparse.Namespace, source: Path) -> tuple[list[dict], str]:
    """The gate's sentences and where they came from: --check-data's validation files, else the run's (read as the
    run read them: its train_config.json's data directories or PAN-X languages, and reading options)."""
    options, sources = ReadOptions(), []
    if args.check_data:
        sources = [("--check-data", Path(d)) for d in args.check_data]
    else:
        run_dir = source.parent if source.name == MODEL_DIR else source
        config_file = run_dir / CONFIG_FILE
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
        options = ReadOptions(**{k: config[k] for k in ReadOptions.__dataclass_fields__ if k in config})
        sources = [("the run's --data-dir", Path(d)) for d in config.get("data_dir") or []]
        if not sources and config.get("languages"):
            sentences, names = [], []
            for language in config["languages"]:
                splits, _ = load_hub_panx(config.get("dataset", "google/xtreme"), language)
                sentences += subsample(splits["validation"], args.max_check_samples, None, 0)
                names.append(f"PAN-X.{language}/validation")
            return sentences, ", ".join(names)
        if not sources:
            raise UsageError(
                f"--model {args.model}: not a run directory with its training data; pass --check-data DIR "
                "(a directory with a validation file the gate tags through both models)"
            )
    sentences, names = [], []
    for flag, root in sources:
        if not root.is_dir():
            raise UsageError(f"{flag} {root}: directory not found; pass a directory holding a validation file")
        path = find_split_file(root, "validation")
        if path is None:
            raise missing_split(root, "validation")
        sentences += subsample(read_split(path, options), args.max_check_samples, None, 0)
        names.append(str(path))
    return sentences, ", ".join(names)


def megabytes(path: Path) -> float:
    return sum(p.stat().st_size for p in path.parent.glob(f"{path.name}*")) / 1e6  # with any external data file


def card(report: dict) -> str:
    """The export's README.md: what it is, how it was checked and with what result, how to use it."""
    check, kind = report["check"], report["check"]["kind"]
    types = [t for t in check["f1_torch"] if t != "overall"]
    rows = "\n".join(
        f"| {t} | {check['f1_torch'][t]:.4f} | {check['f1_onnx'].get(t, 0.0):.4f} | {check['f1_drop'][t]:+.4f} |"
        for t in ["overall", *types]
    )
    status = "passed" if check["passed"] else "**failed** (written with --accept-drop)"
    return f"""---
library_name: onnx
pipeline_tag: token-classification
tags: [ner_accel, onnx, {kind}, token-classification]
---

# {report["name"]}: ONNX export ({kind})

Exported by `ner_accel.export` from `{report["source"]}` on {report["exported_at"]}: `{ONNX_FILE}`
({report["size_mb"]:.1f} MB{report["size_note"]}), opset {report["opset"]}, torch {report["torch"]}, onnxruntime
{report["onnxruntime"]}. Inputs `input_ids` and `attention_mask` (int64, batch x sequence, both axes dynamic); output
`logits` (batch x sequence x {len(report["labels"])} labels: {", ".join(report["labels"])}).

## Parity gate: {status}

{check["sentences"]} sentences ({report["check_data"]}), {check["real_tokens"]} real sub-tokens, tagged by the torch
model as `ner_accel.predict` runs it and by onnxruntime, with the same windows and decoding ({check["decoding"]}).
Rule: {check["rule"]}.
Largest absolute logit difference {check["max_abs_logit_difference"]:.2e} (mean {check["mean_abs_logit_difference"]:.2e});
sentences whose entities differ: {check["sentences_with_other_entities"]}.

| F1 | torch | ONNX ({kind}) | difference |
|---|---|---|---|
{rows}

The numbers are also in `{CHECK_FILE}`.

## Use

```bash
python -m ner_accel.predict --model {report["name"]} "Angela Merkel besuchte Paris."
python -m ner_accel.evaluate --model {report["name"]} --data-dir DATA_DIR
```

Plain onnxruntime (no ner_accel): tokenize with `AutoTokenizer.from_pretrained(dir)`, feed `input_ids` and
`attention_mask` as int64 arrays to `onnxruntime.InferenceSession(dir + "/{ONNX_FILE}")`, read labels from
`config.json`'s `id2label`. `ner_accel.predict` adds its word splitting, windows for long texts and entity offsets.
"""


def write_export(args: argparse.Namespace, source: Path, staging: Path, sentences: list[dict], origin: str) -> dict:
    """Export, check and describe into `staging`; a failed gate raises (the staging is then thrown away)."""
    import onnxruntime
    import torch

    tokenizer = load_tokenizer(str(source), args.trust_remote_code)
    model = load_trained(str(source), args.trust_remote_code).eval()
    quantized = args.quantize == "int8"
    staging.mkdir(parents=True, exist_ok=True)
    target = staging / ONNX_FILE
    started = time.perf_counter()
    if quantized:
        fp32 = staging / ".fp32" / ONNX_FILE  # inside the staging: gone with it whatever happens
        fp32.parent.mkdir()
        try:
            export_fp32(model, fp32, args.opset)
            fp32_mb = megabytes(fp32)
            quantize_int8(fp32, target, model.config)
        finally:
            shutil.rmtree(fp32.parent, ignore_errors=True)
    else:
        export_fp32(model, target, args.opset)
    export_s = time.perf_counter() - started
    shutil.copy2(source / "config.json", staging / "config.json")
    tokenizer.save_pretrained(str(staging))
    windowing = Windowing.of(tokenizer, sequence_limit(tokenizer, args.max_length))
    exported = OnnxTokenClassifier(staging)
    started = time.perf_counter()
    check = parity_report(
        model, exported, tokenizer, windowing, sentences, "check sentences", quantized, args.batch_size, args.tolerance
    )
    size = megabytes(target)
    report = {
        "name": Path(args.output).name,
        "source": str(source),
        "exported_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "quantize": args.quantize,
        "opset": onnx_opset(target),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "labels": [model.config.id2label[i] for i in range(model.config.num_labels)],
        "size_mb": size,
        "size_note": f"; the fp32 export was {fp32_mb:.1f} MB" if quantized else "",
        "export_s": round(export_s, 1),
        "check_s": round(time.perf_counter() - started, 1),
        "check_data": origin,
        "check": check,
    }
    if not check["passed"] and not args.accept_drop:
        raise Stopped(f"error: refused: {verdict(check)}; nothing written (--accept-drop writes it anyway)", 1)
    write_json(staging / CHECK_FILE, report)
    write_text(staging / CARD_FILE, card(report))
    return report


def run(args: argparse.Namespace) -> dict:
    """Check the sentences and tools first, then export into a staging directory renamed to --output when done."""
    require_export_tools()
    output = Path(args.output)
    source = source_directory(args.model, output)
    sentences, origin = check_sentences(args, source)
    with atomic_write(output, f"--output {output}", directory=True) as staging:
        report = write_export(args, source, staging, sentences, origin)
    check = report["check"]
    print(
        f"wrote {output}/{ONNX_FILE} ({report['size_mb']:.1f} MB{report['size_note']}, opset {report['opset']}); "
        f"gate {'passed' if check['passed'] else 'FAILED, written with --accept-drop'}: {verdict(check)}"
    )
    return report


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: 0 written, 1 refused by the gate or a failed write, 2 bad input (one line on stderr)."""
    return run_command(lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
