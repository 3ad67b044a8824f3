"""`freeal-ray predict` against the plain alternative, a transformers pipeline loop over the same
model and the same rows, and the driver's memory as the corpus grows.

    python bench/predict.py --rows 20000 --memory-rows 100000 1000000

Speed: the default SLM's encoder (all-MiniLM-L6-v2) saved as a run saves its SLM; the head's
weights are untrained (the speed of a forward pass does not depend on them). `predict` runs
through Ray Data end to end (read, score, write Parquet parts); the pipeline loop only scores
texts already in memory, with every class's probability as predict gives them.
Memory: each corpus size in a fresh process whose peak RSS is the driver's, with a tiny encoder so
that a million rows finish in minutes (the model lives in the scoring actor, not the driver).
Texts are MR's (../shared/data) where present, repeated with fresh ids; synthetic sentences otherwise.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from common import RESULTS, ROOT, load_split, machine

LABELS = ["negative", "positive"]
WORK = ROOT / "bench" / "work" / "predict"


def base_texts() -> list[str]:
    parts = [load_split("mr", split) for split in ("train", "test")]
    texts = [t for p in parts if p is not None for t in p["text"].astype(str)]
    if texts:
        return texts
    rng = np.random.default_rng(0)
    words = "the a film plot actors story slow bright dull moving sharp long witty script ending".split()
    return [" ".join(rng.choice(words, 18)) for _ in range(5000)]


def write_corpus(path: Path, n: int, texts: list[str]) -> Path:
    """n rows (id, text) in Parquet, written a chunk at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path, pa.schema([("id", pa.string()), ("text", pa.string())])) as writer:
        for start in range(0, n, 50_000):
            ids = range(start, min(n, start + 50_000))
            writer.write_table(pa.table({"id": [f"row-{i}" for i in ids], "text": [texts[i % len(texts)] for i in ids]}))
    return path


def save_slm(encoder: str, folder: Path) -> Path:
    """The encoder with a classification head, saved the way a run saves its SLM."""
    from transformers import AutoTokenizer

    from freeal_ray.checkpoint import save_checkpoint
    from freeal_ray.slm import SLMClassifier

    shutil.rmtree(folder, ignore_errors=True)
    return save_checkpoint(SLMClassifier(encoder, LABELS), AutoTokenizer.from_pretrained(encoder), LABELS, 64, folder)


def tiny_encoder(folder: Path, tokenizer_from: str) -> str:
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=2, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def predict_rows_per_s(model: Path, corpus: Path, n: int) -> float:
    from freeal_ray.predict import predict_corpus
    from freeal_ray.ray_cluster import ensure_ray

    ensure_ray()
    out = WORK / "out"
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    counts = predict_corpus(model, str(corpus), out, use_gpu="false")
    seconds = time.perf_counter() - started
    assert counts["predicted"] == n, counts
    return n / seconds


def pipeline_rows_per_s(model: Path, texts: list[str]) -> float:
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(model), device="cpu", top_k=None)
    started = time.perf_counter()
    answers = classify(texts, batch_size=64, truncation=True, max_length=64)
    seconds = time.perf_counter() - started
    assert len(answers) == len(texts)
    return len(texts) / seconds


def driver_peak_mb(model: Path, rows: int, texts: list[str]) -> float:
    """Peak RSS of a fresh driver process that predicts `rows` rows."""
    corpus = write_corpus(WORK / f"corpus-{rows}.parquet", rows, texts)
    child = subprocess.run([sys.executable, __file__, "--child", str(model), str(corpus), str(rows)],
                           capture_output=True, text=True, check=True)
    return json.loads(child.stdout.strip().splitlines()[-1])["peak_mb"]


def child(model: str, corpus: str, rows: int) -> None:
    predict_rows_per_s(Path(model), Path(corpus), rows)
    print(json.dumps({"peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000, help="rows for the speed comparison")
    parser.add_argument("--memory-rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], args.child[1], int(args.child[2]))
    from freeal_ray.model_store import resolve_encoder

    encoder = str(resolve_encoder("all-minilm-l6-v2"))
    texts = base_texts()
    model = save_slm(encoder, WORK / "slm")
    corpus = write_corpus(WORK / "corpus-speed.parquet", args.rows, texts)
    speed_texts = [texts[i % len(texts)] for i in range(args.rows)]
    pipe = pipeline_rows_per_s(model, speed_texts)
    ours = predict_rows_per_s(model, corpus, args.rows)
    print(f"predict {ours:.0f} rows/s, transformers pipeline {pipe:.0f} rows/s", flush=True)
    tiny = save_slm(tiny_encoder(WORK / "tiny-encoder", encoder), WORK / "tiny-slm")
    memory = {str(n): driver_peak_mb(tiny, n, texts) for n in args.memory_rows}
    print(f"driver peak RSS by rows: {memory}", flush=True)
    result = {
        "machine": machine(), "model": "all-minilm-l6-v2 with a classification head (weights untrained)",
        "rows": args.rows, "rows_per_s": round(ours, 1), "pipeline_rows_per_s": round(pipe, 1),
        "ratio_vs_pipeline": round(ours / pipe, 3),
        "driver_rss_mb": memory, "memory_model": "a 2-layer, 32-wide BERT with MiniLM's tokenizer",
        "command": " ".join(["python", "bench/predict.py", *sys.argv[1:]]),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "predict.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
