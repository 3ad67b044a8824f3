"""The whole loop through the CLI, with real engine, trainer and Ray: kill it, re-run, resume."""

import json
import os
import re
import subprocess
import sys

import pandas as pd
import pytest
from conftest import tiny_overrides
from tiny_models import toy_corpus

from freeal_ray import pipeline, tables
from freeal_ray.config import load_config
from freeal_ray.run import run_freeal


def freeal(args, env_extra=None, timeout=900):
    env = {**os.environ, **(env_extra or {})}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-m", "freeal_ray.cli", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def run_args(corpus, models, output):
    args = ["run", "--corpus", str(corpus), "--task", "sentiment", "--gold-column", "gold"]
    for key, value in tiny_overrides(models, output).items():
        args += ["--set", f"{key}={value}"]
    return args


OUR_LINE = re.compile(
    r"^(\[freeal_ray\] .*"  # the product's own notices
    r"|(LLM annotation, round \d+|LLM demo synthesis|SLM training, round \d+):.*"  # its progress bars
    r"|freeal_ray run in .*|rows: .*|labels: .*|wall time: .*|round \d+ stopped the run: .*"  # the summary
    r"|\|.*\||)$"  # the summary's table, blank lines
)


def third_party_lines(output: str) -> list[str]:
    """Lines of a run's terminal output that the product did not write (progress bars redraw with \\r)."""
    lines = [part.strip() for line in output.splitlines() for part in line.split("\r")]
    return [line for line in lines if not OUR_LINE.match(line)]


class StoppedHere(BaseException):
    """Not an Exception: the pipeline's error wrapping must let it through, as it would a kill."""


def _stop_here(code):
    raise StoppedHere(code)


@pytest.mark.slow
def test_killed_run_resumes_without_repeating_llm_work(tiny_models, toy_jsonl, tmp_path, ray_session, capsys, monkeypatch):
    out = tmp_path / "run"
    args = run_args(toy_jsonl, tiny_models, out) + ["--set", "llm.save_every_s=0"]  # a part per engine batch

    # 1. killed after the first annotation part of round 0 reached disk
    killed = freeal(args, {"FREEAL_RAY_CRASH_AFTER_PARTS": "1"})
    assert killed.returncode == 17, killed.stderr[-3000:]
    first_parts = tables.table_files(out / "round-0" / "labels")
    assert len(first_parts) == 1
    done_before = set(pd.read_parquet(first_parts[0])["id"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert "synthesize" in manifest["stages"] and "annotate-0" not in manifest["stages"]

    # 2. resumed, and stopped again between stages, after the SLM trained: in this process, on the
    #    test session's cluster and engines (a process of its own would start both again), with
    #    the hook's hard exit turned into an exception that nothing in the run may catch
    same = {**tiny_overrides(tiny_models, out), "task": "sentiment", "corpus.path": str(toy_jsonl),
            "corpus.gold_column": "gold", "llm.save_every_s": 0}
    monkeypatch.setenv("FREEAL_RAY_CRASH_AFTER", "train-1")
    monkeypatch.setattr(pipeline.os, "_exit", _stop_here)
    with pytest.raises(StoppedHere):
        run_freeal(load_config(None, same))
    monkeypatch.undo()
    stopped = json.loads((out / "manifest.json").read_text())["stages"]
    assert "train-1" in stopped and "score-1" not in stopped

    # 3. finishes; nothing paid for is asked again
    done = freeal(args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert third_party_lines(done.stdout + done.stderr) == []  # Ray's, vLLM's, torch's lines went to the log file
    log_file = out / "logs" / "run.log"
    assert str(log_file) in done.stdout and log_file.stat().st_size > 0
    annotations = tables.read_frame(out / "round-0" / "labels")
    # toy_corpus(40) repeats one text (row-38 is row-36's): the LLM is asked about it once
    assert len(annotations) == 39 and annotations["id"].is_unique and "row-38" not in set(annotations["id"])
    assert first_parts[0] in tables.table_files(out / "round-0" / "labels")  # the paid part was kept
    assert set(pd.read_parquet(first_parts[0])["id"]) == done_before
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rounds"]["0"]["llm_calls"] == 39
    assert "train-1" in manifest["stages"] and manifest["stages"]["train-1"]["finished"] < manifest["stages"]["score-1"]["finished"]

    # outputs honour the stage contracts
    labels = tables.read_frame(out / "labels")
    assert sorted(labels["id"]) == sorted(f"row-{i}" for i in range(40))
    assert set(labels["label"]) <= {"negative", "positive"} and labels["label"].notna().all()
    by_id = labels.set_index("id")
    assert by_id.loc["row-38", "duplicate_of"] == "row-36" and by_id.loc["row-38", "label"] == by_id.loc["row-36", "label"]
    assert set(labels["source"]) <= {"llm", "slm"}
    scores = tables.read_frame(out / "round-1" / "scores")
    assert {"loss", "p_clean", "clean", "pred", "probs", "embedding"} <= set(scores.columns)
    noisy = set(scores.loc[~scores["clean"], "id"])
    refined_ids = set(tables.read_frame(out / "round-1" / "labels" / "refined").get("id", []))
    assert refined_ids == noisy  # the refinery asked the LLM about the noisy rows only
    demos = tables.read_frame(out / "round-1" / "demos")
    assert set(demos["label"]) == {"negative", "positive"}
    assert (out / "slm" / "model.safetensors").exists() and (out / "report.md").exists() and (out / "rounds.png").exists()
    assert {"llm_acc", "slm_acc", "clean_fraction"} <= manifest["rounds"]["1"].keys()
    gold = {row["id"]: row["gold"] for row in toy_corpus(40)}
    canonical = labels[labels["duplicate_of"].isna()]  # a repeated text counts once
    assert manifest["rounds"]["1"]["final_acc"] == pytest.approx((canonical["label"] == canonical["id"].map(gold)).mean())
    assert "final labels acc" in done.stdout

    # The rest resumes the same folder through the API, in this process too.
    # 4. a re-run of a finished run does no work at all
    run_freeal(load_config(None, same))
    assert json.loads((out / "manifest.json").read_text())["stages"] == manifest["stages"]

    # 5. resumed with a second round whose SLM must beat round 1's by more than it can: the
    #    guard stops the run before round 2's selection and refinery, keeping round 1's output
    #    (min_change=0 so that a refinery changing no label does not end the run first)
    capsys.readouterr()
    run_freeal(load_config(None, {**same, "loop.rounds": 2, "loop.max_agreement_drop": -1, "loop.min_change": 0}))
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"train-2", "score-2"} <= set(manifest["stages"]) and "select-2" not in manifest["stages"]
    assert "refine-2" not in manifest["stages"] and manifest["stages"]["finalize"]["rounds"] == 1
    assert "stopped" in manifest["rounds"]["2"] and "keeping round 1's labels and SLM" in capsys.readouterr().out
    assert tables.read_frame(out / "labels").sort_values("id")["label"].tolist() == labels.sort_values("id")["label"].tolist()


def test_cli_errors_are_one_clear_line(tmp_path):
    result = freeal(["run", "--corpus", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "o")])
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
    result = freeal(["run", "--corpus", "x.jsonl", "--set", "slm.epochs=lots"])
    assert result.returncode == 2 and "slm.epochs must be a whole number" in result.stderr


def test_help_reads_like_the_docs():
    result = freeal(["run", "--help"])
    assert result.returncode == 0
    assert "--corpus" in result.stdout and "config-reference" in result.stdout
