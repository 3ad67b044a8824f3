"""EvoKD's functional core (Liu et al., LREC-COLING 2024), on plain arrays and strings: which of the
student's answers the LLM is shown, the prompts that ask it for an analysis and for new examples,
and which written examples are kept. The stages (stages/evolve_*.py) run these with the engines.

A round: the LLM reads the student's wrong and right answers and its F1 per class, says in words
what the student is weak at, writes *hard* examples aimed at that and *easy* ones it handles
(against forgetting); a separate, constrained labelling call labels them, and a text the call
labels otherwise than it was written for, or that repeats a corpus row or an earlier example, is
dropped. The student then trains on the seeds and every batch kept so far.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from freeal_ray.task import Task


def shown_samples(labels: Sequence, preds: Sequence, confidence: Sequence[float], k: int,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of up to `k` rows the student got wrong, its surest mistakes first (what it has
    learnt wrong, not coin flips), and up to `k` it got right, drawn at random. Rows with no
    reference label are never shown."""
    labels, preds = np.asarray(labels, dtype=object), np.asarray(preds, dtype=object)
    known = np.array([isinstance(v, str) for v in labels], dtype=bool)
    wrong = np.flatnonzero(known & (labels != preds))
    right = np.flatnonzero(known & (labels == preds))
    wrong = wrong[np.argsort(-np.asarray(confidence, dtype=float)[wrong], kind="stable")][:k]
    right = np.random.default_rng(seed).permutation(right)[:k]
    return wrong, np.sort(right)


def class_f1(labels: Sequence, preds: Sequence, classes: Sequence[str]) -> dict[str, float]:
    """The student's F1 per class against reference labels (rows with none left out)."""
    from sklearn.metrics import f1_score

    pairs = [(g, str(p)) for g, p in zip(labels, preds) if isinstance(g, str)]
    if not pairs:
        return {c: 0.0 for c in classes}
    gold, pred = zip(*pairs)
    scores = f1_score(gold, pred, labels=list(classes), average=None, zero_division=0.0)
    return {c: float(s) for c, s in zip(classes, scores)}


def writing_plan(groups: Sequence[str], wrong_labels: Sequence[str], wrong_preds: Sequence[str], f1: dict[str, float],
                 batch: int, hard_share: float, seed: int, tried: dict[str, int] | None = None,
                 kept_share: dict[str, float] | None = None) -> list[tuple[str, bool]]:
    """(group, hard) for each example of a batch; a group is a class, or for NER the entity type a
    sentence must name. Hard examples go to the groups the student gets wrong, in proportion to its
    mistakes there (a confused pair counts for both sides: the reference's group fully, the one it
    said by half), or its weakest groups by F1 when it made none, each weighed by the share of that
    group's earlier examples the labelling call kept (`kept_share`, 1 where unknown). Easy ones,
    which guard against forgetting, go to the groups with the fewest examples written for them so
    far (`tried`, seeds included, counting this batch's hard ones)."""
    rng = np.random.default_rng(seed)
    n_hard = int(round(batch * hard_share))
    weight = {c: 0.0 for c in groups}
    for g in wrong_labels:
        if g in weight:
            weight[g] += 1.0
    for p in wrong_preds:
        if p in weight:
            weight[p] += 0.5
    if not any(weight.values()):
        weight = {c: 1.0 - f1.get(c, 0.0) + 1e-3 for c in groups}
    # Where the labelling call rejects what the writer meant, the student's confusion is the LLM's
    # too: hard examples aimed there are mostly dropped, and the ones kept carry the LLM's reading
    # (TREC at 1.5B: 8 of 17 questions written as *human* labelled *entity*).
    p = np.array([weight[c] * (kept_share or {}).get(c, 1.0) for c in groups], dtype=float)
    hard = [str(c) for c in rng.choice(list(groups), size=n_hard, p=p / p.sum())] if n_hard and p.sum() > 0 else []
    # Easy ones balance what is written, not what was kept: filling the group with the fewest kept
    # examples chases the one the labelling call keeps rejecting (TREC at 0.5B, rounds 2-4: 27 of 72
    # easy examples kept, against 117 of 214 for static synthesis, which writes each class alike).
    count = {c: (tried or {}).get(c, 0) + hard.count(c) for c in groups}
    order = {c: i for i, c in enumerate(rng.permutation(list(groups)))}  # ties: no group always first
    easy = []
    for _ in range(batch - len(hard)):
        fewest = min(groups, key=lambda c: (count[c], order[c]))
        easy.append(fewest)
        count[fewest] += 1
    return [(c, True) for c in hard] + [(c, False) for c in easy]


def _system(task: Task) -> str:
    words = ", ".join(task.word(c) for c in task.labels)
    return f"You help train a small text classifier. Its task: {task.instruction} The labels: {words}."


def _line(text: str, cap: int = 300) -> str:
    return " ".join(str(text).split())[:cap]


def analysis_messages(task: Task, wrong: Sequence[tuple[str, str, str]], right: Sequence[tuple[str, str]],
                      f1: dict[str, float]) -> list[dict]:
    """Ask for the student's weaknesses in words, from its mistakes (text, true label, its answer),
    some right answers (text, label) and its F1 per class."""
    parts = ["The classifier got these wrong:"] if wrong else ["The classifier made no mistake on the texts it was tested on."]
    parts += [f"- {task.input_name}: {_line(t)}\n  True label: {task.word(g)}. The classifier said: {task.word(p)}."
              for t, g, p in wrong]
    if right:
        parts += ["It got these right:", *[f"- {task.input_name}: {_line(t)}\n  Label: {task.word(g)}." for t, g in right]]
    parts.append("Its F1 score per label: " + ", ".join(f"{task.word(c)} {v:.2f}" for c, v in f1.items()) + ".")
    parts.append("In three or four sentences, say what the classifier is weak at: which labels it confuses, and "
                 "which kinds of wording or topics trip it up. Do not repeat the examples.")
    return [{"role": "system", "content": _system(task)}, {"role": "user", "content": "\n".join(parts)}]


# A small LLM shown texts "of the kind to write" writes one of them back, which is then dropped as a
# copy: the lead says they are not to be repeated.
STYLE_LEAD = "Texts of the kind to write (do not repeat them; write a new one):"
WEAK_LEAD = "What the classifier is weak at:"


def confused_with(plan: Sequence[tuple[str, bool]], confusions: Sequence[Sequence[str]],
                  seed: int) -> list[tuple[str, str] | None]:
    """Per example of `plan`, for a hard one of group X (a class; for NER an entity type, with "O" on
    the side of a mistake that has no entity): one of the student's mistakes (reference, answer)
    that involve X, drawn at random (X taken for Y, or Y taken for X); None for easy ones and where
    no mistake involves X. A hard prompt names it: a small writer given only the analysis
    writes about the task instead of a text (AG News at 0.5B: "The article is clearly business, but
    the classifier got wrong."), and its hard examples were no harder for the student than its
    easy ones."""
    rng = np.random.default_rng(seed)
    out: list[tuple[str, str] | None] = []
    for group, hard in plan:
        pairs = [(str(a), str(b)) for a, b in confusions if group in (a, b) and a != b]
        out.append(pairs[rng.integers(len(pairs))] if hard and pairs else None)
    return out


def writing_messages(task: Task, analysis: str, label: str, hard: bool, style: Sequence[str],
                     confusion: Sequence[str] | None = None) -> list[dict]:
    """Ask for one new text of `label`: a hard one aimed at the analysed weakness (where a mistake
    of the student's involving `label` is given, as (reference, answer): one that has something of
    the other class, either way round), or an easy, typical one; `style` shows a few texts of the kind to write. In a
    hard prompt the analysis comes first and the texts after it, so the writer reads real texts
    between the talk about the classifier and its own answer."""
    shown = f"{STYLE_LEAD}\n" + "".join(f"{task.input_name}: {_line(t, 200)}\n" for t in style) + "\n" if style else ""
    x, word = task.input_name.lower(), task.word(label)
    if hard and confusion:
        # Either way round the text is one of `label` near the other class. Saying what the classifier
        # does ("it takes one like it for tech") made the 0.5B writer write that back as its text.
        other = confusion[1] if confusion[0] == label else confusion[0]
        ask = f"Write one new {x} whose label is clearly {word}, though it has something of {task.word(other)} about it."
    elif hard:
        ask = f"Write one new {x} whose label is clearly {word}, but of the kind the classifier gets wrong."
    else:
        ask = f"Write one new, typical {x} whose label is clearly {word}."
    lead = f"{WEAK_LEAD}\n{analysis.strip()}\n\n" if hard else ""
    content = lead + shown + ask + " Write only the text, on one line."
    return [{"role": "system", "content": _system(task)}, {"role": "user", "content": content}]


def without_quotes(analysis: str, shown: Sequence[str], n: int = 4) -> str:
    """The analysis with every run of `n` or more words it shares with a shown text cut out (and
    the quote marks around it): a small LLM given its own analysis, quotes and all, in the hard
    prompts writes the quoted rows back, and a copy is dropped. Kept in the manifest as written."""
    grams = {g for t in shown for g in _ngrams(text_key(t).split(), n)}
    words = list(re.finditer(r"\w+", analysis))
    cut = np.zeros(len(words), dtype=bool)
    for i in range(len(words) - n + 1):
        if tuple(w.group().lower() for w in words[i:i + n]) in grams:
            cut[i:i + n] = True
    if not cut.any():
        return analysis
    pieces, last = [], 0
    for i in np.flatnonzero(cut & ~np.r_[False, cut[:-1]]):  # the first word of each cut run
        j = i
        while j + 1 < len(words) and cut[j + 1]:
            j += 1
        pieces.append(analysis[last:words[i].start()].rstrip(" \"'“‘") + " …")
        last = words[j].end()
        while last < len(analysis) and analysis[last] in "\"'”’.?!":
            last += 1
    return "".join(pieces) + analysis[last:]


def _ngrams(words: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def render(messages: list[dict], chat: Callable[[list[dict]], str] | None, lead: str = "") -> str:
    """Messages as the model reads them: its chat template, or plain text for a model with none,
    ending in `lead` (a plain prompt's cue to answer)."""
    if chat is not None:
        return chat(messages)
    return "\n\n".join(m["content"] for m in messages) + f"\n{lead}"


def strip_written(text: str, input_name: str) -> str:
    """A written text alone: chat models often lead with the field's name or wrap the text in quotes."""
    from freeal_ray.prompts import clean_synthetic

    text = clean_synthetic(text)
    for lead in (f"{input_name}:", "Text:"):
        if text.lower().startswith(lead.lower()):
            text = text[len(lead):].strip()
    return text.strip().strip('"“”').strip()


def text_key(text: str) -> str:
    """Words only, lower-cased: corpora like MR space their punctuation ("drags .")."""
    return " ".join(re.findall(r"\w+", str(text).lower()))


def copied(texts: Sequence[str], seen: set[str], min_chars: int = 20, prompt: str = "", echo_words: int = 6) -> np.ndarray:
    """Which texts copy one seen before (keys from text_key: a corpus row, a seed, an earlier
    example): whole, or a long piece of one, or one whole inside them; or echo the `prompt` (a
    run of `echo_words` words of it: a small writer answers with the analysis it was given)."""
    long_seen = [s for s in seen if len(s) >= min_chars]
    echo = _ngrams(text_key(prompt).split(), echo_words)
    out = np.zeros(len(texts), dtype=bool)
    for i, key in enumerate(map(text_key, texts)):
        out[i] = bool(key) and (key in seen or (len(key) >= min_chars and any(key in s for s in long_seen))
                                or any(s in key for s in long_seen) or bool(echo & _ngrams(key.split(), echo_words)))
    return out


def rewrite_copies(written: pd.DataFrame, prompt_tokens: Sequence, output_tokens: Sequence, seen: set[str],
                   write_again: Callable[[list[int]], tuple[pd.DataFrame, Sequence, Sequence]], prompt: str = ""):
    """`written` with each text that copies a seen one or echoes `prompt` (`copied`) written again once by `write_again(positions)`
    (which returns the new rows and their prompt and output tokens, as the first write did); the
    tokens of both writes are added up. Returns the frame, the tokens and how many were rewritten."""
    again = [int(i) for i in np.flatnonzero(copied(written["text"], seen, prompt=prompt))]
    if not again:
        return written, list(prompt_tokens), list(output_tokens), 0
    redo, more_prompt, more_output = write_again(again)
    columns = {c: list(written[c]) for c in written.columns}
    prompt_tokens, output_tokens = list(prompt_tokens), list(output_tokens)
    for j, i in enumerate(again):
        for c, values in columns.items():  # cell by cell: NER cells hold lists
            values[i] = redo[c].iloc[j]
        prompt_tokens[i] = None if prompt_tokens[i] is None or more_prompt[j] is None else prompt_tokens[i] + more_prompt[j]
        output_tokens[i] = None if output_tokens[i] is None or more_output[j] is None else output_tokens[i] + more_output[j]
    return pd.DataFrame(columns, index=written.index), prompt_tokens, output_tokens, len(again)


def keep_written(texts: Sequence[str], agrees: Sequence[bool], copies: Sequence[bool]) -> tuple[np.ndarray, dict]:
    """Which written examples join the training set, and counts of the dropped by reason: empty,
    a copy of a text seen before (`copies`, from `copied`), written twice in the batch, or one the
    labelling call did not confirm (`agrees` false: it labelled it otherwise than it was written
    for, or abstained; the task kind's evolve_agrees)."""
    keys = [text_key(t) for t in texts]
    keep = np.ones(len(texts), dtype=bool)
    counts = {"written": len(texts), "empty": 0, "copied": 0, "repeated": 0, "relabelled": 0}
    batch: set[str] = set()
    for i, key in enumerate(keys):
        if not key:
            reason = "empty"
        elif copies[i]:
            reason = "copied"
        elif key in batch:
            reason = "repeated"
        elif not agrees[i]:
            reason = "relabelled"
        else:
            batch.add(key)
            continue
        keep[i] = False
        counts[reason] += 1
    counts["kept"] = int(keep.sum())
    return keep, counts


def per_round_table(rounds: dict) -> pd.DataFrame:
    """Per-class F1 by round from the manifest's evolve rounds, for the report's plot."""
    rows = [{"round": int(r), **m.get("class_f1", {})} for r, m in rounds.items() if m.get("class_f1")]
    return pd.DataFrame(rows).sort_values("round") if rows else pd.DataFrame()
