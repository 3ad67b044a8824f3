"""The run summary (printed) and report (Markdown + plots of what changed per round)."""

from __future__ import annotations

from pathlib import Path

_COLUMNS = [
    ("llm_acc", "LLM labels acc"),
    ("slm_acc", "SLM acc"),
    ("final_acc", "final labels acc"),
    ("llm_f1", "LLM tags entity F1"),
    ("slm_f1", "SLM entity F1"),
    ("final_f1", "final tags entity F1"),
    ("slm_agreement", "SLM agrees with labels"),
    ("clean_fraction", "clean share"),
    ("clean_precision", "clean precision"),
    ("noisy_precision", "noisy rows wrong (vs gold)"),
    ("noisy_rows", "rows re-asked"),
    ("kept_previous", "re-asked, kept (LLM less sure)"),
    ("fixed", "labels fixed (vs gold)"),
    ("broken", "labels broken (vs gold)"),
    ("added_rows", "fresh rows asked"),
    ("annotated_rows", "rows the LLM labelled"),
    ("slm_labelled_rows", "rows the SLM labelled"),
    ("changed", "labels changed"),
    ("llm_calls", "LLM calls"),
    ("prompt_tokens", "prompt tokens"),
    ("prompts_trimmed", "prompts trimmed to fit llm.max_model_len"),
    ("confidence_unknown", "answers of unknown confidence (no log-probs)"),
]
_SHOWN_WHEN_NONZERO = {"prompts_trimmed", "confidence_unknown"}


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if value <= 1.0 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def rounds_table(manifest: dict) -> str:
    rounds = manifest.get("rounds", {})
    shown = [(k, name) for k, name in _COLUMNS
             if any((m.get(k) if k in _SHOWN_WHEN_NONZERO else k in m) for m in rounds.values())]
    lines = ["| round | " + " | ".join(name for _, name in shown) + " |", "|---" * (len(shown) + 1) + "|"]
    for r in sorted(rounds, key=int):
        lines.append(f"| {r} | " + " | ".join(_fmt(rounds[r].get(k)) for k, _ in shown) + " |")
    return "\n".join(lines)


def summary(manifest: dict, output: Path) -> str:
    stages = manifest.get("stages", {})
    seconds = sum(s.get("seconds", 0) for s in stages.values())
    ingest = stages.get("ingest", {})
    calls = sum(m.get("llm_calls", 0) for m in manifest.get("rounds", {}).values())
    calls += sum(s.get("llm_calls", 0) for name, s in stages.items() if name.startswith("evolve-"))  # EvoKD's own
    return "\n".join(
        [
            f"freeal_ray run in {output}",
            f"rows: {ingest.get('rows', '?')} labelled, {ingest.get('quarantined', 0)} quarantined; "
            f"LLM calls: {calls}; stage time: {seconds:.0f} s",
            "",
            rounds_table(manifest),
            *[f"round {r} stopped the run: {m['stopped']}" for r, m in sorted(manifest.get("rounds", {}).items()) if "stopped" in m],
            "",
            f"labels: {output / 'labels'}   SLM: {output / 'slm' if (output / 'slm').exists() else 'none (no round ran)'}   "
            f"report: {output / 'report.md'}",
        ]
    )


def plot_rounds(manifest: dict, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = manifest.get("rounds", {})
    if not rounds:
        return None
    xs = sorted(int(r) for r in rounds)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for key, name in _COLUMNS[:8]:  # quality (accuracy or entity F1), SLM agreement, the clean share
        ys = [rounds[str(x)].get(key) for x in xs]
        if any(y is not None for y in ys):
            ax1.plot(xs, [float("nan") if y is None else y for y in ys], marker="o", label=name)
    ax1.set(xlabel="round", title="label quality per round (needs corpus.gold_column)", ylim=(0, 1.02))
    if ax1.get_lines():
        ax1.legend(loc="lower right")
    ax1.set_xticks(xs)
    ax2.bar([x - 0.2 for x in xs], [rounds[str(x)].get("llm_calls", 0) for x in xs], width=0.4, label="LLM calls")
    ax2.bar([x + 0.2 for x in xs], [rounds[str(x)].get("changed", 0) for x in xs], width=0.4, label="labels changed")
    ax2.set(xlabel="round", title="LLM work and label changes per round")
    ax2.set_xticks(xs)
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(output: Path, manifest: dict) -> Path:
    plot = plot_rounds(manifest, output / "rounds.png")
    stages = manifest.get("stages", {})
    lines = [
        "# freeal_ray run report",
        "",
        summary(manifest, output),
        "",
        "![per-round metrics](rounds.png)" if plot else "",
        "",
        "## Stages",
        "",
        "| stage | seconds | details |",
        "|---|---|---|",
    ]
    for name, info in stages.items():
        details = ", ".join(f"{k}={_fmt(v)}" for k, v in info.items() if k not in ("seconds", "finished", "gmm"))
        lines.append(f"| {name} | {info.get('seconds', 0):.1f} | {details} |")
    from freeal_ray.evokd_report import evolve_section

    lines += ["", *evolve_section(output, manifest)]
    path = output / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
