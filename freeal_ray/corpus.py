"""The user's corpus on Ray Data: read JSONL/CSV/Parquet, check and normalise its rows (tables.py
writes the stage tables).

Rows stream through Ray Data; the driver only ever sees counts and a few example rows for error
messages. A row that cannot be labelled (malformed line, empty or non-text value) goes to a
quarantine table with its reason instead of failing the run.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import ray

from freeal_ray.config_sections import CorpusConfig
from freeal_ray.errors import CorpusError, short_reason

_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
QUARANTINE_SCHEMA = pa.schema([("line", pa.string()), ("reason", pa.string())])


def _corpus_files(path: str) -> list[str]:
    root = Path(path).expanduser()
    if root.is_dir():
        files = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in _FORMATS)
    elif root.exists():
        files = [str(root)]
    else:
        raise CorpusError(f"corpus.path {path} does not exist")
    if not files:
        raise CorpusError(f"corpus.path {path} holds no .jsonl, .csv or .parquet file")
    return files


def _format(cfg: CorpusConfig, files: list[str]) -> str:
    if cfg.format != "auto":
        return cfg.format
    kinds = {_FORMATS.get(Path(f).suffix.lower()) for f in files}
    if len(kinds) != 1 or None in kinds:
        raise CorpusError(
            f"cannot tell the corpus format from {files[:3]}; set corpus.format to jsonl, csv or parquet"
        )
    return kinds.pop()


def read_raw(cfg: CorpusConfig) -> tuple[ray.data.Dataset, ray.data.Dataset | None]:
    """Rows as read, plus a dataset of the lines that could not be read (None for Parquet)."""
    files = _corpus_files(cfg.path)
    fmt = _format(cfg, files)
    try:
        if fmt == "parquet":
            return ray.data.read_parquet(files), None
        # Split and decode record by record ourselves: one bad record (malformed JSON, a CSV row
        # of the wrong width, bytes that are not UTF-8) must not fail the whole read, as Ray's
        # readers do on a stray byte.
        files_ds = ray.data.read_binary_files(files, include_paths=True)
        parsed = files_ds.map_batches(_parse_file, fn_kwargs={"fmt": fmt}, batch_size=1, batch_format="numpy")
        good = parsed.filter(lambda r: r["__error"] is None)
        bad = parsed.filter(lambda r: r["__error"] is not None)
        # Every block gets every key of the whole corpus: a block whose rows lack a key would
        # otherwise carry a narrower schema, and Ray may keep either when it joins blocks.
        # (a block's keys are a few rows: gathered here, where a distributed unique starts a shuffle)
        keys = sorted({row["key"] for row in good.map_batches(_json_keys, batch_format="pandas").take_all()})
        good = good.map_batches(_unpack_json, fn_kwargs={"keys": keys}, batch_format="pandas")
        return good, bad.map_batches(_bad_line_rows, batch_format="pyarrow")
    except Exception as exc:  # Ray wraps reader errors; surface the file and the cause
        raise CorpusError(f"cannot read corpus {cfg.path} as {fmt}: {short_reason(_root_cause(exc))}") from None


def _root_cause(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _parse_file(batch: dict, fmt: str) -> pd.DataFrame:
    """One file's records as (payload: a JSON object, error): a record that is not UTF-8 or cannot
    be read is kept, with its reason, for the quarantine."""
    records = _json_records if fmt == "jsonl" else _csv_records
    rows = [r for data, path in zip(batch["bytes"], batch["path"]) for r in records(bytes(data), Path(path).name)]
    return pd.DataFrame(rows, columns=["__payload", "__error"], dtype=object)


def _json_records(data: bytes, name: str):
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield raw.decode("utf-8", errors="replace"), f"line {number} of {name} is not UTF-8 text (byte {exc.start} of the line)"
            continue
        yield _parse_json_line(line)


def _csv_records(data: bytes, name: str):
    """CSV rows as JSON objects of strings, keyed by the header. Bytes that are not UTF-8 are
    decoded as surrogates, so the reader still finds the row's end and the row alone is set aside."""
    data = data[3:] if data.startswith(b"\xef\xbb\xbf") else data  # a byte-order mark, as spreadsheets write
    reader = csv.reader(io.StringIO(data.decode("utf-8", errors="surrogateescape"), newline=""))
    header = next(reader, None)
    if header is None:
        return
    if any(_NOT_UTF8.search(h) for h in header):
        raise CorpusError(f"the header of {name} is not UTF-8 text")
    for number, record in enumerate(reader, start=2):
        if not record:
            continue
        bad = next((header[i] if i < len(header) else str(i) for i, v in enumerate(record) if _NOT_UTF8.search(v)), None)
        if bad is not None:
            yield _shown(record), f"row {number} of {name} (line {reader.line_num}) is not UTF-8 text (column {bad!r})"
        elif len(record) != len(header):
            yield _shown(record), f"row {number} of {name} (line {reader.line_num}) has {len(record)} fields, its header {len(header)}"
        else:
            yield json.dumps(dict(zip(header, record))), None


def _shown(record: list[str]) -> str:
    """A quarantined CSV row as the quarantine shows it: its fields, undecodable bytes as U+FFFD."""
    return json.dumps(record, ensure_ascii=False).encode("utf-8", errors="replace").decode("utf-8")


_NOT_UTF8 = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of a byte that is not UTF-8


def _parse_json_line(line: str) -> tuple[str, str | None]:
    try:
        value = json.loads(line)
        if not isinstance(value, dict):
            raise ValueError("line is not a JSON object")
        return json.dumps(value), None
    except ValueError as exc:
        return line, f"malformed JSON: {str(exc).splitlines()[0]}"


def _json_keys(batch: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"key": sorted({k for p in batch["__payload"] for k in json.loads(p)})}, dtype=object)


def _unpack_json(batch: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return pd.DataFrame([json.loads(p) for p in batch["__payload"]], columns=keys)


def _bad_line_rows(batch: pa.Table) -> pa.Table:
    lines = [str(p)[:300] for p in batch.column("__payload").to_pylist()]
    return pa.table({"line": lines, "reason": batch.column("__error").to_pylist()}, schema=QUARANTINE_SCHEMA)


def check_columns(cfg: CorpusConfig, ds: ray.data.Dataset) -> list[str]:
    """The dataset's columns, after checking the configured ones are there."""
    try:
        schema = ds.schema()
    except Exception as exc:
        raise CorpusError(f"cannot read corpus {cfg.path}: {short_reason(_root_cause(exc))}") from None
    if schema is None:
        raise CorpusError(f"corpus {cfg.path} has no rows")
    columns = list(schema.names)
    wanted = {
        "corpus.text_column": cfg.text_column,
        "corpus.id_column": cfg.id_column,
        "corpus.gold_column": cfg.gold_column,
        "corpus.view_column": cfg.view_column,
        "corpus.llm_label_column": cfg.llm_label_column,
    }
    for option, column in wanted.items():
        if column is not None and column not in columns:
            raise CorpusError(
                f"corpus {cfg.path} has no column {column!r} (set by {option}); "
                f"its columns are: {', '.join(columns)}"
            )
    return columns


# Columns the stages write. A corpus column of the same name that is not one the config maps
# (corpus.text_column, ...) travels on as `input_<name>`, so no stage overwrites the user's data.
RESERVED_COLUMNS = frozenset({
    "id", "text", "gold", "view", "given_label", "label", "source", "round", "confidence", "prompt_tokens",
    "output_tokens", "demo_ids", "prev_label", "slm_pred", "pred", "probs", "loss", "embedding", "p_clean",
    "clean", "duplicate_of", "canonical_id", "text_key", "draw", "tokens", "offsets", "gold_tags", "tags",
    "prev_tags", "slm_tags", "pred_tags", "spans_placed", "spans_dropped", "answer_unparsed", "prompt_trimmed", "__error",
})


def passthrough_renames(columns, cfg: CorpusConfig) -> dict[str, str]:
    """Pass-through corpus columns whose names the output uses, and the names they travel under."""
    mapped = {cfg.text_column, cfg.id_column, cfg.gold_column, cfg.view_column, cfg.llm_label_column}
    renames = {}
    for column in columns:
        if column in RESERVED_COLUMNS and column not in mapped:
            new = f"input_{column}"
            while new in columns or new in renames.values():
                new = f"input_{new}"
            renames[column] = new
    return renames


def _pass_through(batch: pd.DataFrame, out: pd.DataFrame, used: set, cfg: dict) -> pd.DataFrame:
    renames = cfg.get("renames") or {}
    for column in batch.columns:
        if column not in used:
            out[renames.get(column, column)] = batch[column]
    return out


def normalise_rows(batch: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    """Rename to the stage contract (id, text, gold, view, given_label) and flag rows that cannot be labelled."""
    if cfg.get("entities"):
        return normalise_sentences(batch, cfg)
    out = pd.DataFrame(index=batch.index)
    text = batch[cfg["text_column"]]
    if cfg["id_column"]:
        ids = batch[cfg["id_column"]]
        out["id"] = [None if is_missing(v) else str(v) for v in ids]
    else:
        # A stable id from the text: the same row gets the same id on every re-run.
        out["id"] = [hashlib.sha1(str(t).encode()).hexdigest()[:16] for t in text]
    out["text"] = [t if isinstance(t, str) else None for t in text]
    out["__error"] = [_text_problem(t, i) for t, i in zip(text, out["id"])]
    if cfg["gold_column"]:
        out["gold"] = [None if is_missing(v) else str(v) for v in batch[cfg["gold_column"]]]
    if cfg["view_column"]:
        out["view"] = [v if isinstance(v, str) and v.strip() else None for v in batch[cfg["view_column"]]]
    if cfg.get("llm_label_column"):
        out["given_label"] = [None if is_missing(v) else str(v) for v in batch[cfg["llm_label_column"]]]
    used = {cfg[k] for k in ("text_column", "id_column", "gold_column", "view_column", "llm_label_column") if cfg.get(k)}
    return _pass_through(batch, out, used, cfg)


def normalise_sentences(batch: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    """NER rows to the contract: id, tokens, text (the tokens joined, for retrieval and duplicate
    detection), gold_tags; raw text is tokenised here and its character `offsets` kept."""
    from freeal_ray.ner import tokenize

    out = pd.DataFrame(index=batch.index)
    values = list(batch[cfg["text_column"]])
    tokens, offsets, problems = [], [], []
    for value in values:
        if isinstance(value, str):
            words, spans = tokenize(value)
            offsets.append([list(s) for s in spans])
        else:
            words = [str(w) for w in value] if is_list(value) else None
            offsets.append(None)
        tokens.append(words)
        problems.append(None if words else f"{cfg['text_column']} is {'empty' if words == [] else type(value).__name__}, not tokens or text")
    if cfg["id_column"]:
        out["id"] = [None if is_missing(v) else str(v) for v in batch[cfg["id_column"]]]
    else:
        out["id"] = [hashlib.sha1(json.dumps(t).encode()).hexdigest()[:16] for t in tokens]
    out["tokens"] = tokens
    out["text"] = [" ".join(t) if t else None for t in tokens]
    if any(o is not None for o in offsets):
        out["offsets"] = offsets
    if cfg["gold_column"]:
        gold = [[str(t) for t in g] if is_list(g) else None for g in batch[cfg["gold_column"]]]
        out["gold_tags"] = gold
        problems = [p or (None if g is None or t is None or len(g) == len(t) else f"{len(g)} gold tags for {len(t)} tokens")
                    for p, g, t in zip(problems, gold, tokens)]
    out["__error"] = ["missing id" if i is None else p for i, p in zip(out["id"], problems)]
    used = {cfg[k] for k in ("text_column", "id_column", "gold_column") if cfg.get(k)}
    return _pass_through(batch, out, used, cfg)


def is_list(value) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


def is_missing(value) -> bool:
    """None, NaN or pandas' NA: how a null arrives depends on the reader and Ray's block format."""
    if value is None or is_list(value) or isinstance(value, (str, bytes, dict)):
        return value is None
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _text_problem(text, row_id) -> str | None:
    if row_id is None:
        return "missing id"
    if not isinstance(text, str):
        return f"text is {type(text).__name__}, not a string"
    if not text.strip():
        return "empty text"
    return None


def quarantine_rows(batch: pd.DataFrame) -> pd.DataFrame:
    lines = [json.dumps({"id": i, "text": None if t is None else str(t)[:200]}) for i, t in zip(batch["id"], batch["text"])]
    return pd.DataFrame({"line": lines, "reason": batch["__error"].astype(str)})
