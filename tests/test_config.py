import pytest

from freeal_ray.config import RunConfig, load_config, reference
from freeal_ray.errors import ConfigError
from freeal_ray.task import BENCHMARK_TASKS, PRESETS, Task, get_preset


def test_presets_cover_benchmarks_and_validate():
    for bench, preset in BENCHMARK_TASKS.items():
        task = get_preset(preset)
        assert len(task.labels) >= 2, bench
    assert get_preset("news-topic").label_of_word(" technology") == "science/technology"
    assert get_preset("sentiment").label_of_word("maybe") is None


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task: subjectivity\ncorpus:\n  path: x.jsonl\nslm:\n  epochs: 4\n")
    config = load_config(path, {"slm.lr": "1e-4", "loop.rounds": "3"})
    assert config.slm.epochs == 4 and config.slm.lr == 1e-4 and config.loop.rounds == 3
    assert config.resolved_task().labels == ("subjective", "objective")
    assert config.slm.gmm_threshold == 0.7 and config.loop.top_ratio == 0.2 and config.loop.shots == 10


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"slm.epochz": 3}, "unknown field(s) ['epochz'] in `slm`"),
        ({"slm.epochs": "many"}, "slm.epochs must be a int"),
        ({"slm.gmm_threshold": 1.5}, "gmm_threshold"),
        ({"task": "poetry"}, "unknown task preset 'poetry'"),
        ({"corpus.path": ""}, "corpus.path is required"),
        ({"task": {"labels": ["a", "b"], "instruction": "x", "verbalizers": {"c": "see"}}}, "unknown label 'c'"),
        ({"task": {"labels": ["a", "a"], "instruction": "x"}}, "lists a label twice"),
    ],
)
def test_bad_config_names_the_problem(overrides, message):
    base = {"corpus.path": "x.jsonl"}
    base.update(overrides)
    with pytest.raises(ConfigError, match=None) as err:
        load_config(None, base)
    assert message in str(err.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_reference_documents_every_field():
    text = reference()
    for section in ("corpus", "llm", "slm", "loop"):
        for name in getattr(RunConfig(), section).__dataclass_fields__:
            assert f"`{section}.{name}`" in text


def test_task_from_dict_rejects_unknown_fields():
    with pytest.raises(ConfigError, match="unknown field"):
        Task.from_dict({"labels": ["a", "b"], "instruction": "x", "colour": "red"})
    assert set(PRESETS) >= {"sentiment", "subjectivity", "question-type", "news-topic", "medical-topic"}


def test_readme_reference_is_the_code_reference():
    from pathlib import Path

    from freeal_ray.config import reference

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert reference() in readme, "README's configuration reference is stale: paste `freeal-ray config-reference`"
