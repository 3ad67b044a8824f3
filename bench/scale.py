"""The pipeline at scale: a synthetic corpus streamed through every stage of the loop.

    python bench/scale.py --rows 100000 --rows 1000000
    python bench/scale.py --rows 1000000 --keep     # one size at a time, keeping the others' figures

The LLM is the `instant` engine (answers at once, no model), so what is measured is the pipeline
itself: Ray Data reading and writing, kNN demo retrieval, Ray Train, scoring, the GMM split,
k-medoids, the refinery's plumbing. The SLM is a tiny encoder built from scratch (tests/tiny_models.py),
because the point is the data flow, not the encoder's speed. Per stage: rows/s; over the run:
peak memory of the driver and of the largest Ray worker. Writes bench/results/scale.json.

Each size runs in a fresh driver process on a fresh local Ray: run one after another in one
process, the larger size would inherit the smaller one's heap and its figures would not compare.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

WORDS = {
    "positive": ["great", "lovely", "superb", "wonderful", "excellent", "moving", "sharp"],
    "negative": ["awful", "boring", "terrible", "dreadful", "dull", "clumsy", "flat"],
}
FILLER = "the a film movie story plot acting script ending cast was and but quite rather very".split()


def synthetic_rows(batch: dict, seed: int) -> dict:
    """Rows from ids alone, so the corpus is generated on the workers and never on the driver."""
    import numpy as np

    ids = batch["id"]
    rng = np.random.default_rng(seed + int(ids[0]))
    labels = np.where(ids % 2 == 0, "positive", "negative")
    texts = []
    for label in labels:
        words = list(rng.choice(FILLER, size=8)) + list(rng.choice(WORDS[label], size=2))
        rng.shuffle(words)
        texts.append(" ".join(words))
    return {"id": [f"r{i}" for i in ids], "text": texts, "gold": labels}


def write_corpus(rows: int, folder: Path) -> Path:
    import ray

    if folder.exists() and any(folder.glob("*.parquet")):
        return folder
    ray.data.range(rows, override_num_blocks=max(8, rows // 50_000)).map_batches(
        synthetic_rows, fn_kwargs={"seed": 0}, batch_format="numpy", batch_size=10_000
    ).write_parquet(str(folder))
    return folder


class PeakMemory:
    """Samples the RSS of this process and of every Ray worker process every half second, keeping
    the timeline so each stage's peak can be read off it."""

    def __init__(self):
        self.driver = self.worker = 0
        self.timeline: list[tuple[float, int, int]] = []  # (time, driver rss, largest worker rss)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            driver, worker = me.memory_info().rss, 0
            for proc in psutil.process_iter(["name", "cmdline", "memory_info"]):
                cmd = " ".join(proc.info["cmdline"] or [])
                if cmd.startswith("ray::") and proc.info["memory_info"]:
                    worker = max(worker, proc.info["memory_info"].rss)
            self.driver, self.worker = max(self.driver, driver), max(self.worker, worker)
            self.timeline.append((time.time(), driver, worker))
            time.sleep(0.5)

    def peaks_between(self, start: float, end: float) -> tuple[int, int]:
        inside = [(d, w) for t, d, w in self.timeline if start <= t <= end] or [(0, 0)]
        return max(d for d, _ in inside), max(w for _, w in inside)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def stage_rows(manifest: dict, rows: int, epochs: int) -> dict:
    """How many rows each stage handled, from the manifest."""
    r1 = manifest["rounds"].get("1", {})
    out = {"ingest": rows, "synthesize": manifest["stages"].get("synthesize", {}).get("demos", 0), "annotate-0": rows}
    out.update({"train-1": rows * epochs, "score-1": rows, "select-1": r1.get("clean_fraction", 0) * rows,
                "refine-1": rows, "finalize": rows})
    return out


def run_one(rows: int, encoder: Path, epochs: int) -> dict:
    from freeal_ray.config import load_config
    from freeal_ray.loop import FreeALRun
    from freeal_ray.ray_cluster import ensure_ray

    ensure_ray()
    start_rss = psutil.Process().memory_info().rss  # imports and Ray's client, before any row is read
    work = ROOT / "bench" / "work" / f"scale-{rows}"
    corpus = write_corpus(rows, work / "corpus")
    out = work / "run"
    shutil.rmtree(out, ignore_errors=True)
    config = load_config(None, {
        "task": "sentiment", "output": str(out), "corpus.path": str(corpus), "corpus.format": "parquet",
        "corpus.gold_column": "gold", "llm.engine": "instant", "llm.model": "instant", "llm.batch_size": 512,
        "slm.model": str(encoder), "slm.epochs": epochs, "slm.warmup_epochs": max(1, epochs - 1), "slm.batch_size": 256,
        "slm.lr": 2e-3, "loop.rounds": 1, "loop.min_change": 0.0,
    })
    started = time.time()
    with PeakMemory() as memory:
        FreeALRun(config).run()
    wall = time.time() - started
    manifest = json.loads((out / "manifest.json").read_text())
    handled = stage_rows(manifest, rows, epochs)
    stages = {}
    for name, info in manifest["stages"].items():
        driver, worker = memory.peaks_between(info["finished"] - info["seconds"], info["finished"])
        stages[name] = {"seconds": round(info["seconds"], 1), "rows": int(handled.get(name, 0)),
                        "rows_per_s": round(handled.get(name, 0) / info["seconds"], 1) if info["seconds"] else None,
                        "driver_peak_rss_mb": round(driver / 2**20), "worker_peak_rss_mb": round(worker / 2**20)}
    result = {"rows": rows, "wall_seconds": round(wall), "stages": stages, "driver_start_rss_mb": round(start_rss / 2**20),
              "driver_peak_rss_mb": round(memory.driver / 2**20), "worker_peak_rss_mb": round(memory.worker / 2**20),
              "noisy_rows_refined": manifest["rounds"]["1"].get("noisy_rows")}
    print(json.dumps(result, indent=2))
    return result


def stop_ray() -> None:
    """`ray stop --force` with the ray beside this Python, so the bench runs without an activated venv."""
    subprocess.run([str(Path(sys.executable).with_name("ray")), "stop", "--force"], capture_output=True)


def run_fresh(rows: int, epochs: int) -> dict:
    """`run_one` in a new process with its own local Ray, stopped afterwards."""
    result = ROOT / "bench" / "work" / f"scale-{rows}.json"
    result.unlink(missing_ok=True)
    stop_ray()
    cmd = [sys.executable, __file__, "--rows", str(rows), "--epochs", str(epochs), "--one", str(result)]
    subprocess.run(cmd, check=True)
    stop_ray()
    return json.loads(result.read_text())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, action="append", help="corpus size; repeat to compare (default 100000 and 1000000)")
    parser.add_argument("--epochs", type=int, default=1, help="SLM epochs")
    parser.add_argument("--keep", action="store_true", help="keep earlier runs of other sizes in scale.json")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # internal: run one size, write its result here
    args = parser.parse_args(argv)
    from tiny_models import build_tiny_encoder

    encoder = build_tiny_encoder(ROOT / "bench" / "work" / "tiny-encoder")
    if args.one:
        args.one.write_text(json.dumps(run_one(args.rows[0], encoder, args.epochs)))
        return
    sizes = sorted(args.rows or [100_000, 1_000_000])
    runs = [run_fresh(n, args.epochs) for n in sizes]
    path = ROOT / "bench" / "results" / "scale.json"
    if args.keep and path.exists():  # earlier runs of other sizes stay, so sizes can be measured one at a time
        runs += [r for r in json.loads(path.read_text()).get("runs", []) if r["rows"] not in sizes]
    runs.sort(key=lambda r: r["rows"])
    largest = runs[-1]
    result = {
        "rows": largest["rows"], "stages": largest["stages"], "driver_peak_rss_mb": largest["driver_peak_rss_mb"],
        "worker_peak_rss_mb": largest["worker_peak_rss_mb"], "runs": runs,
        "machine": f"{os.cpu_count()} cores, {round(psutil.virtual_memory().total / 2**30)} GiB, no GPU",
        "engine": "instant (no model)", "slm": "tiny 2-layer encoder built from scratch",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
