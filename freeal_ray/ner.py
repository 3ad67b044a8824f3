"""Named-entity recognition on plain lists: tokens, spans, BIO tags, entity-level scores.

The LLM answers with entities as (span text, type); `align_spans` turns them into BIO tags over
the sentence's tokens. A span that does not occur in the sentence, has an unknown type, or
overlaps an entity already placed is dropped and counted, never an error: one bad answer must not
sink a batch.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

_TOKEN = re.compile(r"\w+(?:[-'’.]\w+)*|[^\w\s]")


def tokenize(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Words and punctuation marks, with their character offsets in `text`."""
    tokens, offsets = [], []
    for match in _TOKEN.finditer(text):
        tokens.append(match.group())
        offsets.append(match.span())
    return tokens, offsets


@dataclass
class AlignStats:
    placed: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> count

    def add(self, other: "AlignStats") -> None:
        self.placed += other.placed
        self.dropped.update(other.dropped)


def _squash(text: str) -> str:
    return "".join(text.split()).lower()


class _TokenText:
    """The sentence with spaces removed, and where each token starts and ends in it, so a span
    matches however the LLM spaced it ("U.S." vs "U.S .", "New York" vs "New  York")."""

    def __init__(self, tokens: Sequence[str]):
        self.text = ""
        self.starts, self.ends = {}, {}
        for i, token in enumerate(tokens):
            self.starts[len(self.text)] = i
            self.text += _squash(token)
            self.ends[len(self.text)] = i + 1

    def occurrences(self, span: str) -> list[tuple[int, int]]:
        """(first token, end token) of each place `span` covers whole tokens exactly."""
        needle = _squash(span)
        found, at = [], self.text.find(needle)
        while needle and at >= 0:
            end = at + len(needle)
            if at in self.starts and end in self.ends:
                found.append((self.starts[at], self.ends[end]))
            at = self.text.find(needle, at + 1)
        return found


def align_spans(
    tokens: Sequence[str], spans: Iterable[tuple[str, str]], entity_types: Sequence[str]
) -> tuple[list[str], AlignStats]:
    """BIO tags for `tokens` from (span text, type) pairs, plus what was placed and dropped.

    A span matches whole tokens, case-insensitive and ignoring whitespace, so "New York" finds
    ["New", "York"] and "U.S." finds ["U.S."] or ["U.S", "."]. Every occurrence of a listed span is tagged: an entity string that
    appears twice in a sentence is the same entity twice. Longer spans are placed first so
    "New York Times" wins over "New York".
    """
    known = set(entity_types)
    tags = ["O"] * len(tokens)
    stats = AlignStats()
    sentence = _TokenText(tokens)
    parsed = []
    for text, etype in spans:
        if etype not in known:
            stats.dropped["unknown type"] += 1
            continue
        if not _squash(str(text)):
            stats.dropped["empty span"] += 1
            continue
        parsed.append((str(text), etype))
    for text, etype in sorted(parsed, key=lambda p: -len(_squash(p[0]))):
        places = sentence.occurrences(text)
        if not places:
            stats.dropped["not in sentence"] += 1
            continue
        placed = False
        for start, end in places:
            if any(tag != "O" for tag in tags[start:end]):
                continue
            tags[start] = f"B-{etype}"
            for i in range(start + 1, end):
                tags[i] = f"I-{etype}"
            placed = True
        if placed:
            stats.placed += 1
        else:
            stats.dropped["overlaps another entity"] += 1
    return tags, stats


def is_valid_bio(tags: Sequence[str]) -> bool:
    """Every I-X follows a B-X or an I-X."""
    previous = "O"
    for tag in tags:
        if not (tag == "O" or tag.startswith(("B-", "I-"))):
            return False
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            return False
        previous = tag
    return True


def entities(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """(start, end, type) of each entity, end exclusive. A stray I-X starts a new entity, as
    conlleval counts it."""
    found, start, etype = [], None, None
    for i, tag in enumerate([*tags, "O"]):
        continues = tag.startswith("I-") and start is not None and tag[2:] == etype
        if continues:
            continue
        if start is not None:
            found.append((start, i, etype))
            start, etype = None, None
        if tag.startswith(("B-", "I-")):
            start, etype = i, tag[2:]
    return found


def spans_of(tokens: Sequence[str], tags: Sequence[str]) -> list[tuple[str, str]]:
    """The (span text, type) pairs a tagged sentence holds: how demos are shown to the LLM."""
    return [(" ".join(tokens[s:e]), t) for s, e, t in entities(tags)]


def entity_counts(gold: Sequence[str], pred: Sequence[str]) -> tuple[int, int, int]:
    """(exact matches, gold entities, predicted entities) of one sentence. A predicted sequence
    longer or shorter than the gold one counts only the entities inside the gold sentence."""
    gold_set = set(entities(gold))
    pred_set = {e for e in entities(pred) if e[1] <= len(gold)}
    return len(gold_set & pred_set), len(gold_set), len(pred_set)


def dominant_type(tags: Sequence[str]) -> str:
    """The entity type a sentence names most (first named on a tie), or "none": how NER demos
    are grouped, so every type gets demos of its own."""
    found = Counter(t for _, _, t in entities(tags))
    return max(found, key=lambda t: (found[t], -[e[2] for e in entities(tags)].index(t))) if found else "none"


def answer_schema(entity_types: Sequence[str]) -> dict:
    """JSON schema the LLM's answer is constrained to: a list of (text, type) entities."""
    return {
        "type": "object",
        "properties": {
            "entities": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"text": {"type": "string"}, "type": {"type": "string", "enum": list(entity_types)}},
                    "required": ["text", "type"],
                },
            }
        },
        "required": ["entities"],
    }


# Longer than 99.9% of CoNLL03's training sentences and 99% of BC5CDR's (characters, words joined by spaces).
SENTENCE_CHARS = 400


def synthesis_schema(entity_types: Sequence[str], sentence_chars: int = SENTENCE_CHARS) -> dict:
    """JSON schema of a written sentence (a round-0 demo, an EvoKD example) and the entities it
    names. The sentence is bounded: a 0.5B writer that wrote its prompt back as the sentence (the
    analysis of the tagger, CoNLL03) ran to the token limit and its answer was unreadable; bounded,
    the string closes, the entities follow, and the copy check sees the repeat."""
    schema = answer_schema(entity_types)
    schema["properties"] = {"sentence": {"type": "string", "maxLength": sentence_chars}, **schema["properties"]}
    schema["required"] = ["sentence", "entities"]
    return schema


def tag_indices(values: Sequence[Sequence[str]] | None, tags: Sequence[str], n_words: Sequence[int]) -> list[list[int]]:
    """Tag names to indices per sentence; a sentence with no tags (unlabelled) is all -1."""
    index = {t: i for i, t in enumerate(tags)}
    if values is None:
        return [[-1] * n for n in n_words]
    return [[index.get(t, -1) for t in v] if v is not None else [-1] * n for v, n in zip(values, n_words)]
