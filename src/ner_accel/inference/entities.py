"""Entity spans from IOB2 word tags, grouped as seqeval and transformers' pipeline group them."""

from __future__ import annotations


def extract_entities(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, first word, last word + 1): B-X, or a type other than the previous word's, starts an entity.

    The pipeline's grouping (and seqeval's default): I-X after O starts an entity; a tag without prefix counts as I-.
    """
    entities, previous = [], "O"
    for index, tag in enumerate(tags):
        kind = tag[2:] if tag[:2] in ("B-", "I-") else tag
        if tag == "O":
            pass
        elif tag.startswith("B-") or kind != previous:
            entities.append([kind, index, index + 1])
        else:
            entities[-1][2] = index + 1
        previous = kind
    return [tuple(entity) for entity in entities]
