"""NER: a row is a pre-split sentence (`tokens`), its label BIO `tags` (the LLM's entity list
aligned to the tokens).

- round 0's demos are sentences the LLM writes already annotated;
- the SLM is the token tagger; a sentence's loss is its mean token loss, and the GMM splits on it;
- demo candidates are clean sentences whose tags the tagger reproduces exactly, grouped by the
  entity type they name most ("none" for none), so every type keeps demos of its own;
- an answer that could not be read (tags None) is an abstention: the tagger's tags fill it;
- quality is entity-level exact-match precision, recall and F1 against `gold_tags`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from freeal_ray import tables
from freeal_ray import metrics as M
from freeal_ray.engine_actors import LLMSettings
from freeal_ray.errors import CorpusError, FreeALError
from freeal_ray.kinds.base import TaskKind
from freeal_ray import evokd_entities as EK
from freeal_ray.ner import dominant_type, is_valid_bio
from freeal_ray.synthesis import given_entity_demos, synthesize_entity_demos
from freeal_ray.ner import tag_indices
from freeal_ray.workers import EntityPromptBuilder, ask_for_entities

TAGGER_COLUMNS = ("pred_tags", "loss", "embedding", "p_clean", "clean")

# A per-token head from random weights learns little in the ~100 steps a few hundred sentences give
# at the encoder's rate (see slm.head_lr in the README).
TAGGER_HEAD_LR_SCALE = 20


class Entities(TaskKind):
    name = "entities"
    label_column = "tags"
    demo_columns = ("id", "text", "tokens", "tags", "label")
    objective = "tokens"
    sentences = True
    answers_have_confidence = False  # an entity answer carries no per-span confidence
    scratch_columns = TAGGER_COLUMNS
    predicate_columns = ("tags", "pred_tags", "prev_tags")
    candidate_columns = ("id", "tags", "pred_tags", "clean", "loss")

    def check_gold(self, corpus, column):
        known = set(self.task.tags)
        bad = tables.first_where(
            corpus, lambda r: r["gold_tags"] is not None and not (set(r["gold_tags"]) <= known and is_valid_bio(list(r["gold_tags"]))),
            ["id", "gold_tags"])
        if bad:
            raise CorpusError(
                f"gold column {column!r} of row {bad['id']!r} holds tags outside the task's BIO tag set or an I- tag "
                f"with no entity to continue: {list(bad['gold_tags'])}; tags: {', '.join(self.task.tags)}"
            )

    def llm_settings(self, settings):
        if settings.runner != "actors":  # NER answers are read by the engine actors' extract
            settings = LLMSettings(**{**settings.__dict__, "runner": "actors"})
        return settings

    def prompt_builder(self, settings):
        if settings.runner != "actors":
            raise FreeALError("NER annotation runs on llm.runner: actors for now; set it in the config")
        engine = settings.engine_config  # NER prompts are plain for now
        return EntityPromptBuilder, {"llm_path": engine.model_path, "max_model_len": engine.max_model_len}

    def llm_worker(self, settings):
        return ask_for_entities, {}

    def given_examples(self):
        return given_entity_demos(self.task)

    def synthesize(self, corpus, n_rows, llm, loop, llm_config):
        demos, counts = synthesize_entity_demos(corpus, n_rows, self.task, llm, loop.prototypes, loop.synth_per_class,
                                                max(192, 3 * llm_config.synth_max_tokens), loop.seed)
        if demos.empty:
            raise RuntimeError(
                f"demo synthesis produced no usable sentence: of {counts['written']} answers, {counts['unparsed']} "
                f"were not the JSON asked for and {counts['no_entity_placed']} named no entity found in their sentence"
            )
        return demos, counts

    def slm_classes(self):
        return tuple(self.task.tags)

    def training_rows(self, batch):
        """Sentences as the tagger trains on them: tokens and a tag index per token. A sentence
        whose answer could not be read has no tags (None) and so nothing to learn (all -1)."""
        tokens = [list(t) for t in batch["tokens"]]
        return pd.DataFrame({"tokens": tokens, "tag_idx": tag_indices(list(batch["tags"]), self.task.tags, [len(t) for t in tokens])})

    def train_settings(self, settings):
        return dataclasses.replace(settings, head_lr=settings.head_lr or TAGGER_HEAD_LR_SCALE * settings.lr)

    def labelled(self, row):
        return row["tags"] is not None

    def agrees(self, row):
        return row["tags"] is not None and list(row["pred_tags"]) == list(row["tags"])

    def demo_groups(self):
        return (*self.task.entity_types, "none")

    def demo_candidates(self, batch):
        keep = [bool(c) and t is not None and p is not None and list(p) == list(t)
                for c, t, p in zip(batch["clean"], batch["tags"], batch["pred_tags"])]
        batch = batch[np.asarray(keep, dtype=bool)].copy()
        batch["label"] = [dominant_type(list(t)) for t in batch["tags"]]
        return batch

    def carry(self, batch):
        """The tagger's tags as `slm_tags`, the tags the sentence had as `prev_tags`."""
        batch = batch.drop(columns=[c for c in ("slm_tags", "prev_tags") if c in batch])
        batch = batch.rename(columns={"pred_tags": "slm_tags"})
        batch["prev_tags"] = batch["tags"]
        return batch.drop(columns=[c for c in TAGGER_COLUMNS if c in batch])

    def changed(self, row):
        return _tag_list(row["tags"]) != _tag_list(row["prev_tags"])

    def student_labels(self, batch, round_):
        batch["tags"] = [list(t) for t in batch["pred_tags"]]
        batch["confidence"] = np.nan  # a tagger's sentence has no one probability
        return self.by_the_slm(batch, round_)

    def fill(self, batch):
        """Where the LLM's answer could not be read (no tags), the tagger's tags become the labels."""
        if "slm_tags" not in batch:
            return batch
        unread = np.array([t is None and s is not None for t, s in zip(batch["tags"], batch["slm_tags"])], dtype=bool)
        if unread.any():
            batch = batch.copy()
            batch["tags"] = [s if u else t for t, s, u in zip(batch["tags"], batch["slm_tags"], unread)]
            batch["source"] = np.where(unread, "slm", batch["source"])
        return batch

    def label_metrics(self, ds, prefix):
        q = M.entity_quality(ds, "tags")
        return {f"{prefix}_f1": q["f1"], f"{prefix}_precision": q["precision"], f"{prefix}_recall": q["recall"]}

    def score_metrics(self, scores, clean, n_clean):
        out = {"slm_f1": M.entity_quality(scores, "pred_tags")["f1"]}
        if n_clean:
            out["clean_precision"] = M.entity_quality(clean, "tags")["precision"]
        return out

    def final_metrics(self, final):
        q = M.entity_quality(final, "tags")
        return {"final_f1": q["f1"], "final_precision": q["precision"], "final_recall": q["recall"]}


    # ---- EvoKD (evokd_entities.py) -----------------------------------------------------------
    evolve_columns = ("text", "tokens", "tags")
    evolve_weak_lead = EK.WEAK_LEAD
    evolve_pool_columns = ("id", "text", "tokens", "tags", "pred_tags", "loss")
    evolve_rank = ("loss", False)  # an entity answer has no confidence: the tagger's lowest losses
    evolve_gold_columns = ("tokens", "gold_tags")

    def evolve_groups(self):
        return tuple(self.task.entity_types)

    def evolve_pool(self, pool):
        # plain lists: a frame from Ray Data holds Arrow list types that pandas cannot read back
        return pd.DataFrame({"id": pool["id"].astype(str).to_numpy(), "text": pool["text"].astype(str).to_numpy(),
                             "tokens": [list(t) for t in pool["tokens"]], "tags": [EK.tags_or_none(t) for t in pool["tags"]]})

    def evolve_probe(self, model, rows):
        rows = rows.copy()
        predicted = model.predict([list(t) for t in rows["tokens"]]) if len(rows) else []
        rows["pred"] = [p["tags"] for p in predicted]
        rows["pred_confidence"] = np.nan
        rows["right"] = [None if g is None else EK.entity_errors(g, p) == 0 for g, p in zip(rows["tags"], rows["pred"])]
        return rows

    def evolve_f1(self, labels, preds):
        return EK.type_f1([EK.tags_or_none(g) for g in labels], [EK.tags_or_none(p) or [] for p in preds], self.task.entity_types)

    def evolve_analysis(self, probe, f1, shown, seed):
        gold, pred = [EK.tags_or_none(t) for t in probe["tags"]], [EK.tags_or_none(t) or [] for t in probe["pred"]]
        wrong, right = EK.shown_sentences(gold, pred, shown, seed)
        tokens = [list(t) for t in probe["tokens"]]
        messages = EK.analysis_messages(self.task, [(tokens[i], gold[i], pred[i]) for i in wrong],
                                        [(tokens[i], gold[i]) for i in right], f1)
        pairs = EK.mistake_pairs([gold[i] for i in wrong], [pred[i] for i in wrong])
        rows = pd.concat([probe.iloc[wrong].assign(wrong=True), probe.iloc[right].assign(wrong=False)])
        return messages, rows, {"wrong_labels": [a for a, _ in pairs if a != EK.NONE],
                                "wrong_preds": [b for _, b in pairs if b != EK.NONE], "confusions": [list(p) for p in pairs]}

    def evolve_write(self, plan, analysis, style, llm, llm_config, desc, confusion=None):
        from freeal_ray.ner import align_spans, synthesis_schema, tokenize
        from freeal_ray.prompts import parse_synthetic_sentence
        from freeal_ray.writing import extract

        confusion = confusion or [None] * len(plan)
        prompts = [EK.writing_prompt(self.task, analysis, etype, hard, texts, pair)
                   for (etype, hard), texts, pair in zip(plan, style, confusion)]
        # Sampled, as classification's examples are: greedy, the prompts a round repeats (one per
        # type and kind, with few pool rows to show) gave the same sentence again (CoNLL03 1-shot
        # at 0.5B: 23 of 64 static examples dropped as repeats).
        answers = extract(prompts, llm, synthesis_schema(self.task.entity_types), max(192, 3 * llm_config.synth_max_tokens), desc,
                          temperature=llm_config.synth_temperature)
        rows = []
        for answer in answers:
            parsed = parse_synthetic_sentence(answer.text)
            tokens = tokenize(parsed[0])[0] if parsed else []
            tags = align_spans(tokens, parsed[1], self.task.entity_types)[0] if parsed else []
            rows.append({"text": " ".join(tokens), "tokens": tokens, "intended": tags})  # unread: empty, dropped
        return (pd.DataFrame(rows, columns=["text", "tokens", "intended"]), [a.prompt_tokens for a in answers],
                [a.output_tokens for a in answers])

    def evolve_label_rows(self, written):
        return pd.DataFrame({"id": written["id"].to_numpy(), "tokens": [[str(w) for w in t] for t in written["tokens"]]})

    def evolve_answers(self, labels, ids):
        return [EK.tags_or_none(labels.get(i)) for i in ids]

    def evolve_agrees(self, intended, answered, group):
        return EK.confirms(intended, answered, group or dominant_type(intended or []))

    def evolve_batch(self, kept):
        tags = [EK.tags_or_none(t) for t in kept["intended"]]
        return pd.DataFrame({"id": kept["id"].to_numpy(), "text": kept["text"].to_numpy(),
                             "tokens": [list(t) for t in kept["tokens"]], "tags": tags,
                             "label": [dominant_type(t) for t in tags]}, index=kept.index)

    def evolve_gold_scores(self, model, corpus):
        gold = [EK.tags_or_none(t) for t in corpus["gold_tags"]]
        pred = [p["tags"] for p in model.predict([list(t) for t in corpus["tokens"]])] if len(corpus) else []
        return {"slm_f1": EK.entity_f1(gold, pred), "class_f1": EK.type_f1(gold, pred, self.task.entity_types)}

def _tag_list(tags) -> list | None:
    return None if tags is None else list(tags)
