"""Label-quality benchmarks on the public datasets in ../shared/data, one module each; this is their
common command line.

    python bench/quality.py mr-reference [--slm all-minilm-l6-v2] [--epochs 3]    (bench/mr_reference.py)
        The SLM half of FreeAL on the labels gpt-3.5-turbo gave MR's training rows in the FreeAL
        reference release: plain training, cleanlab's filter, the robust self-training and the
        gold-label ceiling, on the same labels, SLM and epoch budget.
    python bench/quality.py mr-refinery [--sample 200]                               (bench/mr_refinery.py)
        Re-asks the embedded LLM, with demos the robust SLM chose, about MR rows the SLM judged
        noisy. With `--pick least-believed` about the labelled rows the SLM believes least, with
        `--pick abstentions` about the rows the LLM gave no label.
    python bench/quality.py loop --benchmark sst2 --rows 400                         (bench/loop_quality.py)
        The whole loop with the embedded LLM on a training subset, against the zero-shot LLM.
    python bench/quality.py ner --benchmark conll03 --rows 200                       (bench/ner_quality.py)
        The NER loop on a training subset; the tagger also on test sentences.
    python bench/quality.py docs                                                     (bench/benchmarks_doc.py)
        Rewrite docs/benchmarks.md from the JSON results (no number is typed by hand).

Results go to bench/results/quality-<name>.json and .md. Datasets are read from ../shared/data
(or $FREEAL_RAY_DATA); a benchmark whose data is absent is skipped with a message.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loop_quality  # noqa: E402
import mr_reference  # noqa: E402
import mr_refinery  # noqa: E402
import ner_quality  # noqa: E402
from benchmarks_doc import write_docs  # noqa: E402

COMMANDS = {
    "mr-reference": (mr_reference, "the SLM half on MR's reference gpt-3.5 labels", mr_reference.run_mr_reference),
    "mr-refinery": (mr_refinery, "re-ask the embedded LLM about the MR rows the robust SLM judged noisy", mr_refinery.run_mr_refinery),
    "loop": (loop_quality, "the whole loop with the embedded LLM on a benchmark subset", loop_quality.run_loop),
    "ner": (ner_quality, "the NER loop with the embedded LLM on a CoNLL-03 or BC5CDR subset", ner_quality.run_ner),
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text, _) in COMMANDS.items():
        module.add_arguments(sub.add_parser(name, help=help_text))
    sub.add_parser("docs", help="rewrite docs/benchmarks.md from bench/results/")
    args = parser.parse_args(argv)
    if args.command == "docs":
        write_docs()
    else:
        COMMANDS[args.command][2](args)


if __name__ == "__main__":
    main()
