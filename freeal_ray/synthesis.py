"""Round-0 demo synthesis: the LLM writes labelled examples (classification) or annotated
sentences (NER) in the corpus's style, after reading a few of its rows."""

from __future__ import annotations

import logging
import random
import re

import pandas as pd
import ray

from freeal_ray.engine_actors import LLMSettings
from freeal_ray.ner import align_spans, dominant_type, synthesis_schema, tokenize
from freeal_ray.prompts import (
    clean_synthetic,
    entity_synthesis_prompt,
    parse_synthetic_sentence,
    synthesis_prompt,
    synthesis_stops,
)
from freeal_ray.task import EntityTask, Task
from freeal_ray.workers import DEMO_SCHEMA
from freeal_ray.writing import extract, on_engines

log = logging.getLogger(__name__)
SHOWN_PER_PROMPT = 5  # corpus rows a synthesis prompt shows as style prototypes, drawn from the pool of loop.prototypes


def synthesize_demos(
    corpus: ray.data.Dataset,
    n_rows: int,
    task: Task,
    settings: LLMSettings,
    prototypes: int,
    per_class: int,
    temperature: float,
    max_tokens: int,
    seed: int,
) -> tuple[pd.DataFrame, dict]:
    """Round 0: the LLM writes `per_class` labelled examples per class in the corpus's style.

    Returns the demos (the task's given examples first) and the counts `new_examples` reports."""
    pool = _prototypes(corpus, n_rows, prototypes, seed, settings.max_text_chars)
    rng = random.Random(seed)
    jobs = []
    for label in task.labels:
        for _ in range(per_class):
            shown = rng.sample(pool, min(SHOWN_PER_PROMPT, len(pool)))
            jobs.append({"label": label, "prompt": synthesis_prompt(task, label, shown), "shown": shown})
    prompts = [j["prompt"] for j in jobs]
    if settings.runner == "ray_data_llm":
        from freeal_ray.ray_llm import generate_texts

        texts = [clean_synthetic(t) for t in generate_texts(prompts, settings, max_tokens, temperature, synthesis_stops(task))]
    else:
        texts = _generate_on_actors(prompts, settings, max_tokens, temperature, synthesis_stops(task))
    out, counts = new_examples([j["label"] for j in jobs], texts, [j["shown"] for j in jobs])
    demos = pd.DataFrame(
        {
            "id": [f"synthetic-{i}" for i in range(len(out))],
            "text": out["text"].tolist(),
            "label": out["label"].tolist(),
            "origin": "synthetic",
        }
    )
    return pd.concat([given_demos(task), demos], ignore_index=True), counts


def given_demos(task: Task) -> pd.DataFrame:
    """The task's hand-written examples as demos (id, text, label, origin 'given')."""
    return pd.DataFrame(
        [{"id": f"given-{i}", "text": t, "label": lab, "origin": "given"} for i, (t, lab) in enumerate(task.examples)],
        columns=DEMO_SCHEMA.names,
    )


def given_entity_demos(task: EntityTask) -> pd.DataFrame:
    """The NER task's hand-written examples as demos (id, text, tokens, tags, label, origin
    'given'): the sentence tokenised as a corpus sentence is, its listed entities tagged on it."""
    rows = []
    for text, entities in task.examples:
        tokens, _ = tokenize(text)
        tags, _ = align_spans(tokens, entities, task.entity_types)
        rows.append({"text": " ".join(tokens), "tokens": tokens, "tags": tags, "label": dominant_type(tags)})
    demos = pd.DataFrame(rows, columns=["text", "tokens", "tags", "label"])
    demos.insert(0, "id", [f"given-{i}" for i in range(len(demos))])
    demos["origin"] = "given"
    return demos


def new_examples(labels: list[str], texts: list[str], shown: list[list[str]]) -> tuple[pd.DataFrame, dict]:
    """The written examples worth keeping as demos (label, text), and how many were dropped and why.

    A small model often repeats a corpus row it was shown, whole or with a tail: that is an
    unlabelled row with a guessed label, not an example of the label. A text written for two labels
    teaches nothing either way, so every copy of it goes."""
    # Compared on words only: corpora like MR and SUBJ space their punctuation ("drags .").
    key = lambda t: " ".join(re.findall(r"\w+", str(t).lower()))  # noqa: E731
    rows = pd.DataFrame({"label": labels, "text": texts, "key": [key(t) for t in texts]})
    empty = rows["key"] == ""
    copied = pd.Series([_repeats_a_row(k, [key(p) for p in ps]) for k, ps in zip(rows["key"], shown)], index=rows.index)
    copied &= ~empty
    kept = rows[~empty & ~copied]
    labels_per_text = kept.groupby("key")["label"].nunique()
    conflicting = kept["key"].map(labels_per_text) > 1
    unique = kept[~conflicting].drop_duplicates("key")
    counts = {"written": len(rows), "empty": int(empty.sum()), "copied_a_corpus_row": int(copied.sum()),
              "written_for_two_labels": int(conflicting.sum()), "repeated": int((~conflicting).sum() - len(unique)),
              "kept": len(unique)}
    return unique[["label", "text"]].reset_index(drop=True), counts


def _repeats_a_row(text: str, rows: list[str], min_chars: int = 20) -> bool:
    """Whether `text` is one of `rows`, contains one, or is a long enough piece of one."""
    return any(text == r or (len(r) >= min_chars and r in text) or (len(text) >= min_chars and text in r) for r in rows)


def synthesize_entity_demos(
    corpus: ray.data.Dataset,
    n_rows: int,
    task: EntityTask,
    settings: LLMSettings,
    prototypes: int,
    per_type: int,
    max_tokens: int,
    seed: int,
) -> tuple[pd.DataFrame, dict]:
    """Round 0 for NER: the LLM writes `per_type` sentences per entity type in the corpus's style,
    each with its entities listed (one JSON answer). Sentences whose listed entities cannot be
    placed are dropped and counted. Returns the demos (id, text, tokens, tags, label, origin; the
    task's given examples first) and the counts."""
    pool = _prototypes(corpus, n_rows, prototypes, seed, settings.max_text_chars)
    rng = random.Random(seed)
    prompts = [entity_synthesis_prompt(task, etype, rng.sample(pool, min(SHOWN_PER_PROMPT, len(pool))))
               for etype in task.entity_types for _ in range(per_type)]
    answers = extract(prompts, settings, synthesis_schema(task.entity_types), max_tokens, "LLM demo synthesis", unit="demo")
    rows, counts = [], {"written": len(prompts), "unparsed": 0, "no_entity_placed": 0, "spans_dropped": 0}
    for answer in answers:
        parsed = parse_synthetic_sentence(answer.text)
        if parsed is None:
            counts["unparsed"] += 1
            continue
        tokens, _ = tokenize(parsed[0])
        tags, stats = align_spans(tokens, parsed[1], task.entity_types)
        counts["spans_dropped"] += sum(stats.dropped.values())
        if not stats.placed:  # it was asked for an entity: a sentence with none is a miss
            counts["no_entity_placed"] += 1
            continue
        rows.append({"text": " ".join(tokens), "tokens": tokens, "tags": tags})
    demos = pd.DataFrame(rows, columns=["text", "tokens", "tags"]).drop_duplicates("text")
    demos.insert(0, "id", [f"synthetic-{i}" for i in range(len(demos))])
    demos["label"] = [dominant_type(t) for t in demos["tags"]]
    demos["origin"] = "synthetic"
    given = given_entity_demos(task)
    demos = demos[~demos["text"].isin(set(given["text"]))]
    return pd.concat([given, demos], ignore_index=True), counts


def _prototypes(corpus: ray.data.Dataset, n_rows: int, prototypes: int, seed: int, max_chars: int) -> list[str]:
    """A few unlabeled corpus texts, shown to the LLM as the style to write in."""
    fraction = min(1.0, 3.0 * prototypes / max(n_rows, 1))
    sample = corpus.select_columns(["text"]).random_sample(fraction, seed=seed).take(prototypes)
    return [r["text"][:max_chars] for r in sample] or [""]


def _generate_on_actors(prompts: list[str], settings: LLMSettings, max_tokens: int, temperature: float, stop) -> list[str]:
    texts = on_engines("generate", prompts, settings, max_tokens, temperature, list(stop), desc="LLM demo synthesis", unit="demo")
    return [clean_synthetic(t) for t in texts]
