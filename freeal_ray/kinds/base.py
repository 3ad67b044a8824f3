"""The one interface behind which task kinds differ. The stages call only these methods, so no
stage branches on the kind: a new kind is one new adapter, not edits across the loop."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import ray

from freeal_ray.engine_actors import LLMSettings
from freeal_ray.training import TrainSettings


class TaskKind(ABC):
    """What a task kind decides: how rows look, how the LLM's answers become labels, how the SLM
    trains on and scores them, which rows may be demos, and how quality is measured."""

    name: str
    label_column: str  # the column holding a row's label (a class, or BIO tags)
    demo_columns: tuple[str, ...]  # what a demo carries into a prompt
    objective: str  # what the SLM learns: a class per row ("sentences") or a tag per token ("tokens")
    sentences: bool  # rows are pre-split sentences (`tokens`), not free text
    answers_have_confidence: bool  # an answer carries its probability (round-0 demos can be the surest answers)
    scratch_columns: tuple[str, ...]  # the scorer's columns, dropped when a row moves on
    predicate_columns: tuple[str, ...]  # what labelled, agrees and changed read of a row

    def __init__(self, task):
        self.task = task

    # ---- ingest ------------------------------------------------------------------------------
    @abstractmethod
    def check_gold(self, corpus: Path, column: str) -> None:
        """Raise CorpusError if gold labels in the corpus table at `corpus` fall outside the task's label set."""

    def long_texts(self, corpus: Path, cap: int) -> int:
        """How many rows the LLM will see cut at `cap` characters (none where rows are sentences)."""
        return 0

    # ---- the LLM -----------------------------------------------------------------------------
    def llm_settings(self, settings: LLMSettings) -> LLMSettings:
        return settings

    @abstractmethod
    def prompt_builder(self, settings: LLMSettings) -> tuple[type, dict]:
        """The callable class that retrieves each row's demos and writes its prompt (built once on
        the run's model host), and its arguments beyond the task, demos, encoder, shots and text cap."""

    @abstractmethod
    def llm_worker(self, settings: LLMSettings) -> tuple[Callable, dict]:
        """The Ray Data batch function that asks the engine actors and reads their answers into
        labels, and its arguments beyond the task, engines and round (the engine-actor runner)."""

    @abstractmethod
    def given_examples(self) -> pd.DataFrame:
        """The task's hand-written examples as demos: id, `evolve_columns`, label, origin 'given'."""

    @abstractmethod
    def synthesize(self, corpus: ray.data.Dataset, n_rows: int, llm: LLMSettings, loop, llm_config) -> tuple[pd.DataFrame, dict]:
        """Round 0's demos written by the LLM, and counts of what it wrote and what was dropped;
        raises when none is usable."""

    # ---- the SLM -----------------------------------------------------------------------------
    @abstractmethod
    def slm_classes(self) -> tuple[str, ...]:
        """What the SLM's head predicts: the labels, or the BIO tags per token."""

    @abstractmethod
    def training_rows(self, batch: pd.DataFrame) -> pd.DataFrame:
        """Labelled rows as the SLM trains on them (an unlabelled row has target -1)."""

    def train_settings(self, settings: TrainSettings) -> TrainSettings:
        return settings

    @abstractmethod
    def labelled(self, row) -> bool:
        """The row has a label (the LLM did not abstain)."""

    @abstractmethod
    def agrees(self, row) -> bool:
        """The SLM's prediction equals the row's label."""

    # ---- demos -------------------------------------------------------------------------------
    @abstractmethod
    def demo_groups(self) -> tuple[str, ...]:
        """The groups demo selection keeps a few demos of each of."""

    #: the score columns demo_candidates reads
    candidate_columns: tuple[str, ...] = ()

    @abstractmethod
    def demo_candidates(self, batch: pd.DataFrame) -> pd.DataFrame:
        """The rows of a batch of scores (`candidate_columns`) fit to be demos, with `label` as their group."""

    # ---- the refinery ------------------------------------------------------------------------
    @abstractmethod
    def carry(self, batch: pd.DataFrame) -> pd.DataFrame:
        """A scored row as the refinery keeps or re-asks it: its label so far as prev_*, the SLM's
        prediction as slm_*, without the scorer's scratch columns."""

    def accept(self, batch: pd.DataFrame, rule: str) -> pd.DataFrame:
        """Re-asked rows' labels from their new answers under `loop.refine_accept`."""
        return batch

    @abstractmethod
    def changed(self, row) -> bool:
        """The refinery gave the row another label than it had."""

    @abstractmethod
    def student_labels(self, batch: pd.DataFrame, round_: int) -> pd.DataFrame:
        """Scored rows no LLM labelled, with the SLM's answer as their label (source 'slm') and
        the scorer's columns dropped (by_the_slm)."""

    def by_the_slm(self, batch: pd.DataFrame, round_: int) -> pd.DataFrame:
        batch["source"] = "slm"
        batch["round"] = round_
        return batch.drop(columns=[c for c in self.scratch_columns if c in batch])

    @abstractmethod
    def fill(self, batch: pd.DataFrame) -> pd.DataFrame:
        """Final labels: where the LLM gave none, the SLM's (source 'slm')."""

    # ---- quality against gold ----------------------------------------------------------------
    @abstractmethod
    def label_metrics(self, ds, prefix: str) -> dict:
        """`ds`'s labels against gold, keys prefixed (llm_acc, llm_f1, ...). Here and below, a table is
        a Ray Dataset or a tables.LocalTable: metrics.py counts either."""

    @abstractmethod
    def score_metrics(self, scores, clean, n_clean: int) -> dict:
        """The SLM's predictions and the clean split against gold."""

    @abstractmethod
    def final_metrics(self, final) -> dict:
        """Final labels against gold."""

    # ---- EvoKD -------------------------------------------------------------------------------
    #: a pool, probe or batch row beyond its id: the text, and the label as this kind has it
    evolve_columns: tuple[str, ...] = ()
    #: after FreeAL, the scored columns the pool is drawn from, and the one ranking the surest first
    evolve_pool_columns: tuple[str, ...] = ()
    evolve_rank: tuple[str, bool] = ("loss", False)
    #: the corpus columns the student is scored on against gold
    evolve_gold_columns: tuple[str, ...] = ()

    @abstractmethod
    def evolve_groups(self) -> tuple[str, ...]:
        """What EvoKD aims its examples at: the classes, or the entity types a sentence names."""

    @abstractmethod
    def evolve_pool(self, pool: pd.DataFrame) -> pd.DataFrame:
        """After FreeAL: the scored rows the first student is tested on, as `id` and `evolve_columns`."""

    @abstractmethod
    def evolve_probe(self, model, rows: pd.DataFrame) -> pd.DataFrame:
        """`rows` with the student's answer (`pred`), its confidence (`pred_confidence`, NaN where the
        head gives none) and `right` (None where a row has no reference label)."""

    @abstractmethod
    def evolve_f1(self, labels, preds) -> dict[str, float]:
        """The student's F1 per group against reference labels (rows with none left out)."""

    @abstractmethod
    def evolve_analysis(self, probe: pd.DataFrame, f1: dict[str, float], shown: int, seed: int) -> tuple[list[dict], pd.DataFrame, dict]:
        """The messages asking the LLM what the student is weak at, from up to `shown` wrong and as many
        right answers of the probe and its F1 per group (evolve_f1); the rows shown (with `wrong`); and the mistakes' groups for the
        writing plan (wrong_labels: the reference's, wrong_preds: the student's) and `confusions`: [reference, answer]
        per mistake (classes; for NER, entity types, "O" on a side with no entity there)."""

    evolve_weak_lead = ""  # the line that leads the analysis in a hard prompt: a text echoing it is dropped

    @abstractmethod
    def evolve_write(self, plan: list[tuple[str, bool]], analysis: str, style: list[list[str]], llm, llm_config, desc: str,
                     confusion: list[tuple[str, str] | None] | None = None):
        """The LLM writes one example per (group, hard) of `plan`, each prompt showing its `style` texts
        (and, per hard example, `confusion`: a mistake of the student's involving its group, as (reference, answer),
        drawn from the analysis's `confusions`; None where none involves it).
        Returns a frame (text, intended: the label it was written for, and what the labelling call
        needs) and the prompt and output tokens per call."""

    @abstractmethod
    def evolve_label_rows(self, written: pd.DataFrame) -> pd.DataFrame:
        """The written examples as the labelling call's annotation reads them (id and text or tokens)."""

    @abstractmethod
    def evolve_answers(self, labels: pd.Series, ids) -> list:
        """The label `labels` (indexed by id) gives each id, in a form two labels compare in (None:
        abstained): the labelling call's answers and the labels the examples were written for."""

    def evolve_agrees(self, intended, answered, group: str | None) -> bool:
        """Whether the labelling call's answer (evolve_answers) confirms an example written for
        `group`: here, the label it was written for."""
        return answered is not None and answered == intended

    @abstractmethod
    def evolve_batch(self, kept: pd.DataFrame) -> pd.DataFrame:
        """Kept written examples as training rows: `id`, `evolve_columns`, and `label` for the report."""

    @abstractmethod
    def evolve_gold_scores(self, model, corpus: pd.DataFrame) -> dict:
        """The student against the corpus's gold labels: its headline score and `class_f1` per group."""
