"""freeal-ray: label a text corpus with an LLM and a small model teaching each other (FreeAL).

  freeal-ray run --config my.yaml            label the corpus the config names (resumes if re-run)
  freeal-ray run --corpus data.jsonl --task sentiment --output runs/mr
  freeal-ray estimate --config my.yaml [--probe 20] [--price-in 0.15 --price-out 0.6]   calls, tokens, cost first
  freeal-ray predict --model runs/mr --input new.jsonl --output preds   label new text with a run's SLM
  freeal-ray export --model runs/mr --output mr-onnx   the SLM as ONNX (the slm/ folder is already transformers')
  freeal-ray example --run                   write the example corpus and label it
  freeal-ray config-reference [--schema]     every config field with its default (or the JSON schema)
  freeal-ray models [--prepare NAME]         list model presets; assemble one ahead of time
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from freeal_ray.errors import FreeALError

_SHORTCUTS = {
    "corpus": ("corpus.path", "corpus file or folder (.jsonl, .csv, .parquet)"),
    "text_column": ("corpus.text_column", "column holding the text (NER: token lists, or raw text)"),
    "id_column": ("corpus.id_column", "column holding a unique row id ('null' to derive ids from the text)"),
    "gold_column": ("corpus.gold_column", "column with true labels (NER: BIO tags), used only to report quality"),
    "task": ("task", "task preset: sentiment, subjectivity, question-type, news-topic, medical-topic; "
                     "NER: conll03, bc5cdr (with --text-column holding token lists or raw text)"),
    "output": ("output", "output folder; the same folder resumes a run"),
    "llm": ("llm.model", "annotator preset or HF model folder"),
    "slm": ("slm.model", "SLM encoder preset or HF model folder"),
    "rounds": ("loop.rounds", "refinement rounds"),
    "limit": ("corpus.limit", "use only the first N rows"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="freeal-ray", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log what each stage does, and show Ray's, vLLM's and torch's logs live instead of "
                             "writing them to OUTPUT/logs/run.log")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="run or resume the FreeAL loop",
        description="Run the FreeAL loop on a corpus. Settings come from --config, then the shortcut "
        "flags, then --set; see `freeal-ray config-reference` for every field.",
    )
    _config_arguments(run)

    estimate = sub.add_parser(
        "estimate", help="project a run's LLM calls, tokens and cost before it spends any",
        description="Project what `freeal-ray run` with the same settings will spend on the LLM, with no LLM call: "
        "the corpus is ingested as the run would (the run reuses it), real prompts are built for a sample of rows "
        "with demos as the loop shows them, their tokens counted with the annotator's own tokenizer, and calls, "
        "prompt and completion tokens projected per stage for the configured rounds and subset fraction. "
        "Written to OUTPUT/estimate.json; the run's manifest later sets it against what was spent.",
    )
    _config_arguments(estimate)
    estimate.add_argument("--sample", type=int, default=200, help="rows whose prompts are built and counted (default: 200)")
    estimate.add_argument("--refine-share", type=float, default=0.1,
                          help="assumed share of annotated rows each refinery re-asks; the run's noisy split decides it (default: 0.1)")
    estimate.add_argument("--probe", type=int, default=0, metavar="N",
                          help="time the engine on N sampled prompts (real LLM calls) and project the LLM time")
    estimate.add_argument("--price-in", type=float, help="price per million prompt tokens, for a cost estimate")
    estimate.add_argument("--price-out", type=float, help="price per million completion tokens")

    predict = sub.add_parser(
        "predict", help="label a corpus with a run's trained SLM (Ray Data, resumable)",
        description="Label every row of a corpus (.jsonl, .csv, .parquet or a folder of them) with the SLM a run "
        "trained. Writes OUTPUT/predictions (per row: label, confidence, probs; NER: tokens, tags, entities with "
        "character offsets) and OUTPUT/quarantine (rows that could not be read, with the reason). Re-running the "
        "same command skips the rows already predicted.",
    )
    predict.add_argument("--model", required=True, help="a run's output folder, or the slm/ folder inside it")
    predict.add_argument("--input", required=True, help="corpus file or folder")
    predict.add_argument("--output", required=True, help="where predictions/ and quarantine/ go")
    predict.add_argument("--text-column", default="text", help="column with the text (NER: text or token lists; default: text)")
    predict.add_argument("--id-column", default="id", help="column with a unique row id; 'null' derives ids from the text (default: id)")
    predict.add_argument("--batch-size", type=int, default=64, help="rows per SLM call (default: 64)")
    predict.add_argument("--use-gpu", choices=("auto", "true", "false"), default="auto",
                         help="one SLM actor per GPU; auto: when the cluster has or can scale to GPUs (default: auto)")

    export = sub.add_parser(
        "export", help="write a run's SLM as an ONNX model folder",
        description="Write the SLM a run trained as OUTPUT/model.onnx beside its config.json (id2label) and "
        "tokenizer, the layout Hugging Face's ONNX tools read. Inputs: input_ids and attention_mask of any batch "
        "size and length; output: logits (per text, or per token for NER). The export is checked against torch "
        "before the command returns. Needs the onnx extra: pip install 'freeal-ray[onnx]'. (The run's slm/ "
        "folder itself is already a transformers model folder: pipeline('text-classification', model=...).)",
    )
    export.add_argument("--model", required=True, help="a run's output folder, or the slm/ folder inside it")
    export.add_argument("--output", required=True, help="folder to write the ONNX model into")
    export.add_argument("--format", choices=("onnx",), default="onnx", help="export format (default: onnx)")

    example = sub.add_parser("example", help="write the example corpus and config (and run it with --run)")
    example.add_argument("--folder", default="example", help="where to write it (default: example)")
    example.add_argument("--rows", type=int, default=200, help="rows to write (default: 200)")
    example.add_argument("--run", action="store_true", help="label it right away")
    example.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="config overrides")

    reference = sub.add_parser("config-reference", help="print every config field, its default and meaning")
    reference.add_argument("--schema", action="store_true", help="print the config's JSON schema instead (for editors, CI)")
    models = sub.add_parser("models", help="list the model presets")
    models.add_argument("--prepare", metavar="NAME", help="assemble a preset now (it is cached)")
    return parser


def _config_arguments(parser) -> None:
    """--config, the shortcut flags and --set: the settings of a run."""
    parser.add_argument("--config", help="YAML config file")
    for name, (field, help_) in _SHORTCUTS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, help=f"{help_} (sets {field})")
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE",
        help="override any config field by dotted name, e.g. --set slm.epochs=4 (repeatable)",
    )


def _estimate(args) -> int:
    from freeal_ray.config import load_config
    from freeal_ray.estimate import describe, estimate

    config = load_config(args.config, _overrides(args))
    if not args.verbose:
        _logs_to_file(config.output)
    print(describe(estimate(config, args.sample, args.refine_share, args.probe, args.price_in, args.price_out)))
    print(f"\n[freeal_ray] written to {config.output}/estimate.json")
    return 0


def _logs_to_file(output):
    """Ray's, vLLM's and torch's logs into OUTPUT/logs/run.log instead of the terminal; its path."""
    from freeal_ray.logs import log_file_for, send_logs_to_file

    return send_logs_to_file(log_file_for(output))


def _overrides(args) -> dict:
    out = {}
    for name, (field, _) in _SHORTCUTS.items():
        value = getattr(args, name, None)
        if value is not None:
            out[field] = value
    for item in args.set:
        if "=" not in item:
            raise FreeALError(f"--set wants FIELD=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out


def _run(config_path, overrides, verbose: bool = False) -> int:
    from freeal_ray.config import load_config
    from freeal_ray.run import run_freeal
    from freeal_ray.report import summary

    config = load_config(config_path, overrides)
    if not verbose:
        print(f"[freeal_ray] Ray, vLLM and torch logs: {_logs_to_file(config.output)} (-v shows them here)")
    started = time.time()
    result = run_freeal(config)
    manifest = json.loads((result.output / "manifest.json").read_text())
    print()
    print(summary(manifest, result.output))
    print(f"wall time: {time.time() - started:.0f} s")
    return 0


def _predict(args) -> int:
    from freeal_ray.predict import predict_corpus
    from freeal_ray.ray_cluster import ensure_ray

    if not args.verbose:
        _logs_to_file(args.output)
    ensure_ray()
    id_column = None if args.id_column.lower() in ("null", "none", "") else args.id_column
    counts = predict_corpus(args.model, args.input, args.output, args.text_column, id_column, args.batch_size,
                            use_gpu=args.use_gpu)
    print(f"[freeal_ray] {counts['predicted']} rows predicted into {args.output}/predictions, "
          f"{counts['quarantined']} quarantined with their reasons in {args.output}/quarantine")
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        if args.command in ("run", "estimate") and not args.config and not args.corpus:
            raise FreeALError(f"give --config FILE or --corpus PATH (see `freeal-ray {args.command} --help`)")
        if args.command == "run":
            return _run(args.config, _overrides(args), args.verbose)
        if args.command == "estimate":
            return _estimate(args)
        if args.command == "predict":
            return _predict(args)
        if args.command == "export":
            from freeal_ray.export import export_onnx

            if not args.verbose:
                from transformers.utils import logging as transformers_logging

                transformers_logging.disable_progress_bar()  # loading a 6-layer model is not a long stage
            print(f"[freeal_ray] wrote {export_onnx(args.model, args.output) / 'model.onnx'}")
            return 0
        if args.command == "example":
            from freeal_ray.examples import write_example_corpus

            path = write_example_corpus(args.folder, args.rows)
            print(f"[freeal_ray] wrote {path} and its corpus")
            return _run(str(path), _overrides(args), args.verbose) if args.run else 0
        if args.command == "config-reference":
            from freeal_ray.config import json_schema, reference

            print(json.dumps(json_schema(), indent=2) if args.schema else reference())
            return 0
        if args.command == "models":
            from freeal_ray import model_store

            if args.prepare:
                prepare = model_store.resolve_llm if args.prepare in model_store.LLM_PRESETS else model_store.resolve_encoder
                print(prepare(args.prepare))
            else:
                print(model_store.describe_presets())
            return 0
    except FreeALError as exc:
        if args.verbose and exc.__cause__ is not None:
            import traceback

            traceback.print_exception(exc.__cause__)
        print(f"freeal-ray: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("freeal-ray: interrupted; finished stages are saved, re-run the same command to resume", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
