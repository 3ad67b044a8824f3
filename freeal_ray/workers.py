"""The annotation stage's Ray Data callables: prompt builders (demos by kNN, then the prompt) and
LLM clients (ask the engine actors, read the answers), one pair per task kind."""

from __future__ import annotations

import logging
import random

import pandas as pd
import pyarrow as pa
import ray

from freeal_ray.embedding import Encoder
from freeal_ray.ner import align_spans, answer_schema, spans_of
from freeal_ray.prompt_fit import answer_room, fit_prompt, token_counter
from freeal_ray.prompts import (answer_choices, chat_renderer, classification_prompt, entity_prompt, messages_json,
                                parse_entities)
from freeal_ray.retrieval import FaissIndex, nearest_demos
from freeal_ray.task import EntityTask, Task

log = logging.getLogger(__name__)


DEMO_SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string()), ("label", pa.string()), ("origin", pa.string())])


class PromptBuilder:
    """Ray Data actor: embeds rows, finds their nearest demos, writes the prompt, trimmed to fit
    the model's context (prompt_fit.py)."""

    def __init__(self, task: Task, demos: pd.DataFrame, encoder_path: str, shots: int, max_chars: int,
                 style: str = "plain", llm_path: str | None = None, max_model_len: int | None = None,
                 messages: bool = False):
        self.task, self.shots, self.max_chars, self.style = task, shots, max_chars, style
        # a chat endpoint (`messages`) takes the messages and applies the template itself
        self.render = None if style == "plain" else messages_json if messages else chat_renderer(llm_path)
        self.count = token_counter(llm_path) if llm_path and max_model_len else None
        self.max_model_len = max_model_len
        self.demo_ids = [str(i) for i in demos["id"]]
        self.demos = list(zip(demos["text"], demos["label"]))
        zero_shot = shots == 0 or not self.demos
        self.encoder = None if zero_shot else Encoder(encoder_path)
        self.index = None if zero_shot else FaissIndex(self.encoder.embed(demos["text"].tolist()))

    def _picks(self, texts: list[str], ids) -> list[list[int]]:
        """The nearest demos per row, never the row itself: demo pools of corpus rows (the SLM's
        picks, round 0's confident answers) hold rows that are being labelled, and a row shown its
        own label would only copy it."""
        if self.index is None:
            return [[] for _ in texts]
        picks = nearest_demos(self.index, self.encoder.embed(texts), self.shots + 1)
        return [[i for i in pick if self.demo_ids[i] != str(row)][-self.shots:] for pick, row in zip(picks, ids)]

    def _budget(self, row_input) -> int:
        """Prompt tokens the row may take: the context less the answer's room."""
        return self.max_model_len - answer_room(answer_choices(self.task, self.style))

    def _build(self, demos, text) -> str:
        return classification_prompt(self.task, demos, text, self.style, self.render)

    def _prompts(self, batch: pd.DataFrame, inputs: list, picks: list[list[int]]) -> pd.DataFrame:
        """Adds `prompt`, the `demo_ids` it shows and `prompt_trimmed` (demos dropped or text cut)."""
        prompts, shown, trimmed = [], [], []
        for row_input, pick in zip(inputs, picks):
            demos = [self.demos[i] for i in pick]
            if self.count is None:
                prompt, dropped, cut = self._build(demos, row_input), 0, False
            else:
                prompt, dropped, cut = fit_prompt(self._build, demos, row_input, self.count, self._budget(row_input))
            prompts.append(prompt)
            shown.append([self.demo_ids[i] for i in pick[dropped:]])
            trimmed.append(bool(dropped or cut))
        batch["prompt"], batch["demo_ids"], batch["prompt_trimmed"] = prompts, shown, trimmed
        return batch

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        texts = [t[: self.max_chars] for t in batch["text"]]
        return self._prompts(batch.copy(), texts, self._picks(texts, batch["id"]))


class EntityPromptBuilder(PromptBuilder):
    """NER rows (`tokens`): nearest demo sentences, shown as the entity JSON they should get."""

    def __init__(self, task: EntityTask, demos: pd.DataFrame, encoder_path: str, shots: int, max_chars: int,
                 llm_path: str | None = None, max_model_len: int | None = None):
        demos = demos.assign(text=[" ".join(t) for t in demos["tokens"]],
                             label=[spans_of(list(t), list(g)) for t, g in zip(demos["tokens"], demos["tags"])])
        super().__init__(task, demos, encoder_path, shots, max_chars, llm_path=llm_path, max_model_len=max_model_len)
        self.demos = [(list(t), spans) for t, spans in zip(demos["tokens"], demos["label"])]

    def _budget(self, tokens) -> int:
        return self.max_model_len - answer_tokens(len(tokens))

    def _build(self, demos, tokens) -> str:
        return entity_prompt(self.task, demos, list(tokens))

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        batch = batch.copy()
        batch["text"] = [" ".join(t) for t in batch["tokens"]]
        texts = [t[: self.max_chars] for t in batch["text"]]
        return self._prompts(batch, [list(t) for t in batch["tokens"]], self._picks(texts, batch["id"]))


def ask_for_entities(batch: pd.DataFrame, task: EntityTask, engines: list, round_: int) -> pd.DataFrame:
    """Ray Data task: asks an engine for each sentence's entities and aligns them to BIO tags.
    Spans that are not in the sentence or have an unknown type are dropped and counted per row; an
    answer that is not the JSON asked for leaves the sentence with no tags (None, an abstention:
    the tagger does not learn from it, the refinery re-asks it, the tagger fills it at the end),
    never an error for the batch."""
    longest = max(len(t) for t in batch["tokens"])
    engine = random.choice(engines)
    answers = ray.get(engine.extract.remote(batch["prompt"].tolist(), answer_schema(task.entity_types), answer_tokens(longest)))
    batch = batch.drop(columns=["prompt"])
    tags, placed, dropped, unparsed = [], [], [], []
    for tokens, answer in zip(batch["tokens"], answers):
        spans = parse_entities(answer.text)
        row_tags, stats = align_spans(list(tokens), spans or [], task.entity_types)
        tags.append(None if spans is None else row_tags)  # an unread answer is an abstention, as in classification
        placed.append(stats.placed)
        dropped.append(sum(stats.dropped.values()))
        unparsed.append(spans is None)
    batch["tags"], batch["spans_placed"], batch["spans_dropped"], batch["answer_unparsed"] = tags, placed, dropped, unparsed
    batch["source"] = "llm"
    batch["round"] = round_
    batch["prompt_tokens"] = [a.prompt_tokens for a in answers]
    batch["output_tokens"] = [a.output_tokens for a in answers]
    return batch


def answer_tokens(n_tokens: int) -> int:
    """Room for a JSON entity list over a sentence of `n_tokens`: about one entity per two
    tokens at worst, each about a dozen tokens of JSON."""
    return min(1024, 32 + 6 * n_tokens)


def ask_for_labels(batch: pd.DataFrame, task: Task, engines: list, round_: int, style: str = "plain") -> pd.DataFrame:
    """Ray Data task: a thin client that sends the batch to one of the run's engine actors. A task,
    not an actor: Ray reuses its worker processes from stage to stage, where an actor pool would
    start fresh ones each time."""
    answers = ray.get(random.choice(engines).choose.remote(batch["prompt"].tolist(), answer_choices(task, style)))
    batch = batch.drop(columns=["prompt"])
    batch["choice"] = [-1 if a.index is None else a.index for a in answers]
    batch["confidence"] = [a.confidence for a in answers]
    batch["prompt_tokens"] = [a.prompt_tokens for a in answers]
    batch["output_tokens"] = [a.output_tokens for a in answers]
    return label_answers(batch, task, round_)


def label_answers(batch: pd.DataFrame, task: Task, round_: int) -> pd.DataFrame:
    """Answer indices (-1: abstained) to labels, with where and when each label came from."""
    batch = batch.copy()
    batch["label"] = [task.labels[i] if i >= 0 else None for i in batch.pop("choice").astype(int)]
    batch["source"] = "llm"
    batch["round"] = round_
    return batch
