"""The SLM half of FreeAL on the labels gpt-3.5-turbo gave MR's training rows (FreeAL's reference release):
plain training, cleanlab's filter, the robust self-training and the gold ceiling, on the same labels.

    python bench/mr_reference.py [--slm all-minilm-l6-v2] [--epochs 3] [--methods robust --rescore]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ modules import each other
from freeal_ray.config_sections import SLMConfig  # noqa: E402
from common import MR_LABELS, RESULTS, ROOT, load_split, machine, predict, quality, run_alone, write_result  # noqa: E402
from freeal_ray.noise import split_clean_noisy  # noqa: E402
from freeal_ray.task import label_indices  # noqa: E402


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
    from freeal_ray.ray_cluster import ensure_ray

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


def add_arguments(parser) -> None:
    parser.add_argument("--slm", default="all-minilm-l6-v2", help="SLM preset or local HF folder")
    parser.add_argument("--methods", default="plain,cleanlab,robust,gold", help="comma-separated subset to run")
    parser.add_argument("--epochs", type=int, default=3, help="epoch budget of every method")
    parser.add_argument("--warmup-epochs", type=int, default=1, help="robust training: plain epochs before the GMM split")
    parser.add_argument("--label-floor", type=float, default=SLMConfig.label_floor,
                    help="robust training: least weight of the given label in a noisy row's target (slm.label_floor)")
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--folds", type=int, default=2, help="cleanlab: folds for out-of-sample probabilities")
    parser.add_argument("--probe-epochs", type=int, default=1, help="cleanlab: epochs of each fold's model")
    parser.add_argument("--limit", type=int, default=None, help="use a random sample of this many training rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rescore", action="store_true",
                    help="score the checkpoints already in bench/work/mr-reference again instead of retraining them")


if __name__ == "__main__":
    run_alone("the SLM half on MR's reference gpt-3.5 labels", add_arguments, run_mr_reference)
