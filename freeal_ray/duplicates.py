"""Repeated ids and repeated texts in the corpus (ingest): counted on the driver when the corpus is
small (tables.gathered), with distributed aggregates when it is not."""

from __future__ import annotations

import hashlib

import pandas as pd
import ray

from freeal_ray import tables
from freeal_ray.tables import join_partitions


def find_duplicate_ids(ds: ray.data.Dataset, limit: int = 5) -> list[tuple[str, int]]:
    """Up to `limit` ids that more than one row has, with their row counts."""
    ids = tables.gathered(ds, ["id"])
    if ids is not None:
        counts = ids["id"].value_counts()
        return [(i, int(n)) for i, n in counts[counts > 1].head(limit).items()]
    counts = ds.select_columns(["id"]).groupby("id").count()
    dupes = counts.filter(lambda r: r["count()"] > 1).take(limit)
    return [(d["id"], d["count()"]) for d in dupes]


def drop_duplicate_ids(ds: ray.data.Dataset) -> ray.data.Dataset:
    """Keep one row per id (used when ids are generated: the same text is one row)."""
    ids = tables.gathered(ds, ["id"])
    if ids is None:
        return ds.groupby("id").map_groups(lambda g: g.iloc[:1], batch_format="pandas")
    repeated = set(ids["id"][ids["id"].duplicated()])
    if not repeated:
        return ds
    firsts = ds.filter(lambda r: r["id"] in repeated).to_pandas().drop_duplicates("id")
    return tables.drop_ids(ds, repeated).union(ray.data.from_pandas(firsts))


def split_duplicate_texts(ds: ray.data.Dataset) -> tuple[ray.data.Dataset, ray.data.Dataset | None]:
    """(rows with a text of their own, duplicates as id -> canonical_id), or (ds, None) when no
    two rows share a text (whitespace aside). The canonical row is the smallest id of its text;
    the LLM and SLM see only canonical rows, and the output copies their labels to the rest."""
    keyed = ds.map_batches(_with_text_key, batch_format="pandas")
    pairs = tables.gathered(keyed, ["text_key", "id"])
    if pairs is None:
        return _split_distributed(ds, keyed)
    canonical = pairs.groupby("text_key")["id"].transform("min")
    repeats = pd.DataFrame({"id": pairs["id"], "canonical_id": canonical})[pairs["id"] != canonical]
    if repeats.empty:
        return ds, None
    return tables.drop_ids(ds, repeats["id"]), ray.data.from_pandas(repeats.reset_index(drop=True))


def _split_distributed(ds, keyed):
    """split_duplicate_texts with one hash aggregate, and a join only when duplicates exist."""
    from ray.data.aggregate import Count, Min

    groups = keyed.select_columns(["text_key", "id"]).groupby("text_key").aggregate(Count(), Min("id"))
    shared = groups.filter(lambda g: g["count()"] > 1).materialize()
    n_shared = shared.count()
    if n_shared == 0:
        return ds, None
    shared = shared.select_columns(["text_key", "min(id)"]).rename_columns({"min(id)": "canonical_id"})
    joined = keyed.join(shared, "left_outer", num_partitions=join_partitions(n_shared), on=("text_key",)).materialize()
    unique = joined.filter(lambda r: r["canonical_id"] is None or r["id"] == r["canonical_id"])
    duplicates = joined.filter(lambda r: r["canonical_id"] is not None and r["id"] != r["canonical_id"])
    return unique.drop_columns(["text_key", "canonical_id"]), duplicates.select_columns(["id", "canonical_id"])


def _with_text_key(batch: pd.DataFrame) -> pd.DataFrame:
    batch["text_key"] = [hashlib.sha1(" ".join(str(t).split()).encode()).hexdigest() for t in batch["text"]]
    return batch
