"""The example corpus the quickstart labels: support tickets, written here from templates, with
gold labels kept in a separate column for the quality check (the loop never reads them)."""

from __future__ import annotations

import json
import random
from pathlib import Path

TOPICS = {
    "billing": [
        "I was charged twice for my subscription this month",
        "my invoice shows a fee I never agreed to",
        "the refund for my cancelled order has not arrived",
        "why did my card get billed after I cancelled",
        "I need a copy of last month's receipt for my taxes",
        "the price on my bill is higher than the plan I chose",
        "my payment failed but the money left my bank account",
    ],
    "shipping": [
        "my package has been stuck in transit for ten days",
        "the courier left my parcel at the wrong address",
        "tracking says delivered but nothing came",
        "can I change the delivery address for my order",
        "the box arrived crushed and the item inside is broken",
        "my order still has not shipped after two weeks",
        "how long does express delivery take to Canada",
    ],
    "technical": [
        "the app crashes every time I open the settings page",
        "I get an error 500 when I upload a photo",
        "the website will not load on my phone browser",
        "sync stopped working after the latest update",
        "the device keeps disconnecting from wifi",
        "notifications do not show up on my tablet",
        "the export button does nothing when I click it",
    ],
    "account": [
        "I cannot log in even after resetting my password",
        "please delete my account and all my data",
        "how do I change the email address on my profile",
        "someone else seems to have access to my account",
        "I want to merge my two accounts into one",
        "the two-factor code never reaches my phone",
        "my username was changed without my permission",
    ],
}
OPENERS = ["Hi,", "Hello team,", "Hey there.", "Good morning,", "", "Urgent:", "Quick question:"]
CLOSERS = ["Thanks.", "Please help.", "Any update would be great.", "", "Regards, Sam", "This is frustrating!"]

TASK = {
    "name": "support-ticket",
    "labels": list(TOPICS),
    "instruction": (
        "Classify the customer support ticket by its topic: billing (charges, payments, refunds), "
        "shipping (delivery, parcels, couriers), technical (bugs, errors, crashes), or account "
        "(login, profile, access)."
    ),
    "input_name": "Ticket",
}


def write_example_corpus(folder: str | Path, rows: int = 200, seed: int = 7) -> Path:
    """Write example/tickets.jsonl and example/config.yaml; return the config path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    labels = list(TOPICS)
    with open(folder / "tickets.jsonl", "w") as out:
        for i in range(rows):
            label = labels[i % len(labels)]
            text = " ".join(x for x in (rng.choice(OPENERS), rng.choice(TOPICS[label]) + ".", rng.choice(CLOSERS)) if x)
            out.write(json.dumps({"ticket_id": f"T{i:05d}", "body": text, "true_topic": label}) + "\n")
    config = {
        "task": TASK,
        "corpus": {"path": str(folder / "tickets.jsonl"), "id_column": "ticket_id", "text_column": "body", "gold_column": "true_topic"},
        # Sized to finish in minutes on a laptop CPU and still be a whole FreeAL run: demo synthesis,
        # annotation, a trained SLM and one refinery (docs/benchmarks.md has what each lever costs).
        "llm": {"model": "qwen2.5-coder-0.5b"},
        "slm": {"epochs": 4, "warmup_epochs": 2},
        "loop": {"rounds": 1, "shots": 4, "synth_per_class": 6},
        "output": str(folder / "run"),
    }
    import yaml

    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
