"""`freeal-ray estimate`: the projection follows the loop's settings (the loop run in
test_quality.py checks its tokens per call against what the run then spent)."""

from types import SimpleNamespace

from freeal_ray.estimate import project, totals

TOKENS = {"few_shot": 300.0, "zero_shot": 60.0, "synthesis": 200.0, "answer": 2.0, "written": 32.0}


def loop(**kw):
    base = dict(seed_rows=500, synth_per_class=5, subset_fraction=1.0, rounds=2)
    return SimpleNamespace(**{**base, **kw})


def test_the_projection_counts_each_stage_the_loop_runs():
    stages = project(2000, TOKENS, loop(), "confident", n_labels=2, refine_share=0.1, incremental=False)
    assert list(stages) == ["synthesize (zero-shot seed rows)", "annotate-0", "refine-1", "refine-2"]
    assert stages["synthesize (zero-shot seed rows)"] == {"llm_calls": 500, "prompt_tokens": 30_000, "output_tokens": 1000}
    assert stages["annotate-0"]["prompt_tokens"] == 600_000 and stages["refine-2"]["llm_calls"] == 200
    assert totals(stages)["llm_calls"] == 500 + 2000 + 2 * 200

    written = project(100, TOKENS, loop(seed_rows=500), "mixed", n_labels=4, refine_share=0.2, incremental=False)
    assert written["synthesize (zero-shot seed rows)"]["llm_calls"] == 100  # never more seed rows than rows
    assert written["synthesize (written demos)"] == {"llm_calls": 20, "prompt_tokens": 4000, "output_tokens": 640}


def test_incremental_runs_annotate_a_share_and_add_a_fresh_one_per_round_and_given_labels_cost_nothing():
    stages = project(1000, TOKENS, loop(subset_fraction=0.2, rounds=3), "synthetic", 2, 0.5, incremental=True)
    assert stages["annotate-0"]["llm_calls"] == 200
    assert [stages[f"refine-{r}"]["llm_calls"] for r in (1, 2, 3)] == [100, 200, 300]  # half the annotated rows
    assert stages["expand-1"]["llm_calls"] == 200 and "expand-3" not in stages
    given = project(1000, TOKENS, loop(rounds=1), "confident", 2, 0.1, incremental=False, given_labels=True)
    assert list(given) == ["refine-1"] and given["refine-1"]["llm_calls"] == 100
