"""A short real fine-tune: the shared pretrained MiniLM on real PAN-X English learns non-trivial NER."""

import json

from tests.conftest import MINILM, PANX, needs_shared, run_training


@needs_shared
def test_minilm_on_a_panx_subset_reaches_a_real_f1(tmp_path):
    out = tmp_path / "out"
    code = run_training(
        [
            "--model",
            MINILM,
            "--data-dir",
            PANX / "en",
            "--output-dir",
            out,
            "--run-name",
            "real",
            "--max-train-samples",
            "1500",
            "--max-eval-samples",
            "500",
            "--num-train-epochs",
            "1",
            "--per-device-train-batch-size",
            "16",
            "--learning-rate",
            "1e-4",
            "--logging-steps",
            "20",
        ]
    )
    assert code == 0
    final = json.loads((out / "real" / "metrics.json").read_text())["final"]["en"]
    # An untrained head scores ~0; the full 3-epoch run reaches ~0.76. One short epoch must clear 0.35.
    assert final["f1"] > 0.35, final
    assert set(final["per_type"]) == {"LOC", "ORG", "PER"}
