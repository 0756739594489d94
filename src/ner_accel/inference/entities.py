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


def fill_unseen(tags: list[str], seen: list[bool]) -> list[str]:
    """Tags for every word, given the tags of the words the model sees (`tags`, in order) and which words those are.

    A word the tokenizer drops (a lone zero-width space) has no prediction of its own. It is read as `predict`
    groups entities over the words the model sees: inside an entity (the next seen word continues the type of the
    previous one with I-) it is I- of that type, else O.
    """
    visible = iter(tags)
    filled = [next(visible) if is_seen else None for is_seen in seen]
    for index, tag in enumerate(filled):
        if tag is not None:
            continue
        before = next((t for t in reversed(filled[:index]) if t is not None), "O")
        after = next((t for t in filled[index + 1 :] if t is not None), "O")
        kind = before[2:] if before != "O" else None
        filled[index] = f"I-{kind}" if kind and after == f"I-{kind}" else "O"
    return filled
