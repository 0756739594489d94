"""Read a file's NER tags, in whichever scheme it was written (IOB1, IOB2, BIOES/IOBES, BILOU), as IOB2.

Detection looks at every tag of a file, validation names the file:line of a broken BIOES/BILOU sequence, and the
conversion works on one sentence. Everything after reading (labels, training, seqeval) sees IOB2 only, so a
file's scheme cannot change its F1.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from ..errors import UsageError

TAG_SCHEMES = ("auto", "iob1", "iob2", "bioes", "bilou")  # the values of --tag-scheme; auto = detect per file
SCHEME_ALIASES = {"iobes": "bioes"}  # the same scheme under both names in the literature and in tools
DISPLAY_NAMES = {"iob1": "IOB1", "iob2": "IOB2", "bioes": "BIOES", "bilou": "BILOU"}
PREFIXES = {"iob1": "BI", "iob2": "BI", "bioes": "BIES", "bilou": "BILU", "auto": "BIESLU"}
END_PREFIX = {"bioes": "E", "bilou": "L"}  # closes an entity of several tokens: B I* E
SINGLE_PREFIX = {"bioes": "S", "bilou": "U"}  # an entity of one token


def scheme_name(name: str) -> str:
    """A scheme as the user names it (any case, IOBES for bioes) as one of TAG_SCHEMES."""
    scheme = SCHEME_ALIASES.get(name.lower(), name.lower())
    if scheme not in TAG_SCHEMES:
        raise UsageError(
            f"--tag-scheme {name!r}: unknown tag scheme; use one of {', '.join(TAG_SCHEMES)} (iobes = bioes)"
        )
    return scheme


def is_tag(text: str, scheme: str = "iob2") -> bool:
    """O, or a prefix of the scheme, '-' and a type of visible characters with a letter or digit (PER, DATE-TIME)."""
    kind = text[2:]
    return text == "O" or (
        text[:1] in PREFIXES[scheme] and text[1:2] == "-" and kind.isprintable()
        and not any(c.isspace() for c in kind) and any(c.isalnum() for c in kind)
    )  # fmt: skip


def split_tag(tag: str) -> tuple[str, str]:
    """(prefix letter, type) of a valid tag; O is ("O", "")."""
    return ("O", "") if tag == "O" else (tag[0], tag[2:])


def conll_lines(tag_lists: Sequence[Sequence[str]]) -> list[list[int]]:
    """The line of each tag in a plain CoNLL file of these sentences (one token a line, one blank line between)."""
    lines, number = [], 1
    for tags in tag_lists:
        lines.append(list(range(number, number + len(tags))))
        number += len(tags) + 1
    return lines


# ---------------------------------------------------------------------------------------------------------------
# Detection


def scheme_evidence(tag_lists: Sequence[Sequence[str]], lines: Sequence[Sequence[int]]) -> tuple[Counter, dict]:
    """Count what tells the schemes apart, with the first line of each kind:

    bioes / bilou: their own prefixes (S-/E-, U-/L-); b_start: B- after O, another type or the sentence start;
    b_adjacent: B- right after the same type (the only place IOB1 writes B-); i_start: I- after O, another type or
    the sentence start (an entity start in IOB1, a stray tag in IOB2).
    """
    counts: Counter = Counter()
    first: dict[str, tuple[str, int]] = {}
    for tags, numbers in zip(tag_lists, lines):
        previous_kind = ""
        for tag, number in zip(tags, numbers):
            prefix, kind = split_tag(tag)
            if prefix in "SE":
                evidence = "bioes"
            elif prefix in "UL":
                evidence = "bilou"
            elif prefix == "B":
                evidence = "b_adjacent" if kind == previous_kind else "b_start"
            elif prefix == "I" and kind != previous_kind:
                evidence = "i_start"
            else:
                evidence = ""
            if evidence:
                counts[evidence] += 1
                first.setdefault(evidence, (tag, number))
            previous_kind = kind
    return counts, first


def detect_scheme(
    tag_lists: Sequence[Sequence[str]], source: str = "<tags>", lines: Sequence[Sequence[int]] | None = None
) -> str:
    """The scheme a file's tags are written in (iob1, iob2, bioes or bilou), from all of them; source and lines
    (of each tag, default: a plain CoNLL file) only name places in errors."""
    counts, first = scheme_evidence(tag_lists, lines or conll_lines(tag_lists))
    if counts["bioes"] and counts["bilou"]:
        (bioes_tag, bioes_line), (bilou_tag, bilou_line) = first["bioes"], first["bilou"]
        raise UsageError(
            f"{source}: mixes BIOES tags (S-/E-: {bioes_tag} at line {bioes_line}) and BILOU tags "
            f"(U-/L-: {bilou_tag} at line {bilou_line}); write one scheme throughout the file"
        )
    if counts["bioes"] or counts["bilou"]:
        return "bioes" if counts["bioes"] else "bilou"
    # Only O, B- and I- from here. IOB1 and IOB2 differ only where I- starts an entity (IOB1 makes it B-).
    if not counts["i_start"]:
        return "iob2"  # also a file of O and B- only: every reading gives the same IOB2
    if counts["b_adjacent"] and not counts["b_start"]:
        return "iob1"  # B- only right after the same type: IOB1's mark, which IOB2 would never leave alone
    if not counts["b_adjacent"] and not counts["b_start"]:
        # No B- to tell by: read as IOB2 as ner_accel always has. seqeval reads these I- as starts, so the entities
        # are IOB1's, and load_corpus counts them in its warning.
        return "iob2"
    if counts["i_start"] <= counts["b_start"]:
        return "iob2"  # mostly IOB2 with a few stray I- after O, as real corpora have
    (i_tag, i_line), (b_tag, b_line) = first["i_start"], first["b_start"]
    raise UsageError(
        f"{source}: cannot tell IOB1 from IOB2: {counts['i_start']} entities start with I- "
        f"(IOB1; first {i_tag} at line {i_line}) and {counts['b_start']} with B- after O or another type "
        f"(IOB2; first {b_tag} at line {b_line}); pass --tag-scheme iob1 or --tag-scheme iob2"
    )


# ---------------------------------------------------------------------------------------------------------------
# Validation and conversion


def check_sequence(tags: Sequence[str], lines: Sequence[int], source: str, scheme: str) -> None:
    """Refuse a broken BIOES/BILOU sentence at the file:line of the offending tag; IOB1/IOB2 have no broken ones."""
    if scheme not in END_PREFIX:
        return
    end, single, name = END_PREFIX[scheme], SINGLE_PREFIX[scheme], DISPLAY_NAMES[scheme]
    open_kind, open_line = "", 0  # the type of the entity a B- opened and not yet closed, and where

    def never_closed(what_follows: str) -> UsageError:
        return UsageError(
            f"{source}:{open_line}: B-{open_kind} is never closed in {name} ({what_follows}); "
            f"end the entity with {end}-{open_kind}, or tag a one-token entity {single}-{open_kind}"
        )

    for tag, number in zip(tags, lines):
        prefix, kind = split_tag(tag)
        if prefix in ("O", "B", single) and open_kind:
            raise never_closed(f"{tag} follows at line {number}")
        if prefix == "B":
            open_kind, open_line = kind, number
        elif prefix == "I" and kind != open_kind:
            inside = f"inside B-{open_kind} of line {open_line}" if open_kind else "outside an entity"
            raise UsageError(
                f"{source}:{number}: {tag} {inside} in {name}; an entity of several tokens is "
                f"B-{kind} I-{kind} ... {end}-{kind}, one of a single token {single}-{kind}"
            )
        elif prefix == end:
            if kind != open_kind:
                raise UsageError(
                    f"{source}:{number}: {tag} without an open B-{kind} in {name}; start the entity with B-{kind}, "
                    f"or tag a one-token entity {single}-{kind}"
                )
            open_kind = ""
    if open_kind:
        raise never_closed("the sentence ends after it")


def to_iob2(tags: Sequence[str], scheme: str) -> list[str]:
    """One sentence's tags in IOB2 (BIOES/BILOU ones already checked by check_sequence)."""
    if scheme == "iob1":
        converted, previous_kind = [], ""
        for tag in tags:
            prefix, kind = split_tag(tag)
            converted.append(f"B-{kind}" if prefix == "I" and kind != previous_kind else tag)
            previous_kind = kind
        return converted
    if scheme in END_PREFIX:
        renamed = {SINGLE_PREFIX[scheme]: "B", END_PREFIX[scheme]: "I"}
        return [f"{renamed[tag[0]]}{tag[1:]}" if tag != "O" and tag[0] in renamed else tag for tag in tags]
    return list(tags)


def read_as_iob2(
    tag_lists: Sequence[Sequence[str]], lines: Sequence[Sequence[int]], source: str, tag_scheme: str = "auto"
) -> tuple[str, list[list[str]]]:
    """(the scheme read, the IOB2 tags) of one file's sentences: detect (auto) or take the scheme, validate, convert.

    lines holds the line of each tag; every tag must already pass is_tag for the scheme (or for auto)."""
    scheme = scheme_name(tag_scheme)
    detected = scheme == "auto"
    if detected:
        scheme = detect_scheme(tag_lists, source, lines)
    for tags, numbers in zip(tag_lists, lines):
        try:
            check_sequence(tags, numbers, source, scheme)
        except UsageError as error:
            if not detected:
                raise
            # A stray S-/E-/U-/L- in another scheme's file makes the whole file read as BIOES/BILOU: say so.
            marker, line = scheme_evidence(tag_lists, lines)[1][scheme]
            raise UsageError(
                f"{error} (read as {DISPLAY_NAMES[scheme]} for its {marker} at line {line}; "
                "if the file is in another scheme, pass --tag-scheme)"
            ) from None
    return scheme, [to_iob2(tags, scheme) for tags in tag_lists]
