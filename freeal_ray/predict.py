"""`freeal-ray predict`: a trained SLM labels any corpus the loop reads, streamed through Ray Data.

Rows are read record by record as the loop's ingest reads them (a malformed line or a row with no
usable text goes to `quarantine/` with its reason), scored by SLM actors, and written to
`predictions/` as Parquet parts at least every `save_every_s`; a re-run skips the ids already
written, so a killed job resumes. The driver holds one batch at a time, never the corpus.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
from tqdm.auto import tqdm

from freeal_ray import corpus, tables
from freeal_ray.config_sections import CorpusConfig
from freeal_ray.model import TrainedSLM, slm_folder
from freeal_ray.ray_cluster import want_gpu

ENTITY = pa.struct([("type", pa.string()), ("text", pa.string()), ("start", pa.int64()), ("end", pa.int64()),
                    ("token_start", pa.int64()), ("token_end", pa.int64())])


def predict_corpus(model: str | Path, input_path: str, output: str | Path, text_column: str = "text",
                   id_column: str | None = "id", batch_size: int = 64, save_every_s: float = 30.0,
                   use_gpu: str = "auto") -> dict:
    """Label every row of `input_path` with the SLM at `model` (a run folder or its slm/) into
    `output`/predictions; returns the counts."""
    folder, out = slm_folder(model), Path(output).expanduser()
    cfg = CorpusConfig(path=str(input_path), text_column=text_column, id_column=id_column)
    raw, bad_lines = corpus.read_raw(cfg)
    corpus.check_columns(cfg, raw)
    rows = raw.map_batches(_rows_to_predict, fn_kwargs={"text_column": text_column, "id_column": id_column},
                           batch_format="pandas")
    rows = tables.without_ids(rows, out / "predictions")
    gpu = want_gpu(use_gpu)
    from freeal_ray.checkpoint import scorer_compute

    # Ray batches of many forward passes, so that each pass groups rows of similar length
    scored = rows.map_batches(SLMPredictor, fn_constructor_kwargs={"folder": str(folder), "device": "cuda" if gpu else "cpu",
                                                                   "batch_size": batch_size},
                              batch_format="pandas", batch_size=16 * batch_size, **scorer_compute(gpu), **tables.NO_RESTARTS)
    predictions, quarantine = tables.PartWriter(out / "predictions", save_every_s), tables.PartWriter(out / "quarantine", save_every_s)
    counts = {"predicted": 0, "quarantined": 0}
    with tqdm(desc="SLM predictions", unit="row") as bar:
        for batch in scored.iter_batches(batch_format="pandas", batch_size=None):
            bad = batch["error"].notna()
            if bad.any():
                quarantine.add(pa.Table.from_pandas(pd.DataFrame({"id": batch["id"][bad], "reason": batch["error"][bad]}),
                                                    preserve_index=False))
            good = batch[~bad].drop(columns=["error"])
            if len(good):
                predictions.add(_as_table(good))
            counts["predicted"] += int((~bad).sum())
            counts["quarantined"] += int(bad.sum())
            bar.update(len(batch))
    predictions.flush()
    quarantine.flush()
    if bad_lines is not None:
        for part in bad_lines.iter_batches(batch_format="pyarrow", batch_size=None):
            if part.num_rows:
                tables.write_part(part, out / "quarantine")
                counts["quarantined"] += part.num_rows
    (out / "predict.json").write_text(json.dumps({"model": str(folder), "input": str(input_path), **counts}, indent=2))
    return counts


def _rows_to_predict(batch: pd.DataFrame, text_column: str, id_column: str | None) -> pd.DataFrame:
    """id and value per row (a value is text, or a token list for a tagger), and why a row cannot
    be predicted, if it cannot; ids derived from the text where the corpus has none."""
    values = list(batch[text_column])
    if id_column:
        ids = [None if corpus.is_missing(v) else str(v) for v in batch[id_column]]
    else:
        ids = [hashlib.sha1(str(v).encode()).hexdigest()[:16] for v in values]
    out = pd.DataFrame({"id": ids})
    out["value"] = [v if isinstance(v, str) else None for v in values]
    out["tokens_in"] = [json.dumps([str(w) for w in v]) if corpus.is_list(v) else None for v in values]
    out["error"] = [_problem(i, v, text_column) for i, v in zip(ids, values)]
    return out


def _problem(row_id, value, column: str) -> str | None:
    if row_id is None:
        return "missing id"
    if corpus.is_list(value):
        return None if len(value) else f"{column} is an empty token list"
    if not isinstance(value, str):
        return f"{column} is {type(value).__name__}, not text"
    return None if value.strip() else "empty text"


class SLMPredictor:
    """Ray Data actor: the SLM's labels (or tags and entity spans) for a batch of rows."""

    def __init__(self, folder: str, device: str = "cpu", batch_size: int = 64):
        from freeal_ray.checkpoint import actor_threads

        actor_threads(device)
        self.model = TrainedSLM(Path(folder), device)
        self.batch_size = batch_size

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        if not self.model.is_tagger:  # a token list is no text to classify
            batch["error"] = batch["error"].where(batch["tokens_in"].isna(), "a token list, not text")
        ok = batch["error"].isna()
        values = [json.loads(t) if isinstance(t, str) else v for v, t in zip(batch["value"][ok], batch["tokens_in"][ok])]
        predicted = self.model.predict(values, self.batch_size) if values else []
        out = batch.drop(columns=["tokens_in"]).rename(columns={"value": "text"})
        for key in (("tokens", "tags", "entities") if self.model.is_tagger else ("label", "confidence", "probs")):
            column = [None] * len(batch)
            for i, p in zip(ok[ok].index.map(batch.index.get_loc), predicted):
                column[i] = list(p[key].values()) if key == "probs" else p[key]
            out[key] = column
        return out


def _as_table(batch: pd.DataFrame) -> pa.Table:
    """Fixed column types, so parts with and without entities read back as one table; no pandas
    metadata, whose Arrow-backed dtypes plain pandas cannot read back."""
    if "entities" in batch:
        entities = pa.array([[{k: e.get(k) for k in ENTITY.names} for e in row] for row in batch["entities"]],
                            type=pa.list_(ENTITY))
        table = pa.Table.from_pandas(batch.drop(columns=["entities"]), preserve_index=False).append_column("entities", entities)
    else:
        table = pa.Table.from_pandas(batch.assign(probs=[list(map(float, p)) for p in batch["probs"]]), preserve_index=False)
    return table.replace_schema_metadata(None)
