"""`freeal-ray estimate` against what runs then spent.

For each finished run folder given, the estimate is made from the run's own config (its manifest
holds it) with nothing else the run learnt: real prompts are built for a sample of its rows and
counted with the annotator's tokenizer. It is set against the LLM calls and prompt tokens the run
spent, once with the default refinery assumption (--refine-share) and once with the share the
run's noisy split actually re-asked, which separates the assumption's error from the counting's.

    python bench/estimate.py --runs bench/work/mr-2000/run-2000-0.5b bench/work/medabs-100/run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from common import RESULTS, machine  # noqa: F401  (common puts the project on sys.path)

from freeal_ray.config import from_dict
from freeal_ray.estimate import compare, estimate


def refined_share(manifest: dict) -> float:
    """The share of annotated rows the run's refineries re-asked, on average per round."""
    rounds = manifest["rounds"]
    asked = [m.get("noisy_rows", 0) for r, m in rounds.items() if r != "0"]
    return sum(asked) / max(len(asked), 1) / max(manifest["stages"]["ingest"]["rows"], 1)


def one(folder: Path, share: float, sample: int) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    config = dataclasses.replace(from_dict(manifest["config"]), output=str(folder))
    result = {"run": str(folder), "rows": manifest["stages"]["ingest"]["rows"], "llm": manifest["annotator"]["model"]}
    for name, assumed in (("assumed", share), ("actual_share", refined_share(manifest))):
        est = estimate(config, sample=sample, refine_share=assumed)
        result[name] = {**compare(folder, manifest), "tokens_per_call": est["tokens_per_call"], "stages": est["stages"]}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, help="finished run folders")
    parser.add_argument("--refine-share", type=float, default=0.1)
    parser.add_argument("--sample", type=int, default=200)
    args = parser.parse_args()
    runs = [one(Path(folder), args.refine_share, args.sample) for folder in args.runs]
    first = runs[0]["assumed"]
    out = {"machine": machine(), "refine_share_assumed": args.refine_share, "runs": runs,
           # the first run's figures at top level: the default assumption, as a user would run it
           "prompt_tokens_estimated": first["prompt_tokens_estimated"], "prompt_tokens_actual": first["prompt_tokens_actual"],
           "prompt_tokens_rel_error": first["prompt_tokens_rel_error"]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "estimate.json").write_text(json.dumps(out, indent=2) + "\n")
    for run in runs:
        for name in ("assumed", "actual_share"):
            r = run[name]
            print(f"{run['run']} ({name} refine share {r['refine_share_assumed']:.3f}): prompt tokens estimated "
                  f"{r['prompt_tokens_estimated']:,} vs spent {r['prompt_tokens_actual']:,} ({r['prompt_tokens_rel_error']:+.1%}); "
                  f"LLM calls {r['llm_calls_estimated']:,} vs {r['llm_calls_actual']:,}")


if __name__ == "__main__":
    main()
