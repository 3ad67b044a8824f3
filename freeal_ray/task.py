"""A labelling task is data: label names, an instruction, and the words the LLM answers with."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from freeal_ray.errors import ConfigError
from freeal_ray.ner import align_spans, tokenize


@dataclass(frozen=True)
class Task:
    """A single-label text classification task.

    `verbalizers` maps a label to the word the LLM writes for it (default: the label name).
    `examples` are optional hand-written (text, label) pairs used as extra round-0 demos.
    """

    name: str
    labels: tuple[str, ...]
    instruction: str
    verbalizers: dict[str, str] = field(default_factory=dict)
    examples: tuple[tuple[str, str], ...] = ()
    input_name: str = "Text"

    def __post_init__(self):
        if len(self.labels) < 2:
            raise ConfigError(f"task {self.name!r} needs at least two labels, got {list(self.labels)}")
        if len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"task {self.name!r} lists a label twice: {list(self.labels)}")
        for label in self.verbalizers:
            if label not in self.labels:
                raise ConfigError(
                    f"task {self.name!r}: verbalizer given for unknown label {label!r} "
                    f"(labels: {', '.join(self.labels)})"
                )
        words = [self.word(label) for label in self.labels]
        if len(set(words)) != len(words):
            raise ConfigError(f"task {self.name!r}: two labels share a verbalizer word: {words}")
        for text, label in self.examples:
            if label not in self.labels:
                raise ConfigError(f"task {self.name!r}: example {text[:40]!r} has unknown label {label!r}")

    def word(self, label: str) -> str:
        return self.verbalizers.get(label, label)

    def label_of_word(self, word: str) -> str | None:
        """The label an LLM answer names, or None when it is outside the label set."""
        cleaned = word.strip().strip(".").lower()
        for label in self.labels:
            if self.word(label).lower() == cleaned:
                return label
        return None

    def label_of_given(self, value: str) -> str | None:
        """The label a label someone already gave names: the label itself or its verbalizer word,
        in any case and spacing ("Positive ", "great" for a verbalizer "great"); None when neither."""
        cleaned = " ".join(value.split()).casefold()
        for label in self.labels:
            if cleaned in (label.casefold(), self.word(label).casefold()):
                return label
        return None

    def index(self, label: str) -> int:
        return self.labels.index(label)

    @classmethod
    def from_dict(cls, data: dict) -> "Task":
        known = {"name", "labels", "instruction", "verbalizers", "examples", "input_name"}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"task has unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
        if "labels" not in data or "instruction" not in data:
            raise ConfigError("a task needs `labels` (a list of names) and `instruction` (a sentence)")
        examples = tuple((e["text"], e["label"]) for e in data.get("examples", []))
        return cls(
            name=data.get("name", "custom"),
            labels=tuple(str(x) for x in data["labels"]),
            instruction=data["instruction"],
            verbalizers=dict(data.get("verbalizers", {})),
            examples=examples,
            input_name=data.get("input_name", "Text"),
        )


@dataclass(frozen=True)
class EntityTask:
    """A named-entity task: entity types with a description each, BIO tags out.

    Rows carry `tokens` (or raw text the project tokenises, keeping offsets); the LLM lists
    entities as (span text, type), which are aligned back to the tokens.
    """

    name: str
    types: dict[str, str]  # type -> what it covers, shown to the LLM
    instruction: str = "List the named entities in the sentence."
    input_name: str = "Sentence"
    #: hand-written (sentence, ((entity text, type), ...)) pairs: extra round-0 demos, EvoKD's seeds
    examples: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()

    def __post_init__(self):
        if not self.types:
            raise ConfigError(f"entity task {self.name!r} needs at least one entity type")
        bad = [t for t in self.types if not t or any(c.isspace() for c in t) or t == "O"]
        if bad:
            raise ConfigError(f"entity task {self.name!r}: type names must be single words other than O, got {bad}")
        for text, entities in self.examples:
            tokens = tokenize(text)[0]
            for span, etype in entities:
                if etype not in self.types:
                    raise ConfigError(f"entity task {self.name!r}: example {text[:40]!r} names {span!r} as unknown "
                                      f"type {etype!r} (types: {', '.join(self.types)})")
                if not align_spans(tokens, [(span, etype)], self.entity_types)[1].placed:  # as the demo will place it
                    raise ConfigError(f"entity task {self.name!r}: example {text[:40]!r} lists {span!r}, "
                                      "which is not in its sentence (as whole words)")

    @property
    def entity_types(self) -> tuple[str, ...]:
        return tuple(self.types)

    @property
    def tags(self) -> tuple[str, ...]:
        """The BIO tag set, O first: the token classifier's classes."""
        return ("O",) + tuple(f"{p}-{t}" for t in self.types for p in ("B", "I"))

    @classmethod
    def from_dict(cls, data: dict) -> "EntityTask":
        known = {"name", "types", "instruction", "input_name", "examples"}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"entity task has unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
        types = data.get("types")
        if isinstance(types, list):  # types without descriptions: the name is the description
            types = {str(t): str(t) for t in types}
        if not isinstance(types, dict):
            raise ConfigError("an entity task needs `types`: a mapping of type name to what it covers")
        extra = {k: data[k] for k in ("instruction", "input_name") if k in data}
        return cls(name=data.get("name", "custom-ner"), types={str(k): str(v) for k, v in types.items()},
                   examples=tuple(_entity_example(e) for e in data.get("examples", [])), **extra)


def _entity_example(data) -> tuple[str, tuple[tuple[str, str], ...]]:
    """{"text": sentence, "entities": [{"text": span, "type": type} or [span, type], ...]}."""
    if not isinstance(data, dict) or "text" not in data or not isinstance(data.get("entities", []), list):
        raise ConfigError(f"an entity task's example is {{text: sentence, entities: [{{text, type}}, ...]}}, got {data!r}")
    entities = []
    for e in data.get("entities", []):
        if isinstance(e, dict) and {"text", "type"} <= e.keys():
            entities.append((str(e["text"]), str(e["type"])))
        elif isinstance(e, (list, tuple)) and len(e) == 2:
            entities.append((str(e[0]), str(e[1])))
        else:
            raise ConfigError(f"example {str(data['text'])[:40]!r}: an entity is {{text, type}} or [text, type], got {e!r}")
    return str(data["text"]), tuple(entities)


ENTITY_PRESETS: dict[str, EntityTask] = {
    "conll03": EntityTask(
        name="conll03",
        types={
            "PER": "names of people",
            "ORG": "companies, institutions, teams, parties and other organisations",
            "LOC": "countries, cities, regions, rivers, mountains and other places",
            "MISC": "nationalities, events, languages, works and other named things",
        },
    ),
    "bc5cdr": EntityTask(
        name="bc5cdr",
        types={"Chemical": "chemicals and drugs", "Disease": "diseases, disorders and symptoms"},
        instruction="List the chemicals and diseases named in the sentence from a biomedical abstract.",
    ),
}


PRESETS: dict[str, Task] = {
    t.name: t
    for t in [
        Task(
            name="sentiment",
            labels=("negative", "positive"),
            instruction="Classify the sentiment of the movie review as negative or positive.",
            input_name="Review",
        ),
        Task(
            name="subjectivity",
            labels=("subjective", "objective"),
            instruction=(
                "Classify the sentence as subjective (an opinion or judgement) or objective "
                "(a plain statement of fact or plot)."
            ),
            input_name="Sentence",
        ),
        Task(
            name="question-type",
            labels=("abbreviation", "description", "entity", "human", "location", "number"),
            instruction=(
                "Classify what the question asks for: abbreviation, description (a definition, "
                "reason or manner), entity (a thing), human (a person or group), location, or "
                "number (a count, date, amount)."
            ),
            input_name="Question",
        ),
        Task(
            name="news-topic",
            labels=("world", "sports", "business", "science/technology"),
            instruction="Classify the topic of the news article as world, sports, business or technology.",
            verbalizers={"science/technology": "technology"},
            input_name="Article",
        ),
        Task(
            name="medical-topic",
            labels=(
                "neoplasms",
                "digestive system diseases",
                "nervous system diseases",
                "cardiovascular diseases",
                "general pathological conditions",
            ),
            instruction=(
                "Classify the medical abstract by the disease class it is about: neoplasms, "
                "digestive, nervous, cardiovascular, or general (general pathological conditions)."
            ),
            verbalizers={
                "digestive system diseases": "digestive",
                "nervous system diseases": "nervous",
                "cardiovascular diseases": "cardiovascular",
                "general pathological conditions": "general",
            },
            input_name="Abstract",
        ),
    ]
}

# The benchmark folders in ../shared/data and the preset each uses.
BENCHMARK_TASKS = {
    "mr": "sentiment",
    "sst2": "sentiment",
    "subj": "subjectivity",
    "trec": "question-type",
    "agnews": "news-topic",
    "medabs": "medical-topic",
}


def get_preset(name: str) -> Task | EntityTask:
    if name in ENTITY_PRESETS:
        return ENTITY_PRESETS[name]
    if name not in PRESETS:
        raise ConfigError(f"unknown task preset {name!r}; presets: {', '.join([*PRESETS, *ENTITY_PRESETS])}")
    return PRESETS[name]


def task_from_dict(data: dict) -> Task | EntityTask:
    """A mapping with `types` is an entity task; one with `labels` a classification task."""
    return EntityTask.from_dict(data) if "types" in data else Task.from_dict(data)


def label_indices(values, labels) -> np.ndarray:
    """Each value's index in `labels`; -1 for a missing label or one outside the set (an abstention)."""
    index = {label: i for i, label in enumerate(labels)}
    return np.array([index.get(v, -1) if isinstance(v, str) else -1 for v in values], dtype=np.int64)


def label_maps(classes) -> dict:
    """The config fields that make a pipeline answer with class names, not LABEL_0."""
    names = [str(c) for c in classes]
    return {"num_labels": len(names), "id2label": dict(enumerate(names)), "label2id": {c: i for i, c in enumerate(names)}}
