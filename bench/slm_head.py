"""Which classifier head the SLM should have: the loop's (mean pooling, one linear layer) or the
one Hugging Face's AutoModelForSequenceClassification gives the same encoder (the first token
through its pooler), which any transformers pipeline loads with no freeal_ray code.

Both train the same way on MR's real noisy labels (gpt-3.5's, `llm_label`, 89.6% right) with plain
cross-entropy, and are scored against gold on MR's test split: the head alone decides the gap.

    python bench/slm_head.py --rows 2000 --test-rows 1000 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from common import RESULTS, load_split, machine

from freeal_ray.embedding import mean_pool
from freeal_ray.model_store import resolve_encoder
from freeal_ray.slm import SLMClassifier, tokenize

LABELS = ["negative", "positive"]


class MeanPoolHead(torch.nn.Module):
    """The loop's head before the SLM became AutoModelForSequenceClassification: the mean-pooled
    last layer, dropout, one linear layer; same call shape as SLMClassifier."""

    def __init__(self, path: str, n: int):
        super().__init__()
        from transformers import AutoModel

        self.encoder = AutoModel.from_pretrained(path)
        self.dropout = torch.nn.Dropout(0.1)
        self.head = torch.nn.Linear(self.encoder.config.hidden_size, n)

    def forward(self, ids, mask):
        pooled = mean_pool(self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state, mask)
        return self.head(self.dropout(pooled)), pooled, None


def fit_and_score(head: str, encoder: str, train, test, seed: int, epochs: int, batch: int, lr: float) -> dict:
    from transformers import AutoTokenizer

    torch.manual_seed(seed)
    model = MeanPoolHead(encoder, len(LABELS)) if head == "mean-pool" else SLMClassifier(encoder, LABELS)
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    optim = torch.optim.AdamW(model.parameters(), lr=lr)
    y = torch.tensor([LABELS.index(v) for v in train["llm_label"]])
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for rows in np.array_split(rng.permutation(len(train)), max(1, len(train) // batch)):
            ids, mask = tokenize(tokenizer, train["text"].iloc[rows], 64)
            loss = torch.nn.functional.cross_entropy(model(ids, mask)[0], y[rows])
            optim.zero_grad()
            loss.backward()
            optim.step()
    fit_s = time.perf_counter() - started
    model.eval()
    preds = []
    with torch.inference_mode():
        for start in range(0, len(test), 128):
            ids, mask = tokenize(tokenizer, test["text"].iloc[start : start + 128], 64)
            preds += model(ids, mask)[0].argmax(1).tolist()
    acc = float(np.mean(np.array(preds) == np.array([LABELS.index(v) for v in test["label"]])))
    return {"head": head, "seed": seed, "acc": round(acc, 4), "fit_s": round(fit_s, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--test-rows", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=5e-5)
    args = parser.parse_args()
    train, test = load_split("mr", "train"), load_split("mr", "test")
    if train is None or test is None:
        return
    train = train[train["llm_label"].isin(LABELS)].sample(args.rows, random_state=0)
    test = test.sample(min(args.test_rows, len(test)), random_state=0)
    encoder = str(resolve_encoder("all-minilm-l6-v2"))
    runs = []
    for seed in args.seeds:
        for head in ("mean-pool", "standard"):
            runs.append(fit_and_score(head, encoder, train, test, seed, args.epochs, 32, args.lr))
            print(runs[-1], flush=True)
    summary = {h: round(float(np.mean([r["acc"] for r in runs if r["head"] == h])), 4) for h in ("mean-pool", "standard")}
    result = {"machine": machine(), "train_rows": args.rows, "test_rows": len(test), "epochs": args.epochs,
              "lr": args.lr, "labels": "mr llm_label (gpt-3.5, 89.6% right)", "mean_acc": summary, "runs": runs}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "slm-head.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
