"""The refinery on MR: re-ask the embedded LLM, with demos the robust SLM chose, about rows the SLM
judged noisy (--pick least-believed: the labels it believes least; abstentions: rows with no label).

    python bench/mr_refinery.py [--sample 200] [--pick random]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ modules import each other
from mr_reference import belief_in_given, gmm_clean  # noqa: E402
from common import DATA, ROOT, command_line, load_split, machine, predict, read_result, run_alone, write_result  # noqa: E402


# ---- the refinery on MR's noisy rows ------------------------------------------------------------


def run_mr_refinery(args) -> None:
    """The loop's refinery on MR rows the robust SLM judged noisy, with the embedded LLM.

    Demos are chosen as the loop chooses them (clean rows where the SLM agrees with the given
    label, per class the lowest-loss R%, then k-medoids on SLM embeddings); each noisy row gets its
    nearest `shots` of them. A random sample of the noisy rows keeps the run within budget on a CPU;
    the zero-shot LLM is asked the same rows for comparison.
    """
    from freeal_ray import tables
    from freeal_ray.annotation import annotate
    from freeal_ray.config import load_config
    from freeal_ray.loop import FreeALRun
    from freeal_ray.ray_cluster import ensure_ray
    from freeal_ray.selection import select_demos

    train = load_split("mr", "train")
    if train is None:
        return
    checkpoint = Path(args.checkpoint or ROOT / "bench" / "work" / "mr-reference" / args.slm / "robust")
    if not (checkpoint / "slm.json").exists():
        sys.exit(f"no SLM checkpoint in {checkpoint}: run `python bench/quality.py mr-reference --methods robust` first")
    ensure_ray()
    train = train.rename(columns={"label": "gold", "llm_label": "given"})
    train["id"] = train["id"].astype(str)
    scored = predict(checkpoint, train["text"], train["given"], columns=("pred", "probs", "loss", "embedding"))
    labelled = pd.notna(train["given"]).to_numpy()
    clean = gmm_clean(scored, labelled)
    rows = pd.concat([train, scored], axis=1)

    work = ROOT / "bench" / "work" / "mr-refinery" / f"{checkpoint.parent.name}-{checkpoint.name}-{args.pick}-{args.sample}"
    overrides = {"task": "sentiment", "output": str(work / "run"), "corpus.path": str(DATA / "mr" / "train.jsonl"),
                 "llm.model": args.llm, "loop.seed": args.seed}
    config = load_config(None, {**overrides, **dict(kv.split("=", 1) for kv in args.set)})
    loop = config.loop
    agreeing = rows[clean & labelled & (rows["pred"] == rows["given"])].assign(label=lambda d: d["given"])
    demos = pd.concat([select_demos(g, loop.top_ratio, loop.demos_per_class, loop.medoid_sample_cap, loop.seed)
                       for _, g in agreeing.groupby("label")], ignore_index=True)
    if args.pick == "least-believed":
        # Every row asked is a row whose label may change, so the final accuracy is exact, not estimated.
        sample = rows[labelled].assign(belief=belief_in_given(rows, rows)[labelled]).nsmallest(args.sample, "belief")
        print(f"asking the LLM about the {len(sample)} labelled rows whose given label the SLM believes least "
              f"(SLM probability of it below {sample['belief'].max():.4f}) with {len(demos)} SLM-chosen demos")
    elif args.pick == "abstentions":
        sample = rows[~labelled].head(args.sample)
        print(f"asking the LLM about {len(sample)} of the {int((~labelled).sum())} rows gpt-3.5 abstained on, with {len(demos)} SLM-chosen demos")
    else:
        noisy = rows[~clean]  # as the loop does: the rows judged noisy and the abstentions
        sample = noisy.sample(n=min(args.sample, len(noisy)), random_state=args.seed)
        print(f"{len(noisy)} rows judged noisy ({int((~clean & ~labelled).sum())} of them abstentions); "
              f"asking the LLM about {len(sample)} with {len(demos)} SLM-chosen demos")

    run = FreeALRun(config)
    task, llm = run.task, run.ctx.llm()
    asked = {}
    for name, pool, shots in (("refined", demos, run.ctx.shots), ("zero_shot", demos.iloc[:0], 0)):
        folder = work / name
        started = time.time()
        annotate(ray_rows(sample), pool, task, llm, str(checkpoint), shots, 1, str(folder), total=len(sample))
        answers = tables.read_table(folder).to_pandas().set_index("id")
        asked[name] = (answers["label"].reindex(sample["id"]).to_numpy(object), time.time() - started,
                       int(answers["prompt_tokens"].sum()))
    if args.pick != "random":
        write_result(f"mr-refinery-{args.pick}", *asked_rows_summary(rows, labelled, sample, asked, demos, run.ctx.shots, args, checkpoint))
    else:
        write_result("mr-refinery", *refinery_summary(rows, clean, labelled, sample, asked, demos, run.ctx.shots, args, checkpoint))


def ray_rows(frame: pd.DataFrame):
    import ray

    return ray.data.from_pandas(frame[["id", "text"]].reset_index(drop=True))


def checkpoint_label_floor(checkpoint: Path, slm: str) -> float | None:
    """The label floor the mr-reference run trained this checkpoint with (None when unknown)."""
    methods = (read_result("mr-reference") or {}).get("by_slm", {}).get(slm, {}).get("methods", {})
    return methods.get(checkpoint.name, {}).get("label_floor")


KEEP = "keep: the given label (the SLM's on abstentions)"


def asked_rows_summary(rows, labelled, sample, asked, demos, shots, args, checkpoint) -> tuple[dict, str]:
    """Exact final-label accuracy when only the asked rows may change: to the refinery's answer,
    the zero-shot answer, the SLM's label, or the refinery's answer only where it agrees with the SLM.
    Every other row keeps its given label (an abstention the SLM's), as does an abstaining answer."""
    gold, given, pred = (rows[c].to_numpy(object) for c in ("gold", "given", "pred"))
    at = rows.index.get_indexer(sample.index)
    refined, zero_shot = asked["refined"][0], asked["zero_shot"][0]
    base = np.where(labelled, given, pred)

    def final_with(new: np.ndarray) -> dict:
        final = base.copy()
        final[at] = np.where(pd.notna(new), new, base[at])
        return {"acc": float((final == gold).mean()), "acc_labelled": float((final == gold)[labelled].mean()),
                "on_asked": float((final[at] == gold[at]).mean()), "changed": int((final[at] != base[at]).sum())}

    policies = {KEEP: final_with(base[at])}
    if labelled[at].any():
        policies["SLM label"] = final_with(pred[at])
    policies.update({"refinery answer": final_with(refined), "zero-shot answer": final_with(zero_shot),
                     "refinery answer where it agrees with the SLM": final_with(np.where(refined == pred[at], refined, None))})
    summary = {
        "slm_checkpoint": str(checkpoint.relative_to(ROOT)) if checkpoint.is_relative_to(ROOT) else str(checkpoint),
        "slm_label_floor": checkpoint_label_floor(checkpoint, args.slm),
        "llm": args.llm, "rows": len(rows), "pick": args.pick, "asked": len(sample),
        "asked_belief_below": float(sample["belief"].max()) if "belief" in sample else None,
        "asked_abstentions": int((~labelled[at]).sum()),
        "kept_right_on_asked": float((base[at] == gold[at]).mean()), "demos": len(demos), "shots": shots,
        "given_acc": float((given == gold).mean()), "given_acc_labelled": float((given == gold)[labelled].mean()),
        "policies": policies,
        "seconds": {name: round(t) for name, (_, t, _) in asked.items()},
        "prompt_tokens": {name: tok for name, (_, _, tok) in asked.items()},
        "machine": machine(), "command": command_line(),
    }
    fmt = lambda v: f"{v:.4f}"  # noqa: E731
    if summary["asked_belief_below"] is not None:
        which = (f"The {len(sample)} of MR's {len(rows)} training rows whose given label the robust SLM ({checkpoint.name}) "
                 f"believes least (its probability of that label up to {summary['asked_belief_below']:.4f}); the given "
                 f"label is right on {fmt(summary['kept_right_on_asked'])} of them.")
    else:
        which = (f"The {len(sample)} of MR's {len(rows)} training rows on which gpt-3.5-turbo abstained; the robust SLM "
                 f"({checkpoint.name}) is right on {fmt(summary['kept_right_on_asked'])} of them.")
    table = "\n".join([
        which + " Every other row keeps its label.\n",
        "| the asked rows take | accuracy on them | rows changed | final labels acc | on LLM-labelled rows |", "|---|---|---|---|---|",
        *[f"| {k} | {fmt(v['on_asked'])} | {v['changed']} | {fmt(v['acc'])} | {fmt(v['acc_labelled'])} |" for k, v in policies.items()],
        f"\nGiven labels: {fmt(summary['given_acc'])} overall, {fmt(summary['given_acc_labelled'])} on the LLM-labelled rows.\n",
    ])
    return summary, table


def refinery_summary(rows, clean, labelled, sample, asked, demos, shots, args, checkpoint) -> tuple[dict, str]:
    gold = sample["gold"].to_numpy(object)
    acc = lambda pred: float(np.mean(pred == gold))  # noqa: E731
    on_sample = {"given": acc(sample["given"].to_numpy(object)), "slm": acc(sample["pred"].to_numpy(object))}
    on_sample.update({name: acc(pred) for name, (pred, _, _) in asked.items()})
    refined = asked["refined"][0]
    # The refinery's answer where it gave one; an abstention keeps the row's label (or the SLM's).
    kept = np.where(pd.isna(sample["given"]), sample["pred"], sample["given"]).astype(object)
    on_sample["final"] = acc(np.where(pd.notna(refined), refined, kept))
    n, n_noisy = len(rows), int((~clean).sum())
    right_clean = int(((rows["given"] == rows["gold"]).to_numpy() & clean).sum())
    half_width = 1.96 * np.sqrt(on_sample["final"] * (1 - on_sample["final"]) / len(sample)) * n_noisy / n
    labelled_noisy = int((~clean & labelled).sum())
    lab_sample = pd.notna(sample["given"]).to_numpy()
    final_lab = float(np.mean((np.where(pd.notna(refined), refined, kept) == gold)[lab_sample])) if lab_sample.any() else 0.0
    summary = {
        "slm_checkpoint": str(checkpoint.relative_to(ROOT)) if checkpoint.is_relative_to(ROOT) else str(checkpoint),
        "slm_label_floor": checkpoint_label_floor(checkpoint, args.slm),
        "llm": args.llm, "rows": n, "noisy_rows": n_noisy, "noisy_labelled_rows": labelled_noisy,
        "sample": len(sample), "demos": len(demos), "shots": shots,
        "acc_on_sample": on_sample,
        "final_acc_labelled_on_sample": final_lab,
        # Clean rows keep the given label; noisy rows are estimated from the sample.
        "estimated_final_transductive_acc": (right_clean + on_sample["final"] * n_noisy) / n,
        "estimated_final_transductive_acc_ci95": half_width,
        "estimated_final_transductive_acc_labelled": (
            right_clean + final_lab * labelled_noisy) / max(int(labelled.sum()), 1),
        "given_acc": float((rows["given"] == rows["gold"]).mean()),
        "given_acc_labelled": float((rows["given"] == rows["gold"])[labelled].mean()),
        "seconds": {name: round(t) for name, (_, t, _) in asked.items()},
        "prompt_tokens": {name: tok for name, (_, _, tok) in asked.items()},
        "machine": machine(),
        "command": command_line(),
    }
    fmt = lambda v: f"{v:.4f}"  # noqa: E731
    table = "\n".join([
        f"{n_noisy} of MR's {n} training rows judged noisy by the robust SLM ({checkpoint.name}); "
        f"{len(sample)} of them, drawn at random, re-asked with {len(demos)} SLM-chosen demos.\n",
        "| labels of the sampled noisy rows | accuracy |", "|---|---|",
        *[f"| {k.replace('_', ' ')} | {fmt(v)} |" for k, v in on_sample.items()],
        f"\nEstimated final-label accuracy over all {n} rows (clean rows keep the given label): "
        f"{fmt(summary['estimated_final_transductive_acc'])} ± {fmt(half_width)} (given: {fmt(summary['given_acc'])}); "
        f"on the LLM-labelled rows {fmt(summary['estimated_final_transductive_acc_labelled'])} "
        f"(given: {fmt(summary['given_acc_labelled'])}).\n",
    ])
    return summary, table


def add_arguments(parser) -> None:
    parser.add_argument("--slm", default="all-minilm-l6-v2", help="the SLM whose mr-reference robust checkpoint to use")
    parser.add_argument("--checkpoint", default=None, help="an SLM folder instead (default: bench/work/mr-reference/SLM/robust)")
    parser.add_argument("--sample", type=int, default=200, help="rows to re-ask")
    parser.add_argument("--pick", choices=["random", "least-believed", "abstentions"], default="random",
                     help="random: drawn from the rows judged noisy, as the loop sends them; least-believed: the "
                          "labelled rows whose given label the SLM gives the lowest probability; abstentions: the "
                          "rows with no given label (loop.refine_rows=abstentions)")
    parser.add_argument("--llm", default="qwen2.5-coder-1.5b")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="any config override")


if __name__ == "__main__":
    run_alone("re-ask the embedded LLM about the MR rows the robust SLM judged noisy", add_arguments, run_mr_refinery)
