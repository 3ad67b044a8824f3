"""Driver memory of the annotation stage alone, by corpus size and by how rows are cut into blocks.

    python bench/annotate_driver.py --rows 100000 --rows 1000000
    python bench/annotate_driver.py --rows 100000 --rows 1000000 --max-blocks 0   # a block per engine batch

The stage runs on the synthetic corpus of bench/scale.py with the `instant` engine and no demos, so
what grows is the pipeline's own bookkeeping. Ray Data's driver keeps a stats record per block a
stage produces (ray-project/ray#66016), so driver memory follows the number of blocks; annotation
caps it (annotation.MAX_BLOCKS_PER_STAGE, 0 lifts the cap). Figures are the driver's private memory
(RssAnon, the heap: what the stage itself holds) and its whole RSS, at start and at peak, each size in
a fresh process. Writes bench/results/annotate-driver.json (one entry per size and cap, kept across runs).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from scale import stop_ray, write_corpus  # noqa: E402


def memory_mb() -> dict:
    fields = {"VmRSS": "rss", "RssAnon": "private"}
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in fields:
            out[fields[key]] = int(value.split()[0]) // 1024
    return out


def run_one(rows: int, max_blocks: int, batch_size: int) -> dict:
    import pandas as pd
    import ray

    import freeal_ray.annotation as A
    from freeal_ray import tables
    from freeal_ray.engines import EngineConfig
    from freeal_ray.task import get_preset

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    corpus = write_corpus(rows, ROOT / "bench" / "work" / f"scale-{rows}" / "corpus")
    A.MAX_BLOCKS_PER_STAGE = max_blocks
    out = ROOT / "bench" / "work" / f"annotate-driver-{rows}"
    shutil.rmtree(out, ignore_errors=True)
    settings = A.LLMSettings("instant", EngineConfig(model_path="instant"), replicas=1, batch_size=batch_size,
                             max_text_chars=1000)
    no_demos = pd.DataFrame(columns=["id", "text", "label", "origin"])
    start, peak, done = memory_mb(), {}, threading.Event()

    def sample():
        while not done.is_set():
            for k, v in memory_mb().items():
                peak[k] = max(peak.get(k, 0), v)
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.time()
    A.annotate(tables.read_table(corpus), no_demos, get_preset("sentiment"), settings, "", 0, 0, str(out), total=rows)
    seconds = time.time() - started
    done.set()
    sampler.join()
    per_block = A.rows_per_block(rows, batch_size)
    return {"rows": rows, "max_blocks": max_blocks, "llm_batch_size": batch_size, "rows_per_block": per_block,
            "blocks": -(-rows // per_block), "parts": len(tables.table_files(out)), "seconds": round(seconds, 1),
            "driver_start_mb": start, "driver_peak_mb": peak,
            "private_growth_mb": peak["private"] - start["private"], "rss_growth_mb": peak["rss"] - start["rss"]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, action="append", help="corpus size; repeat (default 100000 and 1000000)")
    parser.add_argument("--max-blocks", type=int, default=None, help="blocks per stage at most; 0: one per engine batch")
    parser.add_argument("--batch-size", type=int, default=512, help="llm.batch_size (scale.py's)")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # internal: one size, result written here
    args = parser.parse_args(argv)
    import freeal_ray.annotation as A

    cap = A.MAX_BLOCKS_PER_STAGE if args.max_blocks is None else args.max_blocks
    if args.one:
        args.one.write_text(json.dumps(run_one(args.rows[0], cap, args.batch_size)))
        return
    path = ROOT / "bench" / "results" / "annotate-driver.json"
    runs = json.loads(path.read_text())["runs"] if path.exists() else []
    for rows in sorted(args.rows or [100_000, 1_000_000]):
        scratch = ROOT / "bench" / "work" / "annotate-driver.json"
        stop_ray()
        subprocess.run([sys.executable, __file__, "--rows", str(rows), "--max-blocks", str(cap),
                        "--batch-size", str(args.batch_size), "--one", str(scratch)], check=True)
        result = json.loads(scratch.read_text())
        print(json.dumps(result))
        runs = [r for r in runs if (r["rows"], r["max_blocks"], r["llm_batch_size"]) != (rows, cap, args.batch_size)]
        runs.append(result)
    stop_ray()
    runs.sort(key=lambda r: (r["llm_batch_size"], r["max_blocks"], r["rows"]))
    path.write_text(json.dumps({"runs": runs, "machine": "2 cores, 24 GiB, no GPU", "engine": "instant (no model)"},
                               indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
