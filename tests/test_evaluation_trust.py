"""Evaluation users can trust: every gold word scored whatever --max-length (through predict's windows), unseen
words with a defined tag, F1 intervals from a bootstrap over sentences, paired comparisons, IOB2-valid decoding."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from seqeval.metrics import f1_score
from test_predict import build_gazetteer

from ner_accel.evaluate import main as evaluate
from ner_accel.evaluation.intervals import bootstrap_intervals, f1_of, paired_comparison, sentence_counts
from ner_accel.evaluation.metrics import entity_metrics
from ner_accel.inference.decoding import allowed_transitions, decode, viterbi
from ner_accel.inference.entities import extract_entities, fill_unseen
from ner_accel.inference.tagger import Tagger

LABELS = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
FILLER = ["besuchte", "nach", "lebte", "in", "baut", "sind", "und", "die"]


@pytest.fixture(scope="module")
def gazetteer(tmp_path_factory):
    """A context-free tagger (test_predict.build_gazetteer): its tags are right on these words, window or not."""
    return build_gazetteer(tmp_path_factory.mktemp("gazetteer"))


def long_sentence() -> list[tuple[str, str]]:
    """44 words whose three entities come at the end: past a 16-sub-token window."""
    words = [(FILLER[i % len(FILLER)], "O") for i in range(37)]
    return words + [("Angela", "B-PER"), ("Merkel", "I-PER"), ("besuchte", "O"), ("Paris", "B-LOC"), ("und", "O"),
                    ("Deutsche", "B-ORG"), ("Bahn", "I-ORG")]  # fmt: skip


def independent_entity_count(path) -> dict[str, int]:
    """Gold entities per type, counted from the file's lines alone: B-X, or I-X after O or another type."""
    counts, previous = {}, "O"
    for line in path.read_text(encoding="utf-8").splitlines():
        tag = line.split("\t")[-1] if line.strip() else "O"
        if tag.startswith("B-") or (tag.startswith("I-") and previous[2:] != tag[2:]):
            counts[tag[2:]] = counts.get(tag[2:], 0) + 1
        previous = tag
    return counts


def test_a_sentence_longer_than_the_window_is_scored_in_full(gazetteer, tmp_path):
    data = tmp_path / "long"
    data.mkdir()
    short = [("Paris", "B-LOC"), ("und", "O"), ("Merkel", "B-PER")]
    text = "\n\n".join("\n".join(f"{w}\t{t}" for w, t in sentence) for sentence in (long_sentence(), short))
    (data / "validation.conll").write_text(text + "\n", encoding="utf-8")
    output = tmp_path / "out.json"
    args = ["--model", str(gazetteer), "--data-dir", str(data), "--max-length", "16", "--output", str(output)]
    # argmax: the gazetteer's tags are word by word (a lone "Merkel" is I-PER, which Viterbi may not start with)
    assert evaluate([*args, "--decode", "argmax"]) == 0
    result = json.loads(output.read_text())["models"][0]["results"]["long"]
    counted = independent_entity_count(data / "validation.conll")
    assert counted == {"PER": 2, "LOC": 2, "ORG": 1}
    assert {kind: m["support"] for kind, m in result["per_type"].items()} == counted  # none dropped
    assert result["support"] == 5 and result["f1"] == 1.0  # the entities at the end were tagged, through windows
    # The same tags as predict gives the same words through the same windows.
    tagger = Tagger.load(str(gazetteer), max_length=16, decoding="argmax")
    words = [w for w, _ in long_sentence()]
    entities = tagger.tag([" ".join(words)])[0]
    assert [e["text"] for e in entities] == ["Angela Merkel", "Paris", "Deutsche Bahn"]
    assert extract_entities(result["predicted"][0]) == extract_entities([t for _, t in long_sentence()])
    # Truncated scoring would have lost them: the window holds fewer sub-tokens than the sentence.
    assert sum(len(p) for p in tagger.word_pieces([words])[0]) > 16


@pytest.mark.parametrize(
    "tags, seen, filled",
    [
        (["B-PER", "I-PER"], [True, False, True], ["B-PER", "I-PER", "I-PER"]),  # inside an entity: joins it
        (["B-PER", "O"], [True, False, True], ["B-PER", "O", "O"]),  # at its end: stays out
        (["B-PER", "B-PER"], [True, False, True], ["B-PER", "O", "B-PER"]),  # between two entities
        (["O", "I-LOC"], [True, False, True], ["O", "O", "I-LOC"]),
        (["B-ORG", "I-ORG"], [True, False, False, True], ["B-ORG", "I-ORG", "I-ORG", "I-ORG"]),
        ([], [False, False], ["O", "O"]),
        (["B-LOC"], [False, True], ["O", "B-LOC"]),
    ],
)
def test_a_word_without_sub_tokens_gets_the_tag_predict_gives_it(tags, seen, filled):
    assert fill_unseen(tags, seen) == filled
    # Grouped as predict groups entities over the words the model sees: the same entities, spans widened.
    visible = [i for i, s in enumerate(seen) if s]
    expected = [(kind, visible[a], visible[b - 1] + 1) for kind, a, b in extract_entities(tags)]
    assert extract_entities(filled) == expected


def random_tags(rng: random.Random, length: int) -> list[str]:
    return [rng.choice(LABELS) for _ in range(length)]


def test_bootstrap_counts_sum_to_seqeval_and_intervals_hold_the_point():
    rng = random.Random(0)
    gold = [random_tags(rng, rng.randint(1, 12)) for _ in range(300)]
    predicted = [[t if rng.random() < 0.7 else rng.choice(LABELS) for t in sentence] for sentence in gold]
    types = ["LOC", "ORG", "PER"]
    counts = sentence_counts(gold, predicted, types)
    assert f1_of(counts.sum(axis=(0, 1))) == pytest.approx(f1_score(gold, predicted), abs=1e-12)
    metrics = entity_metrics(gold, predicted)
    low, high = metrics["f1_interval"]
    assert low < metrics["f1"] < high and high - low < 0.2
    for kind in types:
        kind_low, kind_high = metrics["per_type"][kind]["f1_interval"]
        assert kind_low <= metrics["per_type"][kind]["f1"] <= kind_high
    assert bootstrap_intervals(counts) == bootstrap_intervals(counts)  # seeded: the same interval every time
    assert bootstrap_intervals(counts, seed=1) != bootstrap_intervals(counts)


def test_paired_comparison_of_a_system_with_itself_and_with_a_better_one():
    rng = random.Random(1)
    gold = [random_tags(rng, rng.randint(2, 10)) for _ in range(400)]
    noisy = [[t if rng.random() < 0.6 else "O" for t in sentence] for sentence in gold]
    same = paired_comparison(gold, noisy, noisy)
    assert same["difference"] == 0.0 and same["interval"] == [0.0, 0.0] and same["p_value"] == 1.0
    better = paired_comparison(gold, noisy, gold)
    assert better["f1_second"] == 1.0 and better["difference"] > 0.1
    assert better["interval"][0] > 0 and better["p_value"] < 0.01
    reverse = paired_comparison(gold, gold, noisy)
    assert reverse["difference"] == pytest.approx(-better["difference"]) and reverse["p_value"] < 0.01


def test_evaluate_compare_reports_the_paired_difference(gazetteer, tmp_path, conll_dir, capsys):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    worse = tmp_path / "worse"  # the gazetteer that no longer knows Paris
    model = AutoModelForTokenClassification.from_pretrained(gazetteer)
    paris = AutoTokenizer.from_pretrained(gazetteer).convert_tokens_to_ids("paris")
    model.bert.embeddings.word_embeddings.weight.data[paris] = 0.0
    model.save_pretrained(worse)
    AutoTokenizer.from_pretrained(gazetteer).save_pretrained(worse)
    output = tmp_path / "compare.json"
    args = ["--model", str(worse), "--compare", str(gazetteer), "--data-dir", str(conll_dir)]
    assert evaluate([*args, "--output", str(output)]) == 0
    comparison = json.loads(output.read_text())["comparison"]["data"]
    assert set(comparison) >= {"f1_first", "f1_second", "difference", "interval", "p_value", "sentences"}
    assert comparison["sentences"] == 3 and comparison["difference"] > 0
    assert comparison["difference"] == pytest.approx(comparison["f1_second"] - comparison["f1_first"])
    assert "p-value" in capsys.readouterr().out
    assert evaluate(["--model", str(worse), str(gazetteer), "--compare", str(gazetteer), "--data-dir",
                     str(conll_dir)]) == 2  # fmt: skip


def is_valid_iob2(tags: list[str]) -> bool:
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            return False
        previous = tag
    return True


def test_viterbi_never_gives_an_invalid_sequence_and_is_argmax_where_that_is_valid():
    rng = np.random.default_rng(0)
    start, transition = allowed_transitions(LABELS)
    assert not start[LABELS.index("I-PER")] and transition[LABELS.index("B-PER"), LABELS.index("I-PER")]
    assert not transition[LABELS.index("O"), LABELS.index("I-PER")]
    assert not transition[LABELS.index("B-LOC"), LABELS.index("I-PER")]
    changed = 0
    for _ in range(200):
        log_probabilities = np.log(rng.dirichlet(np.ones(len(LABELS)) * 0.3, size=rng.integers(1, 9)))
        best = [LABELS[i] for i in viterbi(log_probabilities, LABELS)]
        greedy = [LABELS[i] for i in decode(log_probabilities, LABELS, "argmax")]
        assert is_valid_iob2(best)
        if is_valid_iob2(greedy):
            assert best == greedy
        else:
            changed += 1
            path = [LABELS.index(t) for t in best]
            # No valid sequence scores higher: check against the greedy sequence's best valid repair.
            assert log_probabilities[np.arange(len(path)), path].sum() <= log_probabilities.max(axis=1).sum()
    assert changed > 10
    # O I-PER I-PER: argmax is invalid; the best valid path keeps the person as B-PER I-PER.
    log_probabilities = np.log(np.array([[0.6, 0, 0, 0, 0, 0.35, 0.05], [0.1, 0, 0, 0, 0, 0.1, 0.8],
                                         [0.1, 0, 0, 0, 0, 0.1, 0.8]]) + 1e-9)  # fmt: skip
    assert [LABELS[i] for i in viterbi(log_probabilities, LABELS)] == ["B-PER", "I-PER", "I-PER"]
