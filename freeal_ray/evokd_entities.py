"""EvoKD for NER, on plain lists: the tagger's mistakes as spans, its F1 per entity type, and the
prompts that show them to the LLM and ask it for new annotated sentences. The classification
side is evokd.py; kinds/entities.py puts both behind the kind's interface.

A sentence's answer is its BIO tags; the student is wrong on a sentence when its entities (span
and type, exact match) differ from the reference's. The LLM is shown the sentence with both entity
lists, and writes sentences already annotated (the JSON round-0 synthesis asks for); a separate
labelling call annotates each written sentence, and one whose entities of the type it was written
for it reads otherwise is dropped (`confirms`), as a relabelled class is for classification.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from freeal_ray.ner import entities, entity_counts, spans_of
from freeal_ray.task import EntityTask

NONE = "O"  # the side of a mistake with no entity: the BIO tag outside any


def tags_or_none(value) -> list[str] | None:
    """Tags as a plain list (Parquet gives arrays), None where the sentence has none."""
    return None if value is None else [str(t) for t in value]


def entity_errors(gold: Sequence[str], pred: Sequence[str]) -> int:
    """Entities in one list and not the other (missed plus spurious, a wrong type counting once each)."""
    g, p = set(entities(list(gold))), set(entities(list(pred)))
    return len(g ^ p)


def shown_sentences(gold: Sequence, pred: Sequence, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of up to `k` sentences the tagger got wrong, those with the most entity errors
    first, and up to `k` it got right, at random; sentences with no reference tags are never shown."""
    known = np.array([g is not None for g in gold], dtype=bool)
    errors = np.array([entity_errors(g, p) if g is not None else 0 for g, p in zip(gold, pred)])
    wrong = np.flatnonzero(known & (errors > 0))
    right = np.flatnonzero(known & (errors == 0))
    wrong = wrong[np.argsort(-errors[wrong], kind="stable")][:k]
    right = np.random.default_rng(seed).permutation(right)[:k]
    return wrong, np.sort(right)


def confirms(written: Sequence[str] | None, labelled: Sequence[str] | None, etype: str) -> bool:
    """Whether the labelling call's tags confirm a sentence written to name an `etype` entity: the
    writer listed at least one, and the call found the same `etype` entities (span and type).
    Entities of other types are the writer's: on CoNLL03 1-shot at 0.5B (67253ce, seeds 0 1), asking
    every entity to match would have kept 18 of the 118 EvoKD sentences asked, this rule keeps 25."""
    if not written or labelled is None:
        return False
    want = {e for e in entities(list(written)) if e[2] == etype}
    return bool(want) and want == {e for e in entities(list(labelled)) if e[2] == etype}


def entity_f1(gold: Sequence, pred: Sequence, etype: str | None = None) -> float:
    """Exact-match entity F1 over sentences (those with no reference tags left out), of one type or all."""
    matched = n_gold = n_pred = 0
    for g, p in zip(gold, pred):
        if g is None:
            continue
        g, p = list(g), list(p)
        if etype is not None:
            g, p = ([t if t.endswith(f"-{etype}") else "O" for t in tags] for tags in (g, p))
        a, b, c = entity_counts(g, p)
        matched, n_gold, n_pred = matched + a, n_gold + b, n_pred + c
    return 2 * matched / (n_gold + n_pred) if matched else 0.0


def type_f1(gold: Sequence, pred: Sequence, types: Sequence[str]) -> dict[str, float]:
    """The tagger's exact-match entity F1 per type."""
    return {etype: entity_f1(gold, pred, etype) for etype in types}


def mistake_pairs(gold: Sequence, pred: Sequence) -> list[tuple[str, str]]:
    """Per entity mistake, (the type the sentence has, the type the tagger said), NONE on the side
    that has no entity there: a name it tagged (in whole or in part) with another type gives (X, Y),
    one whose edges it got wrong (X, X), a missed one (X, NONE), one it made up where the sentence
    has no name (NONE, Y). Each side of a mistake counts once, as in entity F1's misses and extras."""
    pairs = []
    for g, p in zip(gold, pred):
        a, b = set(entities(list(g))), set(entities(list(p)))
        said = sorted(b - a)
        for start, end, etype in sorted(a - b):
            overlap = next((s for s in said if s[0] < end and start < s[1]), None)
            if overlap is not None:
                said.remove(overlap)
            pairs.append((etype, overlap[2] if overlap else NONE))
        pairs += [(NONE, etype) for _, _, etype in said]
    return pairs


def _entity_list(tokens: Sequence[str], tags: Sequence[str]) -> str:
    spans = spans_of(list(tokens), list(tags))
    return ", ".join(f"{text} ({etype})" for text, etype in spans) or "none"


def _system(task: EntityTask) -> str:
    kinds = "; ".join(f"{t}: {about}" for t, about in task.types.items())
    return f"You help train a small named-entity tagger. Its task: {task.instruction} Entity types: {kinds}."


def analysis_messages(task: EntityTask, wrong: Sequence[tuple], right: Sequence[tuple], f1: dict[str, float]) -> list[dict]:
    """Ask for the tagger's weaknesses in words, from its wrong sentences (tokens, true tags, its
    tags), some right ones (tokens, tags) and its F1 per entity type."""
    parts = ["The tagger got these sentences wrong:"] if wrong else ["The tagger made no mistake on the sentences it was tested on."]
    parts += [f"- {task.input_name}: {' '.join(t)}\n  True entities: {_entity_list(t, g)}\n  The tagger found: {_entity_list(t, p)}"
              for t, g, p in wrong]
    if right:
        parts += ["It got these right:", *[f"- {task.input_name}: {' '.join(t)}\n  Entities: {_entity_list(t, g)}" for t, g in right]]
    parts.append("Its F1 score per entity type: " + ", ".join(f"{t} {v:.2f}" for t, v in f1.items()) + ".")
    parts.append("In three or four sentences, say what the tagger is weak at: which entity types it misses or "
                 "confuses, and which kinds of names or wording trip it up. Do not repeat the sentences.")
    return [{"role": "system", "content": _system(task)}, {"role": "user", "content": "\n".join(parts)}]


WEAK_LEAD = "What the tagger is weak at:"


def writing_prompt(task: EntityTask, analysis: str, etype: str, hard: bool, style: Sequence[str],
                   confusion: Sequence[str] | None = None) -> str:
    """Ask for one new sentence naming a `etype` entity, with all its entities listed in the JSON the
    synthesis schema allows: a hard one aimed at the analysed weakness (where one of the tagger's
    mistakes involving `etype` is given, as (reference, answer) from `mistake_pairs`: a name of the
    kind it gets wrong that way), or a typical one. A hard prompt reads the analysis first and the
    sentences after it, as evokd.writing_messages does, so the writer reads real sentences between
    the talk about the tagger and its answer. An easy prompt is the one static synthesis writes with."""
    shown = "".join(f"{task.input_name}: {' '.join(str(s).split())[:200]}\n" for s in style)
    shown = f"Sentences of the kind to write (do not repeat them; write a new one):\n{shown}\n" if shown else ""
    x, name = task.input_name.lower(), f"{etype} ({task.types[etype]})"
    if not hard:
        return f"{_system(task)}\n{shown}Write one new, typical {x} that names at least one {name}, and list all its entities.{ANSWER_FORM}"
    mistake = _mistake(etype, *confusion) if confusion else None
    ask = f"Write one new {x} that names at least one {name}{mistake or ' of the kind the tagger gets wrong'}, and list all its entities."
    return f"{_system(task)}\n{WEAK_LEAD}\n{analysis.strip()}\n\n{shown}{ask}{ANSWER_FORM}"


ANSWER_FORM = ' Answer in JSON as {"sentence": ..., "entities": [{"text": ..., "type": ...}]}.\nAnswer:'


def _mistake(etype: str, reference: str, answer: str) -> str | None:
    """What a hard prompt for `etype` adds to name one mistake (reference, answer) involving it;
    None for one that does not, or that only got a name's edges wrong. It does not say what the
    tagger does: told "the tagger takes ORG names like it for PER", a 0.5B writer wrote that back as
    its sentence (CoNLL03 1-shot, 18 hard prompts from seed 0's analyses: 3 answers with it, 0 without)."""
    if etype not in (reference, answer) or reference == answer:
        return None
    if reference == etype:
        return " that is easy to miss" if answer == NONE else f" that could pass for {answer}"
    if reference == NONE:
        return f", and a word that is no name but could pass for {etype}"
    return f", and one {reference} name that could pass for {etype}"
