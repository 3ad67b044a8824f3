"""The SLM's model card: `README.md` beside the weights (the Hugging Face convention), saying what
the model labels, what it was built from, how its training labels were made and how good they were."""

from __future__ import annotations

import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from freeal_ray.report import rounds_table


def _version() -> str:
    try:
        return version("freeal-ray")
    except PackageNotFoundError:
        return "unknown"


def _labels_made(manifest: dict) -> list[str]:
    config, stages = manifest["config"], manifest.get("stages", {})
    annotator = (manifest.get("annotator") or {}).get("model") or config["llm"]["model"]
    rounds = manifest.get("rounds", {})
    calls = sum(m.get("llm_calls", 0) for m in rounds.values())
    calls += sum(s.get("llm_calls", 0) for name, s in stages.items() if name.startswith("evolve-"))
    lines = []
    if "ingest" in stages:
        lines.append(f"- Corpus: {stages['ingest'].get('rows', '?')} rows ({stages['ingest'].get('quarantined', 0)} quarantined).")
    if config["loop"]["mode"] == "evokd":
        lines.append(f"- EvoKD: the student trained on {stages.get('evolve-seeds', {}).get('seeds', '?')} seed examples and the "
                     f"examples the LLM ({annotator}) wrote for it over {len(manifest.get('evolve', {})) - 1} rounds, "
                     "each labelled by a separate constrained call.")
    else:
        filled = (stages.get("finalize") or {}).get("slm_labelled")
        lines.append(f"- FreeAL: the LLM ({annotator}) labelled the rows in context with kNN demos; the SLM trained robustly on "
                     f"its labels over {len([r for r in rounds if r != '0'])} round(s), and the LLM re-labelled only the rows "
                     "the SLM judged noisy." + (f" The SLM labelled {filled} rows the LLM never saw." if filled else ""))
        if manifest.get("evolve"):
            lines.append(f"- Then {len(manifest['evolve']) - 1} EvoKD round(s): the LLM wrote examples aimed at the SLM's mistakes, "
                         "which trained this model beside FreeAL's labels.")
    lines.append(f"- LLM calls: {calls}.")
    return lines


def _aggregation(head: str) -> str:
    # The tagger is trained and read at each word's first sub-word, as this strategy reads it.
    return ', aggregation_strategy=\"first\"' if head == "tagger" else ""


def write_model_card(folder: str | Path, manifest: dict) -> Path:
    """`folder`/README.md for the checkpoint in `folder`, from the run's manifest."""
    import json

    meta = json.loads((Path(folder) / "slm.json").read_text())
    classes, head = meta["labels"], meta.get("kind", "classifier")
    config = manifest["config"]
    task = config["task"] if isinstance(config["task"], dict) else {"name": config["task"]}
    kind = "token-classification (BIO tags)" if head == "tagger" else "text-classification"
    has_gold = any("slm_acc" in m or "final_acc" in m or "final_f1" in m for m in manifest.get("rounds", {}).values())
    lines = [
        "---", "library_name: transformers", f"pipeline_tag: {kind.split(' ')[0]}", "tags: [freeal_ray]", "---", "",
        f"# {task.get('name', 'freeal_ray')} ({kind})", "",
        f"A small model trained with no human labels by freeal_ray {_version()} on "
        f"{datetime.date.today().isoformat()}, from the encoder `{config['slm']['model']}`.", "",
        f"Classes: {', '.join(classes)}.", "",
        f"Load it with transformers, `pipeline(\"{kind.split(' ')[0]}\", model=folder{_aggregation(head)})`, with no "
        "freeal_ray code; or with `freeal_ray.load_model(folder).predict(texts)`, or run `freeal-ray predict --model folder ...`.", "",
        "## How its training labels were made", "", *_labels_made(manifest), "",
        "## Quality per round", "",
        ("Against the corpus's gold column (used for this table only):" if has_gold else
         "No gold labels were given: *SLM agrees with labels* is how often the model reproduced the labels it trained on."), "",
        rounds_table(manifest), "",
    ]
    evolve = manifest.get("evolve", {})
    if any("slm_acc" in m for m in evolve.values()):
        lines += ["EvoKD rounds, the student against gold: " + ", ".join(
            f"round {r} {m['slm_acc']:.3f}" for r, m in sorted(evolve.items(), key=lambda x: int(x[0])) if "slm_acc" in m) + ".", ""]
    path = Path(folder) / "README.md"
    path.write_text("\n".join(lines))
    return path
