"""LLM annotation on Ray Data: retrieve demos, build prompts, ask the engine, save as we go.
Text classification and NER share the stage; they differ in the prompt and how answers are read.

rows -> PromptBuilder actors (encoder + FAISS over the demo pool) -> LLMWorker clients -> the run's
engine actors (one engine each, loaded once per run) -> Parquet parts, written at least every
`save_every_s`. A re-run skips ids that already have a part, so a kill mid-stage costs at most that
much LLM work and nothing saved is asked again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import random
import re
import time
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import ray
from tqdm.auto import tqdm

from freeal_ray.corpus import NO_RESTARTS, PartWriter, conform, count_rows, join_partitions, read_table
from freeal_ray.embedding import Encoder
from freeal_ray.engines import EngineConfig, build_engine
from freeal_ray.errors import FreeALError, short_reason
from freeal_ray.ner import align_spans, answer_schema, dominant_type, spans_of, synthesis_schema, tokenize
from freeal_ray.prompts import (
    answer_choices,
    chat_renderer,
    classification_prompt,
    clean_synthetic,
    entity_prompt,
    entity_synthesis_prompt,
    parse_entities,
    parse_synthetic_sentence,
    synthesis_prompt,
    synthesis_stops,
)
from freeal_ray.retrieval import FaissIndex, nearest_demos
from freeal_ray.task import EntityTask, Task

log = logging.getLogger(__name__)

DEMO_SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string()), ("label", pa.string()), ("origin", pa.string())])


@dataclass(frozen=True)
class LLMSettings:
    """What annotation needs to know about the engine and its actors."""

    engine: str
    engine_config: EngineConfig
    replicas: int
    batch_size: int
    max_text_chars: int
    runner: str = "actors"  # or "ray_data_llm": see ray_llm.py
    save_every_s: float = 30.0  # answers reach disk at least this often (corpus.PartWriter)
    prompt_style: str = "plain"  # prompts.PROMPT_STYLES; chat styles read the model's chat template


class PromptBuilder:
    """Ray Data actor: embeds rows, finds their nearest demos, writes the prompt."""

    def __init__(self, task: Task, demos: pd.DataFrame, encoder_path: str, shots: int, max_chars: int,
                 style: str = "plain", llm_path: str | None = None):
        self.task, self.shots, self.max_chars, self.style = task, shots, max_chars, style
        self.render = chat_renderer(llm_path) if style != "plain" else None
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

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        texts = [t[: self.max_chars] for t in batch["text"]]
        picks = self._picks(texts, batch["id"])
        batch = batch.copy()
        batch["prompt"] = [
            classification_prompt(self.task, [self.demos[i] for i in pick], text, self.style, self.render)
            for pick, text in zip(picks, texts)
        ]
        batch["demo_ids"] = [[self.demo_ids[i] for i in pick] for pick in picks]
        return batch


class EntityPromptBuilder(PromptBuilder):
    """NER rows (`tokens`): nearest demo sentences, shown as the entity JSON they should get."""

    def __init__(self, task: EntityTask, demos: pd.DataFrame, encoder_path: str, shots: int, max_chars: int):
        demos = demos.assign(text=[" ".join(t) for t in demos["tokens"]],
                             label=[spans_of(list(t), list(g)) for t, g in zip(demos["tokens"], demos["tags"])])
        super().__init__(task, demos, encoder_path, shots, max_chars)
        self.demos = [(list(t), spans) for t, spans in zip(demos["tokens"], demos["label"])]

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        batch = batch.copy()
        batch["text"] = [" ".join(t) for t in batch["tokens"]]
        texts = [t[: self.max_chars] for t in batch["text"]]
        picks = self._picks(texts, batch["id"])
        batch["prompt"] = [entity_prompt(self.task, [self.demos[i] for i in pick], list(tokens))
                           for pick, tokens in zip(picks, batch["tokens"])]
        batch["demo_ids"] = [[self.demo_ids[i] for i in pick] for pick in picks]
        return batch


class EntityWorker:
    """Ray Data actor: asks an engine for each sentence's entities and aligns them to BIO tags.
    Spans that are not in the sentence or have an unknown type are dropped and counted per row; an
    answer that is not the JSON asked for leaves the sentence with no tags (None, an abstention:
    the tagger does not learn from it, the refinery re-asks it, the tagger fills it at the end),
    never an error for the batch."""

    def __init__(self, task: EntityTask, engines: list, round_: int):
        self.task, self.round, self.engines = task, round_, engines
        self.turn = random.randrange(len(engines))
        self.schema = answer_schema(task.entity_types)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        self.turn = (self.turn + 1) % len(self.engines)
        longest = max(len(t) for t in batch["tokens"])
        answers = ray.get(self.engines[self.turn].extract.remote(batch["prompt"].tolist(), self.schema, answer_tokens(longest)))
        batch = batch.drop(columns=["prompt"])
        tags, placed, dropped, unparsed = [], [], [], []
        for tokens, answer in zip(batch["tokens"], answers):
            spans = parse_entities(answer.text)
            row_tags, stats = align_spans(list(tokens), spans or [], self.task.entity_types)
            tags.append(None if spans is None else row_tags)  # an unread answer is an abstention, as in classification
            placed.append(stats.placed)
            dropped.append(sum(stats.dropped.values()))
            unparsed.append(spans is None)
        batch["tags"], batch["spans_placed"], batch["spans_dropped"], batch["answer_unparsed"] = tags, placed, dropped, unparsed
        batch["source"] = "llm"
        batch["round"] = self.round
        batch["prompt_tokens"] = [a.prompt_tokens for a in answers]
        batch["output_tokens"] = [a.output_tokens for a in answers]
        return batch


def answer_tokens(n_tokens: int) -> int:
    """Room for a JSON entity list over a sentence of `n_tokens`: about one entity per two
    tokens at worst, each about a dozen tokens of JSON."""
    return min(1024, 32 + 6 * n_tokens)


class LLMWorker:
    """Ray Data actor: a thin client that sends each batch to one of the run's engine actors."""

    def __init__(self, task: Task, engines: list, round_: int, style: str = "plain"):
        self.task, self.round = task, round_
        self.engines = engines
        self.turn = random.randrange(len(engines))
        self.choices = answer_choices(task, style)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        self.turn = (self.turn + 1) % len(self.engines)
        answers = ray.get(self.engines[self.turn].choose.remote(batch["prompt"].tolist(), self.choices))
        batch = batch.drop(columns=["prompt"])
        batch["choice"] = [-1 if a.index is None else a.index for a in answers]
        batch["confidence"] = [a.confidence for a in answers]
        batch["prompt_tokens"] = [a.prompt_tokens for a in answers]
        batch["output_tokens"] = [a.output_tokens for a in answers]
        return label_answers(batch, self.task, self.round)


def label_answers(batch: pd.DataFrame, task: Task, round_: int) -> pd.DataFrame:
    """Answer indices (-1: abstained) to labels, with where and when each label came from."""
    batch = batch.copy()
    batch["label"] = [task.labels[i] if i >= 0 else None for i in batch.pop("choice").astype(int)]
    batch["source"] = "llm"
    batch["round"] = round_
    return batch


@ray.remote
class EngineActor:
    """Holds one engine for the whole run: loading it is the slow part, so every stage reuses it."""

    def __init__(self, kind: str, config: EngineConfig):
        self.engine = build_engine(kind, config)
        self.busy_s = 0.0  # time spent answering: against a stage's wall time, how well it kept the engine fed

    def _timed(self, call, *args):
        started = time.perf_counter()
        try:
            return call(*args)
        finally:
            self.busy_s += time.perf_counter() - started

    def choose(self, prompts, choices):
        return self._timed(self.engine.choose, prompts, choices)

    def generate(self, prompts, max_tokens, temperature, stop):
        return self._timed(self.engine.generate, prompts, max_tokens, temperature, stop)

    def extract(self, prompts, schema, max_tokens):
        return self._timed(self.engine.extract, prompts, schema, max_tokens)

    def busy_seconds(self) -> float:
        return self.busy_s

    def compute_threads(self) -> int | None:
        """The CPU engine's torch threads (None for engines that compute elsewhere)."""
        return getattr(self.engine, "threads", None)


_POOLS: dict[tuple, list] = {}


def engine_pool(settings: LLMSettings) -> list:
    """The run's engine actors, started on first use and reused by every later stage.

    The driver keeps their handles here: Ray ends an actor whose last handle goes away, and
    reloading a model costs minutes on a CPU.
    """
    key = hashlib.sha1(repr((settings.engine, settings.engine_config)).encode()).hexdigest()[:12]
    pool_id = (ray.get_runtime_context().get_job_id(), key, settings.replicas)
    if pool_id in _POOLS:
        return _POOLS[pool_id]
    resources = {"num_cpus": 1 if settings.engine == "vllm" else 0.25}  # other engines are clients or nothing
    if settings.engine_config.use_gpu:
        resources["num_gpus"] = settings.engine_config.tensor_parallel_size
    config = dataclasses.replace(settings.engine_config, cpu_share=settings.replicas)
    pool = [
        EngineActor.options(name=f"freeal-engine-{key}-{i}", get_if_exists=True, **resources).remote(
            settings.engine, config
        )
        for i in range(settings.replicas)
    ]
    _POOLS[pool_id] = pool
    return pool


# Ray Data's driver keeps a stats record for every block a stage has produced until the stage ends
# (ray-project/ray#66016; ~25 KB a block measured here), so driver memory grows with blocks, not rows.
MAX_BLOCKS_PER_STAGE = 200


def rows_per_block(total: int | None, batch_size: int) -> int:
    """Rows per annotation block: one engine batch, so the progress bar moves as each is answered,
    until a stage would pass MAX_BLOCKS_PER_STAGE blocks; then whole batches per block, so a
    million-row stage costs the driver what a hundred-thousand-row one does."""
    if not total or MAX_BLOCKS_PER_STAGE <= 0:
        return batch_size
    return batch_size * max(1, -(-total // (batch_size * MAX_BLOCKS_PER_STAGE)))


def annotate(
    rows: ray.data.Dataset,
    demos: pd.DataFrame,
    task: Task | EntityTask,
    settings: LLMSettings,
    encoder_path: str,
    shots: int,
    round_: int,
    out_dir: str,
    total: int | None = None,
) -> None:
    """Label `rows` with the LLM into Parquet parts under `out_dir`, skipping ids done before.

    Classification rows get `label` and `confidence`; NER rows (an `EntityTask`, rows with
    `tokens`, demos with `tokens` and `tags`) get BIO `tags` and per-row span counts."""
    done = read_table(out_dir, columns=["id"])
    if done is not None:
        # A distributed anti-join: a resumed million-row stage never gathers its ids on the driver.
        n_done = count_rows(out_dir)
        rows = rows.join(done, "left_anti", num_partitions=join_partitions(n_done), on=("id",))
        total = None if total is None else max(0, total - n_done)
    rows = rows.repartition(target_num_rows_per_block=rows_per_block(total, settings.batch_size))
    entities = isinstance(task, EntityTask)
    if entities and settings.runner != "actors":
        raise FreeALError("NER annotation runs on llm.runner: actors for now; set it in the config")
    builder_kwargs = dict(task=task, demos=demos, encoder_path=encoder_path, shots=shots, max_chars=settings.max_text_chars)
    if not entities:  # NER prompts are plain for now
        builder_kwargs.update(style=settings.prompt_style, llm_path=settings.engine_config.model_path)
    prompts = rows.map_batches(
        EntityPromptBuilder if entities else PromptBuilder,
        fn_constructor_kwargs=builder_kwargs,
        batch_format="pandas",
        batch_size=settings.batch_size,
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=0.5,
        **NO_RESTARTS,
    )
    if settings.runner == "ray_data_llm":
        from freeal_ray.ray_llm import choose_labels

        labelled = choose_labels(prompts, settings, answer_choices(task, settings.prompt_style)).map_batches(
            label_answers, fn_kwargs=dict(task=task, round_=round_), batch_format="pandas", num_cpus=0.1
        )
    else:
        labelled = prompts.map_batches(
            EntityWorker if entities else LLMWorker,
            fn_constructor_kwargs=dict(task=task, engines=engine_pool(settings), round_=round_,
                                       **({} if entities else {"style": settings.prompt_style})),
            batch_format="pandas",
            batch_size=settings.batch_size,
            compute=ray.data.ActorPoolStrategy(size=settings.replicas),
            num_cpus=0.1,
            **NO_RESTARTS,
        )
    crash_after = int(os.environ.get("FREEAL_RAY_CRASH_AFTER_PARTS", "0"))  # test hook: a kill mid-stage
    parts = PartWriter(out_dir, settings.save_every_s)
    with tqdm(total=total, desc=f"LLM annotation, round {round_}", unit="row") as bar:
        try:
            for batch in labelled.iter_batches(batch_format="pandas", batch_size=None):
                if parts.add(conform(batch)) and crash_after and parts.parts >= crash_after:
                    os._exit(17)
                bar.update(len(batch))
            parts.flush()
        except FreeALError:
            parts.flush()  # answers already paid for reach disk before the error does
            raise
        except Exception as exc:
            parts.flush()
            raise FreeALError(
                f"LLM annotation failed in round {round_}: {short_reason(exc)}. The {count_rows(out_dir)} rows "
                f"finished so far are saved in {out_dir}; re-run the same command to resume."
            ) from exc


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
            shown = rng.sample(pool, min(5, len(pool)))
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
    given = pd.DataFrame(
        [{"id": f"given-{i}", "text": t, "label": lab, "origin": "given"} for i, (t, lab) in enumerate(task.examples)],
        columns=DEMO_SCHEMA.names,
    )
    return pd.concat([given, demos], ignore_index=True), counts


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
    placed are dropped and counted. Returns the demos (id, text, tokens, tags, label, origin)
    and the counts."""
    pool = _prototypes(corpus, n_rows, prototypes, seed, settings.max_text_chars)
    rng = random.Random(seed)
    prompts = [entity_synthesis_prompt(task, etype, rng.sample(pool, min(5, len(pool))))
               for etype in task.entity_types for _ in range(per_type)]
    engines = engine_pool(settings)
    schema, step = synthesis_schema(task.entity_types), settings.batch_size
    calls = [engines[(i // step) % len(engines)].extract.remote(prompts[i : i + step], schema, max_tokens)
             for i in range(0, len(prompts), step)]
    rows, counts = [], {"written": len(prompts), "unparsed": 0, "no_entity_placed": 0, "spans_dropped": 0}
    with tqdm(total=len(prompts), desc="LLM demo synthesis", unit="demo") as bar:
        for call in calls:
            answers = ray.get(call)
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
            bar.update(len(answers))
    demos = pd.DataFrame(rows, columns=["text", "tokens", "tags"]).drop_duplicates("text")
    demos.insert(0, "id", [f"synthetic-{i}" for i in range(len(demos))])
    demos["label"] = [dominant_type(t) for t in demos["tags"]]
    demos["origin"] = "synthetic"
    return demos.reset_index(drop=True), counts


def _prototypes(corpus: ray.data.Dataset, n_rows: int, prototypes: int, seed: int, max_chars: int) -> list[str]:
    """A few unlabeled corpus texts, shown to the LLM as the style to write in."""
    fraction = min(1.0, 3.0 * prototypes / max(n_rows, 1))
    sample = corpus.select_columns(["text"]).random_sample(fraction, seed=seed).take(prototypes)
    return [r["text"][:max_chars] for r in sample] or [""]


def _generate_on_actors(prompts: list[str], settings: LLMSettings, max_tokens: int, temperature: float, stop) -> list[str]:
    engines = engine_pool(settings)
    step = settings.batch_size
    calls = [
        engines[(i // step) % len(engines)].generate.remote(prompts[i : i + step], max_tokens, temperature, stop)
        for i in range(0, len(prompts), step)
    ]
    texts = []
    with tqdm(total=len(prompts), desc="LLM demo synthesis", unit="demo") as bar:
        for call in calls:  # in submission order, which is the order each engine works in
            chunk = ray.get(call)
            texts += [clean_synthetic(t) for t in chunk]
            bar.update(len(chunk))
    return texts
