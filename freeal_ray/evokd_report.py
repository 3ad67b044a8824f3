"""EvoKD's part of the report: per round what the LLM wrote and kept, how the student did, the
LLM's analysis in its own words, a plot of per-class F1 by round and the generated examples."""

from __future__ import annotations

from pathlib import Path

from freeal_ray import tables
from freeal_ray.evokd import per_round_table

_COLUMNS = [("training_rows", "training rows"), ("written", "written"), ("kept", "kept"), ("relabelled", "labelled otherwise"),
            ("copied", "copies"), ("repeated", "repeats"), ("probe_acc", "student on the new batch"),
            ("hard_acc", "on hard ones"), ("easy_acc", "on easy ones"), ("slm_acc", "student acc (gold)"),
            ("slm_macro_f1", "student macro-F1 (gold)")]
SHOWN_EXAMPLES = 40


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def plot_class_f1(evolve: dict, path: Path) -> Path | None:
    """Per-class F1 by round: against gold where the corpus had it, else on each round's probe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gold = per_round_table(evolve)
    table = gold if not gold.empty else per_round_table({r: {"class_f1": m.get("probe_class_f1", {})} for r, m in evolve.items()})
    if table.empty:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for label in [c for c in table.columns if c != "round"]:
        ax.plot(table["round"], table[label], marker="o", label=label)
    ax.set(xlabel="EvoKD round", ylabel="F1", ylim=(0, 1.02),
           title="student's F1 per class" + (" (gold)" if not gold.empty else " (on each new batch)"))
    ax.set_xticks(list(table["round"]))
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def evolve_section(output: Path, manifest: dict) -> list[str]:
    evolve = manifest.get("evolve", {})
    if not evolve:
        return []
    rounds = sorted(evolve, key=int)
    shown = [(k, name) for k, name in _COLUMNS if any(k in evolve[r] for r in rounds)]
    lines = ["## EvoKD", "", "| round | " + " | ".join(n for _, n in shown) + " |", "|---" * (len(shown) + 1) + "|"]
    lines += [f"| {r} | " + " | ".join(_fmt(evolve[r].get(k)) for k, _ in shown) + " |" for r in rounds]
    plot = plot_class_f1(evolve, output / "evolve.png")
    lines += ["", "![per-class F1 by round](evolve.png)" if plot else "", "", "### The LLM's analysis of the student, per round", ""]
    lines += [f"**Round {r}** ({evolve[r].get('shown_wrong', 0)} wrong and {evolve[r].get('shown_right', 0)} right answers "
              f"shown): {evolve[r]['analysis'] or '(none asked)'}\n" for r in rounds if "analysis" in evolve[r]]
    examples = tables.read_frame(output / "evolve" / "examples")
    if len(examples):
        generated = examples[examples["origin"] == "evokd"]
        lines += ["### Generated examples", "",
                  f"{len(generated)} kept (all in `evolve/examples`, with the seeds); the first {min(SHOWN_EXAMPLES, len(generated))}:", "",
                  "| round | easy/hard | label | text |", "|---|---|---|---|"]
        lines += [f"| {row['round']} | {'hard' if row['hard'] else 'easy'} | {row['label']} | {str(row['text']).replace('|', '/')} |"
                  for _, row in generated.head(SHOWN_EXAMPLES).iterrows()]
    return lines
