"""Prompt text, in one of three styles (`llm.prompt_style`):

- plain: a few-shot completion prompt ending in "Label:";
- chat: the model's chat template, the instruction as the system message, the demos listed in the
  user's message before the row;
- chat-turns: the chat template with each demo as an earlier user turn and the assistant's answer.

The instruction comes first and never varies, so every prompt of a run shares a prefix that vLLM's
prefix cache reuses. The answer is the label word in every style (after a space in plain prompts,
where BPE tokenises it that way)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from freeal_ray.errors import ConfigError
from freeal_ray.task import EntityTask, Task


def _header(task: Task) -> str:
    words = ", ".join(task.word(label) for label in task.labels)
    return f"{task.instruction}\nAnswer with one word: {words}.\n\n"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


PROMPT_STYLES = ("plain", "chat", "chat-turns")


def classification_prompt(task: Task, demos: Sequence[tuple[str, str]], text: str, style: str = "plain",
                          render: Callable[[list[dict]], str] | None = None) -> str:
    """The prompt for one row; demos come least similar first so the nearest sits closest.
    Chat styles need `render`, the model's chat template (`chat_renderer`)."""
    if style == "plain":
        return f"{_header(task)}{_shots(task, demos)}{task.input_name}: {_one_line(text)}\nLabel:"
    if render is None:
        raise ValueError(f"prompt style {style!r} needs the model's chat template")
    return render(classification_messages(task, demos, text, turns=style == "chat-turns"))


def _shots(task: Task, demos: Sequence[tuple[str, str]]) -> str:
    return "".join(f"{task.input_name}: {_one_line(t)}\nLabel: {task.word(label)}\n\n" for t, label in demos)


def classification_messages(task: Task, demos: Sequence[tuple[str, str]], text: str, turns: bool) -> list[dict]:
    """Chat messages for one row: the instruction as the system message, then the demos as earlier
    turns (`turns`) or listed in the user's message, then the row."""
    system = {"role": "system", "content": _header(task).strip()}
    row = f"{task.input_name}: {_one_line(text)}"
    if turns:
        history = []
        for t, label in demos:
            history += [{"role": "user", "content": f"{task.input_name}: {_one_line(t)}"},
                        {"role": "assistant", "content": task.word(label)}]
        return [system, *history, {"role": "user", "content": row}]
    content = f"Examples:\n\n{_shots(task, demos)}Now label this one.\n{row}" if demos else row
    return [system, {"role": "user", "content": content}]


def messages_json(messages: list[dict]) -> str:
    """Chat messages as the prompt a chat endpoint receives (openai_engine.as_messages reads it):
    the server applies the model's template."""
    import json

    return json.dumps(messages, ensure_ascii=False)


def chat_renderer(model_path: str) -> Callable[[list[dict]], str]:
    """The model's chat template as a function of messages, ending where the assistant answers."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"llm.prompt_style chat needs a model with a chat template; {model_path} has none (use plain)")
    return lambda messages: tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def answer_choices(task: Task, style: str = "plain") -> list[str]:
    """What the engine may answer: after 'Label:' a space and the word (as BPE tokenises it), in
    a chat the assistant's reply, the word alone."""
    lead = " " if style == "plain" else ""
    return [lead + task.word(label) for label in task.labels]


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
