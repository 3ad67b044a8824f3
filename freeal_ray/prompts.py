"""Prompt text. Plain few-shot prompts, because small instruct models score higher on them than
on chat-wrapped ones. The instruction comes first and never varies, so every prompt of a run
shares a prefix that vLLM's prefix cache reuses."""

from __future__ import annotations

from collections.abc import Sequence

from freeal_ray.task import EntityTask, Task


def _header(task: Task) -> str:
    words = ", ".join(task.word(label) for label in task.labels)
    return f"{task.instruction}\nAnswer with one word: {words}.\n\n"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def classification_prompt(task: Task, demos: Sequence[tuple[str, str]], text: str) -> str:
    """A prompt ending in 'Label:'; demos come least similar first so the nearest sits closest."""
    shots = "".join(
        f"{task.input_name}: {_one_line(t)}\nLabel: {task.word(label)}\n\n" for t, label in demos
    )
    return f"{_header(task)}{shots}{task.input_name}: {_one_line(text)}\nLabel:"


def answer_choices(task: Task) -> list[str]:
    """What the engine may answer after 'Label:' (the leading space matches how BPE tokenises)."""
    return [" " + task.word(label) for label in task.labels]


def synthesis_prompt(task: Task, label: str, prototypes: Sequence[str]) -> str:
    """Ask for one new example of `label`, written in the style of unlabeled corpus rows."""
    style = "".join(f"{task.input_name}: {_one_line(t)}\n" for t in prototypes)
    return (
        f"{task.instruction}\n"
        f"Here are some unlabeled examples of the kind of text to classify:\n\n{style}\n"
        f"Write one new, different {task.input_name.lower()} in the same style whose label is "
        f"{task.word(label)}. Write only the text, on one line.\n"
        f"{task.input_name}:"
    )


def synthesis_stops(task: Task) -> list[str]:
    """Where a written example ends: small models run on into a next example or the instructions."""
    return ["\n", f"{task.input_name}:", "Label:", "Human:", "Write one", "Write a"]


def clean_synthetic(text: str) -> str:
    """One line of text; a trailing fragment cut off by the token limit is dropped."""
    text = _one_line(text)
    last = max(text.rfind(c) for c in ".!?")
    if not text.endswith((".", "!", "?")) and last >= 10:  # keep whole sentences only
        text = text[: last + 1]
    return text


def _entities_json(spans: Sequence[tuple[str, str]]) -> str:
    import json

    return json.dumps({"entities": [{"text": text, "type": etype} for text, etype in spans]}, ensure_ascii=False)


def entity_prompt(task: EntityTask, demos: Sequence[tuple[Sequence[str], Sequence[tuple[str, str]]]], tokens: Sequence[str]) -> str:
    """A prompt ending in 'Entities:', answered with the JSON the answer schema allows; demos are
    (tokens, spans) pairs, least similar first."""
    kinds = "".join(f"- {t}: {about}\n" for t, about in task.types.items())
    header = (f"{task.instruction}\nEntity types:\n{kinds}"
              'Answer in JSON as {"entities": [{"text": ..., "type": ...}]}, copying each entity\'s words from the sentence.\n\n')
    shots = "".join(
        f"{task.input_name}: {' '.join(t)}\nEntities: {_entities_json(spans)}\n\n" for t, spans in demos
    )
    return f"{header}{shots}{task.input_name}: {' '.join(tokens)}\nEntities:"


def parse_entities(answer: str) -> list[tuple[str, str]] | None:
    """(span text, type) pairs from the LLM's JSON answer, or None when it is not that JSON
    (a truncated or unconstrained answer): the caller counts it, the batch goes on."""
    import json

    try:
        data = json.loads(answer)
        return [(str(e["text"]), str(e["type"])) for e in data["entities"]]
    except (ValueError, TypeError, KeyError):
        return None


def entity_synthesis_prompt(task: EntityTask, etype: str, prototypes: Sequence[str]) -> str:
    """Ask for one new sentence in the corpus's style that names an entity of `etype`, with its
    entities listed: round 0's demos for NER are written already annotated."""
    kinds = "".join(f"- {t}: {about}\n" for t, about in task.types.items())
    style = "".join(f"{task.input_name}: {_one_line(t)}\n" for t in prototypes)
    return (
        f"{task.instruction}\nEntity types:\n{kinds}"
        f"Here are some unlabeled examples of the kind of {task.input_name.lower()} to annotate:\n\n{style}\n"
        f"Write one new, different {task.input_name.lower()} in the same style that names at least one "
        f"{etype} ({task.types[etype]}), and list all its entities. Answer in JSON as "
        '{"sentence": ..., "entities": [{"text": ..., "type": ...}]}.\nAnswer:'
    )


def parse_synthetic_sentence(answer: str) -> tuple[str, list[tuple[str, str]]] | None:
    """(sentence, entities) from a synthesis answer, or None when it is not that JSON."""
    import json

    try:
        data = json.loads(answer)
        return str(data["sentence"]), [(str(e["text"]), str(e["type"])) for e in data["entities"]]
    except (ValueError, TypeError, KeyError):
        return None
