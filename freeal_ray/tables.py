"""The run's tables on disk: each stage's output is a folder of Parquet files, written
atomically part by part, with one column schema per known column so parts always union.

Rows stream through Ray Data; the driver never holds a table. A stage's own bookkeeping (counts,
metrics against gold, token sums) reads the few columns it needs from the table it just wrote,
batch by batch on the driver (`scan`, `LocalTable`): on a small corpus a Ray Data pass costs a
second of start-up for milliseconds of counting, and a loop makes dozens of them."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401 -- pa.compute
import pyarrow.parquet as pq
import ray

def join_partitions(rows: int) -> int:
    """Hash partitions for a Ray Data join: one per 100k rows, at most 64."""
    return max(1, min(64, rows // 100_000 + 1))


# A join whose small side has at most this many rows sends that side to every task (an id set this
# size is a few MB) instead of hash-shuffling both sides: a hash join starts an aggregator actor per
# partition, seconds each on a small machine, where a resumed stage or a corpus's few repeated texts
# would fit in any task's memory.
BROADCAST_ROWS = 100_000


def without_ids(ds: ray.data.Dataset, done: str | Path) -> ray.data.Dataset:
    """The rows of `ds` whose id has no row in the table `done` (a left anti-join on id): the
    ids broadcast when few, else a distributed join, so a million done ids never gather anywhere."""
    n = count_rows(done)
    if n == 0:
        return ds
    if n <= BROADCAST_ROWS:
        return drop_ids(ds, (i for batch in scan(done, ["id"]) for i in batch.column("id").to_pylist()))
    return ds.join(read_table(done, columns=["id"]), "left_anti", num_partitions=join_partitions(n), on=("id",))


def drop_ids(ds: ray.data.Dataset, ids) -> ray.data.Dataset:
    """The rows of `ds` whose id is not among `ids` (few enough to send to every task)."""
    return ds.map_batches(_rows_without, fn_kwargs={"ids": frozenset(str(i) for i in ids)}, batch_format="pandas")


def gathered(ds: ray.data.Dataset, columns: list[str]) -> pd.DataFrame | None:
    """`columns` of `ds` as one frame on the driver when it has at most BROADCAST_ROWS rows, else
    None: a caller then aggregates distributed, which on a small table costs more in aggregator
    actors (seconds each) than the rows do."""
    part = ds.select_columns(columns).limit(BROADCAST_ROWS + 1).to_pandas()
    return part if len(part) <= BROADCAST_ROWS else None


def _rows_without(batch: pd.DataFrame, ids: frozenset) -> pd.DataFrame:
    return batch[~batch["id"].astype(str).isin(ids)]


def copied_rows(ds: ray.data.Dataset, copies: str | Path, key: str) -> ray.data.Dataset:
    """For each row of the table `copies` (id, `key`), the row of `ds` whose id is its `key`, under
    the copy's id with `key` beside it (an inner join of copies.key on ds.id): broadcast when the
    copies are few, else a distributed join."""
    n = count_rows(copies)
    if n <= BROADCAST_ROWS:
        pairs = read_frame(copies)
        by_source: dict[str, list[str]] = {}
        for copy_id, source in zip(pairs["id"].astype(str), pairs[key].astype(str)):
            by_source.setdefault(source, []).append(copy_id)
        return ds.map_batches(_copies_of, fn_kwargs={"by_source": by_source, "key": key}, batch_format="pandas")
    sources = ds.rename_columns({"id": key})
    return read_table(copies).join(sources, "inner", num_partitions=join_partitions(n), on=(key,))


def _copies_of(batch: pd.DataFrame, by_source: dict, key: str) -> pd.DataFrame:
    picked = [(i, copy_id) for i, source in enumerate(batch["id"].astype(str)) for copy_id in by_source.get(source, [])]
    rows = batch.iloc[[i for i, _ in picked]].reset_index(drop=True)
    rows[key] = rows["id"].astype(str)
    rows["id"] = [copy_id for _, copy_id in picked]
    return rows


# ---- Parquet tables ---------------------------------------------------------------------------


def table_files(path: str | Path) -> list[str]:
    root = Path(path)
    return sorted(str(p) for p in root.rglob("*.parquet")) if root.exists() else []


def read_table(path: str | Path, columns: list[str] | None = None) -> ray.data.Dataset | None:
    """A stage table (a folder of Parquet files, read recursively), or None when it has no rows."""
    files = table_files(path)
    if not files:
        return None
    # Parts may differ in columns (a JSON key absent from a whole block) or hold an all-null
    # column; read every part with the union of their schemas, from the files' footers only.
    schema = pa.unify_schemas([pq.read_schema(f) for f in files], promote_options="permissive")
    schema = pa.schema([f for f in schema if f.name != "__index_level_0__"])
    return ray.data.read_parquet(files, columns=columns, schema=schema)


# Rows per Parquet row group. Ray otherwise writes one row group per block (64 rows behind a
# batch_size=64 stage), and a million-row table's footers then hold ~15k row groups that every
# later read plans on the driver: driver memory and read time grow with the corpus.
ROWS_PER_ROW_GROUP = 25_000


def write_table(ds: ray.data.Dataset, path: str | Path) -> None:
    ds.write_parquet(str(path), min_rows_per_file=ROWS_PER_ROW_GROUP)


def write_part(table: pa.Table | pd.DataFrame, folder: str | Path, name: str | None = None) -> Path:
    """Write one Parquet part atomically, so a killed job never leaves a half-written file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    final = folder / f"{name or uuid.uuid4().hex}.parquet"
    tmp = folder / f".{final.name}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, final)
    return final


class PartWriter:
    """Buffers batches answered on the driver and writes them as one part every `every_s` seconds
    or `ROWS_PER_ROW_GROUP` rows, whichever comes first.

    One part per engine batch would keep a kill from losing anything, but a fast engine then
    writes tens of thousands of small files, and every later read of the table plans each one on
    the driver (about 90 KB of driver memory a file, measured). A time bound keeps what a kill can
    lose to `every_s` seconds of LLM work and the file count to the stage's length over `every_s`.
    """

    def __init__(self, folder: str | Path, every_s: float):
        self.folder, self.every_s = folder, every_s
        self.parts, self._buffer, self._rows, self._since = 0, [], 0, time.monotonic()

    def add(self, table: pa.Table) -> bool:
        """Buffer `table`; returns whether a part was written."""
        self._buffer.append(table)
        self._rows += table.num_rows
        if self._rows >= ROWS_PER_ROW_GROUP or time.monotonic() - self._since >= self.every_s:
            self.flush()
            return True
        return False

    def flush(self) -> None:
        if self._buffer:
            write_part(pa.concat_tables(self._buffer, promote_options="permissive"), self.folder)
            self.parts += 1
        self._buffer, self._rows, self._since = [], 0, time.monotonic()


KNOWN_TYPES = {
    "id": pa.string(),
    "text": pa.string(),
    "gold": pa.string(),
    "given_label": pa.string(),
    "view": pa.string(),
    "label": pa.string(),
    "prev_label": pa.string(),
    "slm_pred": pa.string(),
    "pred": pa.string(),
    "confidence": pa.float64(),
    "source": pa.string(),
    "duplicate_of": pa.string(),
    "round": pa.int64(),
    "demo_ids": pa.list_(pa.string()),
    "tokens": pa.list_(pa.string()),
    "tags": pa.list_(pa.string()),
    "gold_tags": pa.list_(pa.string()),
    "pred_tags": pa.list_(pa.string()),
    "prev_tags": pa.list_(pa.string()),
    "slm_tags": pa.list_(pa.string()),
    "offsets": pa.list_(pa.list_(pa.int64())),
    "spans_placed": pa.int64(),
    "spans_dropped": pa.int64(),
    "answer_unparsed": pa.bool_(),
    "prompt_tokens": pa.int64(),
    "output_tokens": pa.int64(),
    "prompt_trimmed": pa.bool_(),
    "loss": pa.float64(),
    "p_clean": pa.float64(),
    "clean": pa.bool_(),
    "probs": pa.list_(pa.float32()),
    "embedding": pa.list_(pa.float32()),
}


def conform(batch: pd.DataFrame) -> pa.Table:
    """Fix column types and order, so parts written by different stages (or with all-null
    columns, such as a batch where the LLM abstained on every row) read back as one table."""
    table = pa.Table.from_pandas(batch, preserve_index=False)
    names = sorted(table.column_names, key=lambda c: (c not in ("id", "text"), c))
    columns = []
    for name in names:
        column = table.column(name)
        target = KNOWN_TYPES.get(name)
        columns.append(column.cast(target) if target is not None and column.type != target else column)
    return pa.table(columns, names=names)


# Ray remote args for the loop's Ray Data actors. Ray Data restarts map actors forever by default, with
# their constructor arguments kept in the object store, and the driver prints a warning line for each
# such actor. These actors hold no state worth restarting for: a crash fails the stage, and a re-run
# resumes from what was saved. (Ray 2.60 has no named parameter for it; its own docs pass max_restarts=0.)
NO_RESTARTS = {"max_restarts": 0}


def read_frame(path: str | Path) -> pd.DataFrame:
    """A small stage table (EvoKD's batches and probes: hundreds of rows) read whole into pandas."""
    files = table_files(path)
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True) if files else pd.DataFrame()


def scan(path: str | Path, columns: list[str], batch_size: int = 65_536):
    """A stage table's `columns`, batch by batch, read on the driver with no Ray: for the
    stage's own bookkeeping over columns of a few bytes a row, where a Ray Data pass would cost
    its start-up. Memory stays one batch whatever the table's size."""
    for f in table_files(path):
        parquet = pq.ParquetFile(f)
        present = [c for c in columns if c in parquet.schema_arrow.names]
        for batch in parquet.iter_batches(batch_size=batch_size, columns=present):
            for c in columns:
                if c not in present:  # a part where the column was all missing
                    batch = batch.append_column(c, pa.nulls(batch.num_rows))
            yield batch


def count_where(path: str | Path, predicate, columns: list[str]) -> int:
    """Rows of a stage table for which predicate(row) holds, row being a dict of `columns`
    (a column absent from the table reads as None)."""
    return sum(sum(1 for row in batch.to_pylist() if predicate(row)) for batch in scan(path, columns))


def rows_with_ids(path: str | Path, ids, columns: list[str]) -> pd.DataFrame:
    """The rows of a stage table whose id is in `ids`, `columns` of them (id first), read on the
    driver batch by batch: a few chosen rows out of a table of any size, with no shuffle."""
    wanted = pa.array([str(i) for i in ids], pa.string())
    parts = [pa.Table.from_batches([b]).filter(pa.compute.is_in(b.column("id").cast(pa.string()), value_set=wanted))
             for b in scan(path, ["id", *columns])]
    if not parts:
        return pd.DataFrame(columns=["id", *columns])
    return pa.concat_tables(parts, promote_options="permissive").to_pandas()


class LocalTable:
    """A stage table read batch by batch on the driver, optionally only the rows whose boolean
    column `where` is true and after `transform(batch)`: what quality metrics count over a table
    a stage has just written, with no Ray Data pass (metrics.py accepts it wherever it takes a
    Dataset). Memory stays one batch."""

    def __init__(self, path: str | Path, where: str | None = None, transform=None):
        self.path, self.where, self.transform = path, where, transform

    def batches(self, columns: list[str]):
        """pandas batches of `columns` (read with every column when a transform needs them)."""
        names = _column_names(self.path) if self.transform is not None else columns + ([self.where] if self.where else [])
        for batch in scan(self.path, names):
            frame = batch.to_pandas()
            if self.where is not None:
                frame = frame[frame[self.where].fillna(False).astype(bool)]
            if self.transform is not None:
                frame = self.transform(frame)
            yield frame[columns]


def _column_names(path: str | Path) -> list[str]:
    names: dict[str, None] = {}
    for f in table_files(path):
        names.update(dict.fromkeys(pq.read_schema(f).names))
    return [n for n in names if n != "__index_level_0__"]


def first_where(path: str | Path, predicate, columns: list[str]) -> dict | None:
    """The first row of a stage table for which predicate(row) holds, or None."""
    for batch in scan(path, columns):
        for row in batch.to_pylist():
            if predicate(row):
                return row
    return None


def column_sums(path: str | Path, columns: list[str]) -> dict[str, float]:
    totals = dict.fromkeys(columns, 0)
    for batch in scan(path, columns):
        for c in columns:
            totals[c] += pa.compute.sum(batch.column(c)).as_py() or 0
    return totals


def count_rows(path: str | Path) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in table_files(path))
