"""XLM-R tokenization on real weights: multilingual-e5-small (XLM-R's tokenizer) from ../shared on real PAN-X.

What the tiny WordPiece model cannot show: SentencePiece words of several pieces, words whose first piece is a lone
"▁", words that tokenize to nothing (zero-width and control characters, which PAN-X and user text hold), predict's
character offsets around them, and the unpadded forward against the padded one on 12 real layers. The model is
converted once per machine (the multilingual_model fixture); the tests that use it skip only where ../shared is
absent. The last tests check that cache (benchmarks/shared_models.py) with a stand-in converter.
"""

from __future__ import annotations

import multiprocessing
import re
import time
import unicodedata

import pytest
import torch
from conftest import PANX, run_training
from seqeval.metrics.sequence_labeling import get_entities
from transformers import DataCollatorForTokenClassification

from ner_accel.data.encoding import encode_batch
from ner_accel.data.readers import read_conll
from ner_accel.inference.decoding import decode
from ner_accel.inference.words import split_words
from ner_accel.modeling.loading import load_model, load_tokenizer
from ner_accel.modeling.unpadding import Packing
from ner_accel.predict import Tagger

LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
# XLM-R's normalizer (the SentencePiece model's precompiled character map) removes these controls outright
# (U+0001-0008, 000B, 000E-001F, 007F, 008F, 009F); Python's str.isspace() is False for all but 1C-1F, so
# ner_accel.inference.words keeps them inside words.
REMOVED = ["\x01", "\x07", "\x1b", "\x7f", "\x9f"]
# ... and turns these into a space (zero-width space, ZWNJ, ZWJ, LRM, RLM, BOM, line separator, the replacement
# character and "▁" itself): alone they tokenize to nothing, inside a word they cut it in two.
TO_SPACE = ["\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\ufeff", "\u2028", "\ufffd", "\u2581"]
# Invisible, yet pieces of their own: a word holding one never tokenizes to nothing.
KEPT = {"\u00ad": ["▁", "\xad"], "\u2060": ["▁", "\u2060"], "\u202a": ["▁\u202a"], "\x00": ["▁", "\x00"]}
# Every control (but tab and newlines), format character and line or paragraph separator: what to look for in text.
INVISIBLE = re.compile(
    "["
    + "".join(
        re.escape(chr(code))
        for code in [*range(0x30000), *range(0xE0000, 0xE1000)]
        if unicodedata.category(chr(code)) in ("Cc", "Cf", "Zl", "Zp") and chr(code) not in "\t\n\r"
    )
    + "]"
)


@pytest.fixture(scope="module")
def tokenizer(multilingual_model):
    return load_tokenizer(str(multilingual_model))


@pytest.fixture(scope="module")
def panx_de_validation() -> list[dict]:
    return read_conll(PANX / "de" / "validation.conll")


def encode(tokenizer, tokens: list[str], tags: list[str], label_all_tokens: bool = False) -> dict:
    """ner_accel's training encoding of one sentence (encode_batch, as datasets.map calls it)."""
    batch = {"tokens": [tokens], "tags": [tags]}
    encoded = encode_batch(batch, tokenizer, {tag: i for i, tag in enumerate(LABELS)}, 512, label_all_tokens)
    return {name: values[0] for name, values in encoded.items()}


def pieces_and_labels(tokenizer, tokens: list[str], tags: list[str], label_all_tokens: bool = False) -> list:
    """(piece, label or None for -100) at every position of the sentence's encoding."""
    encoded = encode(tokenizer, tokens, tags, label_all_tokens)
    pieces = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    return [(piece, None if label < 0 else LABELS[label]) for piece, label in zip(pieces, encoded["labels"])]


# ---------------------------------------------------------------------------------------------------------------
# Label alignment on real sentences


@pytest.mark.shared
def test_which_invisible_characters_xlmr_drops(tokenizer):
    for char in REMOVED + TO_SPACE:
        assert tokenizer.tokenize(char) == [], ascii(char)
        assert tokenizer.tokenize(f"Paris{char}") == ["▁Paris"], ascii(char)
    for char in REMOVED:  # gone from inside a word too: Mer<BEL>kel is Merkel to the model
        assert tokenizer.tokenize(f"Mer{char}kel") == tokenizer.tokenize("Merkel"), ascii(char)
    for char in TO_SPACE:  # a space inside a word: two pieces that each start with "▁"
        assert tokenizer.tokenize(f"Mer{char}kel") == tokenizer.tokenize("Mer") + tokenizer.tokenize("kel"), ascii(char)
    for char, pieces in KEPT.items():
        assert tokenizer.tokenize(char) == pieces, ascii(char)


# PAN-X de validation, the sentence at line 7: "Jehovas" is a lone "▁" and two pieces, "." a lone "▁" and ".".
JEHOVAS = (
    ["Hinzu", "kommen", "die", "Zeugen", "Jehovas", "und", "zahlreiche", "andere", "Gruppen", "."],
    ["O", "O", "O", "B-ORG", "I-ORG", "O", "O", "O", "O", "O"],
)
JEHOVAS_ALIGNED = [
    ("<s>", None),
    ("▁Hin", "O"), ("zu", None),
    ("▁kommen", "O"),
    ("▁die", "O"),
    ("▁Zeug", "B-ORG"), ("en", None),
    ("▁", "I-ORG"), ("Jehova", None), ("s", None),
    ("▁und", "O"), ("▁zahlreiche", "O"), ("▁andere", "O"), ("▁Gruppen", "O"),
    ("▁", "O"), (".", None),
    ("</s>", None),
]  # fmt: skip


@pytest.mark.shared
def test_first_piece_carries_the_label_even_a_lone_metaspace(tokenizer, panx_de_validation):
    sentence = next(sentence for sentence in panx_de_validation if sentence["line"] == 7)
    assert (sentence["tokens"], sentence["tags"]) == JEHOVAS
    assert pieces_and_labels(tokenizer, *JEHOVAS) == JEHOVAS_ALIGNED


@pytest.mark.shared
def test_label_all_tokens_gives_continuations_the_inside_tag(tokenizer):
    aligned = pieces_and_labels(tokenizer, *JEHOVAS, label_all_tokens=True)
    continuations = {"zu": "O", "en": "I-ORG", "Jehova": "I-ORG", "s": "I-ORG", ".": "O"}
    expected = [(piece, continuations.get(piece, label)) for piece, label in JEHOVAS_ALIGNED]
    assert aligned == expected


@pytest.mark.shared
def test_words_that_tokenize_to_nothing_get_no_position(tokenizer):
    """Invisible words (an invented case: PAN-X has none) vanish from the encoding and are counted as lost."""
    tokens, tags = JEHOVAS
    words = ["\ufeff", *tokens[:3], "\u200b", tokens[3], "\x07", "\u2581", *tokens[4:], "\ufffd"]
    labels = ["O", *tags[:3], "O", tags[3], "I-ORG", "I-ORG", *tags[4:], "O"]
    assert [tokenizer.tokenize(word) for word in ("\ufeff", "\u200b", "\x07", "\u2581", "\ufffd")] == [[]] * 5
    assert pieces_and_labels(tokenizer, words, labels) == JEHOVAS_ALIGNED
    assert encode(tokenizer, words, labels)["words_lost"] == 5


# Every word with an invisible character in the shared PAN-X files (en has none): its pieces, first piece labelled.
PANX_INVISIBLE = {
    ("de", "train"): [("Berlin-Grunewald\u200e", "B-LOC", ["▁Berlin", "-", "G", "ru", "ne", "wald"])],
    ("de", "validation"): [
        ("Gartenstadt\xadbewegung", "B-LOC", ["▁Garten", "stadt", "\xad", "bewegung"]),
        ("Rückdatie\xadrung", "O", ["▁Rück", "da", "tie", "\xad", "rung"]),
        ("Holstein\xadkomplex", "B-ORG", ["▁", "Holstein", "\xad", "kom", "plex"]),
        ("Gips\xadstaub", "B-ORG", ["▁G", "ips", "\xad", "sta", "ub"]),
    ],
    ("en", "train"): [],
    ("en", "validation"): [],
    ("fr", "train"): [("s\u0153\x9cur", "O", ["▁s", "œ", "\x9c", "ur"])],
    ("fr", "validation"): [("\u200b\u200bmaternels", "O", ["▁matern", "els"])],
}


@pytest.mark.shared
@pytest.mark.parametrize("language, split", sorted(PANX_INVISIBLE))
def test_real_words_with_invisible_characters_keep_their_label(tokenizer, language, split):
    path = PANX / language / f"{split}.conll"
    text = path.read_text(encoding="utf-8")
    expected = PANX_INVISIBLE[language, split]
    assert len(INVISIBLE.findall(text)) == sum(len(INVISIBLE.findall(word)) for word, _, _ in expected)
    if not expected:
        return
    found = []
    for sentence in read_conll(path):
        if not any(INVISIBLE.search(word) for word in sentence["tokens"]):
            continue
        aligned = pieces_and_labels(tokenizer, sentence["tokens"], sentence["tags"])
        word_ids = tokenizer(sentence["tokens"], is_split_into_words=True).word_ids()
        for index, (word, tag) in enumerate(zip(sentence["tokens"], sentence["tags"])):
            if INVISIBLE.search(word):
                positions = [i for i, owner in enumerate(word_ids) if owner == index]
                found.append((word, tag, [aligned[i][0] for i in positions]))
                assert [aligned[i][1] for i in positions] == [tag] + [None] * (len(positions) - 1)
    assert found == expected


# ---------------------------------------------------------------------------------------------------------------
# The unpadded forward on real weights


@pytest.mark.numerics
@pytest.mark.shared
def test_unpadded_forward_equals_the_padded_one(multilingual_model, tokenizer, panx_de_validation):
    """Logits, loss and every gradient equal transformers' padded model on a real batch of uneven sentences."""
    sentences = panx_de_validation[:2000]
    encoded = encode_batch(
        {"tokens": [s["tokens"] for s in sentences], "tags": [s["tags"] for s in sentences]},
        tokenizer, {tag: i for i, tag in enumerate(LABELS)}, 512, False,
    )  # fmt: skip
    by_length = sorted(range(len(sentences)), key=encoded["length"].__getitem__)
    chosen = by_length[:: len(by_length) // 7][:7] + by_length[-1:]  # the shortest to the longest of 2,000
    collate = DataCollatorForTokenClassification(tokenizer, return_tensors="pt")
    batch = collate([{key: encoded[key][i] for key in ("input_ids", "attention_mask", "labels")} for i in chosen])
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    assert min(lengths) <= 5 and max(lengths) >= 60 and len(set(lengths)) >= 6
    unpadded = load_model(str(multilingual_model), LABELS)  # ner_accel's default: real tokens only
    padded = load_model(str(multilingual_model), LABELS, attention="sdpa")
    assert padded.config._attn_implementation == "sdpa" != unpadded.config._attn_implementation
    padded.load_state_dict(unpadded.state_dict())  # the classifier is initialised at random: share it
    unpadded.eval()  # no dropout: both must compute the same function
    padded.eval()
    packing = Packing.of_lengths(lengths, batch["input_ids"].shape[1])  # as the collator adds it
    ours, reference = unpadded(**batch, packing=packing), padded(**batch)
    real = batch["attention_mask"].bool()
    assert (ours.logits[~real] == 0).all()  # the packed path ran: padding positions were never computed
    # fp32 through 12 layers, the same kernels on a different layout: measured 4e-7 apart at most
    torch.testing.assert_close(ours.logits[real], reference.logits[real], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.loss, reference.loss, rtol=1e-6, atol=1e-6)
    ours.loss.backward()
    reference.loss.backward()
    gradients = dict(padded.named_parameters())
    word_embeddings = unpadded.get_input_embeddings().weight
    for name, parameter in unpadded.named_parameters():
        mine, expected = parameter.grad, gradients[name].grad
        if parameter is word_embeddings:  # 250,037 rows, the batch's tokens touch a few hundred: compare those
            touched = batch["input_ids"][real].unique()
            assert mine.count_nonzero() == mine[touched].count_nonzero() > 0
            assert expected.count_nonzero() == expected[touched].count_nonzero()
            mine, expected = mine[touched], expected[touched]
        torch.testing.assert_close(mine, expected, rtol=1e-4, atol=1e-6, msg=name)


# ---------------------------------------------------------------------------------------------------------------
# predict on raw text, with the model fine-tuned briefly by ner_accel.train


@pytest.fixture(scope="module")
def tagger(multilingual_model, tmp_path_factory) -> Tagger:
    """multilingual-e5-small fine-tuned by ner_accel.train on 300 PAN-X de sentences: real labels, rough accuracy."""
    root = tmp_path_factory.mktemp("e5-panx-de")
    with pytest.MonkeyPatch.context() as patch:  # module-scoped: its own datasets cache, as each test has
        patch.setenv("HF_DATASETS_CACHE", str(root / "hf-cache"))
        patch.setenv("HF_HUB_OFFLINE", "1")
        code = run_training(
            ["--model", multilingual_model, "--data-dir", PANX / "de", "--output-dir", root, "--run-name", "run",
             "--max-train-samples", 300, "--max-eval-samples", 50, "--num-train-epochs", 1,
             # 75 small steps at a high rate tag entities (validation F1 about 0.4; at batch 24 and 5e-5 the model
             # still tags everything O); frozen word embeddings skip their dense gradient and AdamW update
             "--per-device-train-batch-size", 4, "--learning-rate", 2e-4, "--freeze-word-embeddings"]
        )  # fmt: skip
    assert code == 0
    return Tagger.load(str(root / "run"), batch_size=1)  # each text alone: equal input ids, bit-equal outputs


def as_text(tokens: list[str]) -> tuple[str, list[int], list[int]]:
    """The words joined by spaces, with each word's start and end offset."""
    starts = [sum(len(word) + 1 for word in tokens[:i]) for i in range(len(tokens))]
    return " ".join(tokens), starts, [start + len(word) for start, word in zip(starts, tokens)]


def evaluation_entities(tagger: Tagger, tokens: list[str]) -> list[tuple[str, int, int]]:
    """(type, first word, last word) as evaluation reads a sentence: the label log-probabilities at each word's
    first piece, decoded as the tagger decodes (a word without pieces counts as O), grouped by seqeval."""
    encoded = tagger.tokenizer(tokens, is_split_into_words=True, return_tensors="pt")
    with torch.inference_mode():
        log_probabilities = tagger.model(**encoded).logits[0].float().log_softmax(dim=-1).numpy()
    first = {}
    for position, word in enumerate(encoded.word_ids()):
        if word is not None:
            first.setdefault(word, position)
    labels = [tagger.model.config.id2label[i] for i in range(log_probabilities.shape[-1])]
    seen = sorted(first)
    decoded = decode(log_probabilities[[first[word] for word in seen]], labels, tagger.decoding)
    tags = ["O"] * len(tokens)
    for word, label in zip(seen, decoded):
        tags[word] = labels[label]
    return get_entities(tags)


@pytest.fixture(scope="module")
def tagged(tagger, panx_de_validation) -> list[tuple[list[str], str, list[dict]]]:
    """Real sentences as raw text that predict splits back into their PAN-X words, and the entities it finds:
    the first 40 and every one with an invisible character (soft hyphens)."""
    chosen = panx_de_validation[:40] + [s for s in panx_de_validation if any(INVISIBLE.search(w) for w in s["tokens"])]
    sentences = [s["tokens"] for s in chosen]
    texts = [as_text(tokens)[0] for tokens in sentences]
    kept = [i for i, text in enumerate(texts) if [text[a:b] for a, b in split_words(text)] == sentences[i]]
    assert len(kept) >= 30
    found = tagger.tag([texts[i] for i in kept])
    return [(sentences[i], texts[i], entities) for i, entities in zip(kept, found)]


@pytest.mark.shared
def test_predict_tags_words_as_evaluation_does(tagger, tagged):
    """Same entities from raw text as from the words: lone-"▁" words, soft hyphens and all."""
    assert sum(len(entities) for _, _, entities in tagged) >= 10  # a model that tags everything O proves nothing
    assert any("\xad" in text for _, text, _ in tagged)
    for tokens, text, entities in tagged:
        _, starts, ends = as_text(tokens)
        assert all(text[e["start"] : e["end"]] == e["text"] for e in entities)
        found = [(e["type"], starts.index(e["start"]), ends.index(e["end"])) for e in entities]
        assert found == evaluation_entities(tagger, tokens), text


def with_inserted(text: str, inserts: dict[int, str]) -> tuple[str, list[bool]]:
    """`text` with strings inserted before the given offsets, and for each character whether it was inserted."""
    out, inserted = [], []
    for offset in range(len(text) + 1):
        extra = inserts.get(offset, "")
        out += extra
        inserted += [True] * len(extra)
        if offset < len(text):
            out.append(text[offset])
            inserted.append(False)
    return "".join(out), inserted


def without_inserted(entity: dict, text: str, inserted: list[bool]) -> tuple:
    """The entity's type, offsets and text in the original string (the inserted characters taken out)."""
    kept = "".join(text[i] for i in range(entity["start"], entity["end"]) if not inserted[i])
    start = inserted[: entity["start"]].count(False)
    return entity["type"], start, start + len(kept), kept


def spans(entities: list[dict]) -> list[tuple]:
    return [(e["type"], e["start"], e["end"], e["text"]) for e in entities]


@pytest.mark.shared
def test_invisible_characters_move_no_entity(tagger, tagged):
    """Characters XLM-R drops, attached to words or as words of their own outside entities: the same entities,
    at the same places of the visible text, with bit-equal scores (the model sees the same input ids)."""
    originals, variants = [], []
    for _, text, entities in [row for row in tagged if row[2]][:8]:
        inserts = {0: "\ufeff", len(text): " \ufffd"}  # a byte-order mark before the first word, a lone U+FFFD last
        for entity in entities:
            start, end = entity["start"], entity["end"]
            if start > 0:  # a word of its own just before the entity
                inserts[start] = inserts.get(start, "") + "\u200e "
            if text[start : start + 2].isalnum():  # inside its first word
                inserts[start + 1] = inserts.get(start + 1, "") + "\x07"
            inserts[end] = "\u200b" + inserts.get(end, "")  # glued to its last word
        originals.append(entities)
        variants.append(with_inserted(text, inserts))
    assert len(originals) == 8
    for entities, (changed, inserted), found in zip(originals, variants, tagger.tag([v for v, _ in variants])):
        assert all(changed[e["start"] : e["end"]] == e["text"] for e in found), ascii(changed)
        assert [without_inserted(e, changed, inserted) for e in found] == spans(entities), ascii(changed)
        assert [e["score"] for e in found] == pytest.approx([e["score"] for e in entities], abs=1e-6)


@pytest.mark.shared
def test_texts_of_invisible_words_only(tagger):
    assert tagger.tag(["\u200b", "\ufeff \x07\u200b \u2581 \u200e", "", "\xad"]) == [[], [], [], []]


@pytest.mark.shared
def test_an_invisible_word_inside_an_entity_keeps_it_whole(tagger, tagged):
    long = [(text, e) for _, text, entities in tagged for e in entities if " " in e["text"]]
    if not long:
        pytest.fail("no entity of two words or more to test with")  # not the expected failure: XFAIL would hide it
    variants = []
    for text, entity in long:
        second = entity["start"] + entity["text"].index(" ") + 1  # the offset of the entity's second word
        variants.append(with_inserted(text, {second: "\u200b "}))
    for (_, entity), (changed, inserted), entities in zip(long, variants, tagger.tag([v for v, _ in variants])):
        end = entity["end"] + 2  # the entity's span in the changed text
        overlapping = [e for e in entities if e["start"] < end and e["end"] > entity["start"]]
        assert [without_inserted(e, changed, inserted) for e in overlapping] == spans([entity]), ascii(changed)


# ---------------------------------------------------------------------------------------------------------------
# The model cache (benchmarks/shared_models.py) with a stand-in converter: no ../shared needed


@pytest.fixture
def model_cache(tmp_path, monkeypatch):
    """shared_models with its sources in tmp_path, its cache in tmp_path, and a converter that counts its runs."""
    from conftest import load_shared_models

    shared_models = load_shared_models()
    sources = [tmp_path / "source" / name for name in ("to_transformers.py", "weights.bin")]
    for path in sources:
        path.parent.mkdir(exist_ok=True)
        path.write_text(path.name)
    runs = tmp_path / "conversions.log"

    def convert(out):
        with runs.open("a") as log:  # O_APPEND: one whole line per conversion, from any process
            log.write(f"{out.name}\n")
        time.sleep(0.3)  # long enough for the other callers to arrive while it runs
        for name in shared_models.MODEL_FILES:
            (out / name).write_text(name)

    monkeypatch.setattr(shared_models, "E5_INPUTS", sources)
    monkeypatch.setattr(shared_models, "convert", convert)
    monkeypatch.setenv(shared_models.CACHE_VARIABLE, str(tmp_path / "cache"))
    return shared_models, sources, runs


def conversions(runs) -> int:
    return len(runs.read_text().splitlines()) if runs.exists() else 0


def test_concurrent_callers_convert_once(model_cache, tmp_path):
    shared_models, _, runs = model_cache
    context = multiprocessing.get_context("fork")  # the children inherit the stand-in converter
    found = context.Queue()
    callers = [context.Process(target=lambda: found.put(shared_models.multilingual_e5_small())) for _ in range(3)]
    for caller in callers:
        caller.start()
    directories = [found.get(timeout=60) for _ in callers]
    for caller in callers:
        caller.join(timeout=60)
        assert caller.exitcode == 0
    assert len(set(directories)) == 1 and conversions(runs) == 1
    target = directories[0]
    assert target.parent == tmp_path / "cache" / "multilingual-e5-small"
    assert sorted(p.name for p in target.iterdir()) == sorted(shared_models.MODEL_FILES)
    assert sorted(p.name for p in target.parent.iterdir()) == [".lock", target.name]  # no staging left


def test_changed_sources_convert_anew_and_a_failed_conversion_is_never_served(model_cache, monkeypatch):
    shared_models, sources, runs = model_cache
    first = shared_models.multilingual_e5_small()
    assert shared_models.multilingual_e5_small() == first and conversions(runs) == 1
    sources[1].write_text("other weights")
    second = shared_models.multilingual_e5_small()
    assert second != first and conversions(runs) == 2 and not first.exists()  # the stale 470 MB are removed

    def fails(out):
        (out / "config.json").write_text("{}")  # half written, then the converter dies
        raise RuntimeError("converter died")

    monkeypatch.setattr(shared_models, "convert", fails)
    sources[0].write_text("a new converter")
    with pytest.raises(RuntimeError, match="converter died"):
        shared_models.multilingual_e5_small()
    assert sorted(p.name for p in second.parent.iterdir()) == [".lock", second.name]  # nothing half-written


def test_a_missing_source_names_the_file(model_cache):
    shared_models, sources, _ = model_cache
    sources[1].unlink()
    assert shared_models.missing_sources() == [sources[1]]
    with pytest.raises(FileNotFoundError, match="weights.bin not found"):
        shared_models.multilingual_e5_small()
