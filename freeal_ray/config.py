"""The run configuration: one YAML file, every field validated, every default documented in
config_sections.py. pydantic parses each section against its fields' types (and writes the JSON
schema, `freeal-ray config-reference --schema`); `validate` then checks choices and ranges.

Each field's `doc` is the reference text: `freeal-ray config-reference` prints it and the README
copies it. CLI flags override fields by dotted name (`--set loop.rounds=3`).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from freeal_ray.config_sections import ROUND0_DEMOS, CorpusConfig, LLMConfig, LoopConfig, SLMConfig, _f
from freeal_ray.errors import ConfigError
from freeal_ray.prompts import PROMPT_STYLES
from freeal_ray.task import EntityTask, Task, get_preset, task_from_dict


@dataclass
class RunConfig:
    task: Any = _f(
        "sentiment",
        "A task preset name (classification: sentiment, subjectivity, question-type, news-topic, medical-topic; "
        "NER: conll03, bc5cdr), or a mapping: name, labels, instruction, verbalizers for classification; "
        "name, types (type: description), instruction for NER.",
    )
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    slm: SLMConfig = field(default_factory=SLMConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    output: str = _f("runs/freeal", "Output folder; re-running with the same folder resumes.")

    def resolved_task(self) -> Task | EntityTask:
        if isinstance(self.task, (Task, EntityTask)):
            return self.task
        if isinstance(self.task, str):
            return get_preset(self.task)
        if isinstance(self.task, dict):
            return task_from_dict(self.task)
        raise ConfigError(f"task must be a preset name or a mapping, got {type(self.task).__name__}")

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        if isinstance(self.task, (Task, EntityTask)):
            data["task"] = dataclasses.asdict(self.task)
        return data


_SECTIONS = {"corpus": CorpusConfig, "llm": LLMConfig, "slm": SLMConfig, "loop": LoopConfig}


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML config (or start from defaults), apply dotted overrides, validate."""
    data: dict = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
    for key, value in (overrides or {}).items():
        _set_dotted(data, key, value)
    if isinstance(data.get("loop"), dict) and data["loop"].get("shots") == "auto":
        data["loop"] = {**data["loop"], "shots": None}
    config = from_dict(data)
    validate(config)
    return config


def from_dict(data: dict) -> RunConfig:
    top = {f.name for f in fields(RunConfig)}
    unknown = set(data) - top
    if unknown:
        raise ConfigError(f"unknown config field(s) {sorted(unknown)}; known: {sorted(top)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        if name in _SECTIONS:
            kwargs[name] = _section(name, _SECTIONS[name], value or {})
        else:
            kwargs[name] = value
    return RunConfig(**kwargs)


def _section(name: str, cls, values: dict):
    from pydantic import ValidationError

    if not isinstance(values, dict):
        raise ConfigError(f"config section `{name}` must be a mapping")
    known = {f.name: f for f in fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ConfigError(f"unknown field(s) {sorted(unknown)} in `{name}`; known: {sorted(known)}")
    try:
        return _adapter(cls).validate_python(_field_values(cls, values))
    except ValidationError as exc:
        error = exc.errors()[0]
        field_name = ".".join([name, *(str(part) for part in error["loc"][:1])])
        raise ConfigError(f"{field_name} must be {_WANTED.get(error['type'], error['msg'].lower())}, "
                          f"got {error.get('input')!r}") from None


def _field_values(cls, values: dict) -> dict:
    """What a YAML value means for its field: YAML reads `use_gpu: true` as a bool and
    `id_column: 123` as an int, which a text field takes as the word; an empty value (`path:`) of
    a field that cannot be null is left to its default."""
    out = {}
    for f in fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        if isinstance(value, (bool, int, float)) and (isinstance(f.default, str) or str(f.type).startswith("str")):
            value = str(value).lower() if isinstance(value, bool) else str(value)
        if value is not None or f.default is None or "None" in str(f.type):
            out[f.name] = value
    return out


_WANTED = {"int_parsing": "a whole number", "int_type": "a whole number", "int_from_float": "a whole number",
           "float_parsing": "a number", "float_type": "a number", "bool_parsing": "true or false",
           "bool_type": "true or false", "string_type": "a string"}


@functools.cache
def _adapter(cls):
    from pydantic import TypeAdapter

    return TypeAdapter(cls)


def json_schema() -> dict:
    """The config's JSON schema (pydantic's), each field described by its reference text."""
    schema = _adapter(RunConfig).json_schema()
    for cls in (RunConfig, *_SECTIONS.values()):
        target = schema if cls is RunConfig else schema["$defs"][cls.__name__]
        for f in fields(cls):
            if "doc" in f.metadata:
                target["properties"][f.name]["description"] = f.metadata["doc"]
    return schema


def _set_dotted(data: dict, key: str, value) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {key}: {part} is not a section")
    node[parts[-1]] = yaml.safe_load(value) if isinstance(value, str) else value


def validate(c: RunConfig) -> None:
    entities = isinstance(c.resolved_task(), EntityTask)  # raises on a bad task
    checks = [
        (bool(c.corpus.path) or c.loop.mode == "evokd", "corpus.path is required: the file or folder with your texts"),
        (c.loop.mode in ("freeal", "evokd"), "loop.mode must be freeal or evokd"),
        (c.loop.evolve_rounds is None or (isinstance(c.loop.evolve_rounds, int) and c.loop.evolve_rounds >= 0),
         "loop.evolve_rounds must be a whole number >= 0, or null"),
        (c.loop.evolve_batch >= 1 and c.loop.evolve_shown >= 1 and c.loop.evolve_pool >= 1 and c.loop.evolve_min_steps >= 1,
         "loop.evolve_batch, evolve_shown, evolve_pool and evolve_min_steps must be >= 1"),
        (0.0 <= c.loop.evolve_hard_share <= 1.0, "loop.evolve_hard_share must be in [0, 1]"),
        (c.loop.mode == "freeal" or c.loop.subset_fraction == 1.0, "loop.mode evokd does not take loop.subset_fraction"),
        (c.corpus.format in ("auto", "jsonl", "csv", "parquet"), "corpus.format must be auto, jsonl, csv or parquet"),
        (c.llm.engine in ("vllm", "openai", "instant"), "llm.engine must be vllm, openai or instant"),
        (c.llm.max_concurrency >= 1 and c.llm.requests_per_minute >= 0 and c.llm.max_retries >= 0,
         "llm.max_concurrency must be >= 1; llm.requests_per_minute and llm.max_retries >= 0"),
        (c.llm.use_gpu in ("auto", "true", "false"), "llm.use_gpu must be auto, true or false"),
        (c.llm.dtype in ("auto", "bfloat16", "float32", "float16"), "llm.dtype must be auto, bfloat16, float32 or float16"),
        (c.llm.runner in ("auto", "actors", "ray_data_llm"), "llm.runner must be auto, actors or ray_data_llm"),
        (c.llm.prompt_style in ("auto", *PROMPT_STYLES), "llm.prompt_style must be auto, plain, chat or chat-turns"),
        (c.llm.prompt_style in ("auto", "plain") or c.llm.engine == "vllm" or (c.llm.engine == "openai" and c.llm.api_style == "chat"),
         "llm.prompt_style chat and chat-turns need llm.engine vllm (the local model's chat template) or openai with llm.api_style chat"),
        (c.llm.api_style in ("chat", "completions"), "llm.api_style must be chat or completions"),
        (c.llm.unconstrained in ("fail", "parse"), "llm.unconstrained must be fail or parse"),
        (c.llm.cpu_threads >= 0, "llm.cpu_threads must be >= 0 (0: every core)"),
        (c.llm.runner != "ray_data_llm" or c.llm.engine == "vllm", "llm.runner ray_data_llm needs llm.engine vllm"),
        (c.slm.use_gpu in ("auto", "true", "false"), "slm.use_gpu must be auto, true or false"),
        (c.llm.replicas >= 1 and c.llm.batch_size >= 1, "llm.replicas and llm.batch_size must be >= 1"),
        (c.llm.save_every_s >= 0, "llm.save_every_s must be >= 0"),
        (c.slm.epochs >= 1, "slm.epochs must be >= 1"),
        (0 <= c.slm.warmup_epochs <= c.slm.epochs, "slm.warmup_epochs must be between 0 and slm.epochs"),
        (0.0 < c.slm.gmm_threshold < 1.0, "slm.gmm_threshold must be between 0 and 1"),
        (c.slm.mixup_alpha > 0, "slm.mixup_alpha must be > 0"),
        (c.slm.noisy_rows in ("refine", "drop"), "slm.noisy_rows must be refine or drop"),
        (0.0 <= c.slm.label_floor <= 1.0, "slm.label_floor must be between 0 and 1"),
        (0.0 <= c.slm.word_dropout < 1.0, "slm.word_dropout must be in [0, 1)"),
        (c.slm.num_workers >= 1, "slm.num_workers must be >= 1"),
        (c.loop.rounds >= 0, "loop.rounds must be >= 0"),
        (0.0 < c.loop.top_ratio <= 1.0, "loop.top_ratio must be in (0, 1]"),
        (-1.0 <= c.loop.max_agreement_drop <= 1.0, "loop.max_agreement_drop must be in [-1, 1]"),
        (c.loop.shots is None or (isinstance(c.loop.shots, int) and c.loop.shots >= 1),
         "loop.shots must be a whole number >= 1, or null for the profile's"),
        (c.loop.demos_per_class >= 1, "loop.demos_per_class must be >= 1"),
        (c.loop.round0_demos in ROUND0_DEMOS, "loop.round0_demos must be auto, synthetic, confident, mixed or none"),
        (not entities or c.loop.round0_demos in ("auto", "synthetic"),
         "NER tasks start from synthetic demos: loop.round0_demos must be synthetic (or auto)"),
        (c.loop.seed_rows >= 1, "loop.seed_rows must be >= 1"),
        (c.loop.synth_per_class >= 1 and c.loop.prototypes >= 1, "loop.synth_per_class and loop.prototypes must be >= 1"),
        (c.corpus.limit is None or c.corpus.limit > 0, "corpus.limit must be a positive number of rows"),
        (0.0 < c.loop.subset_fraction <= 1.0, "loop.subset_fraction must be in (0, 1]"),
        (c.loop.subset_strategy in ("random", "entropy", "margin"), "loop.subset_strategy must be random, entropy or margin"),
        (c.loop.refine_rows in ("noisy", "abstentions", "none"), "loop.refine_rows must be noisy, abstentions or none"),
        (c.loop.refine_accept in ("surer", "always"), "loop.refine_accept must be surer or always"),
        (not entities or c.loop.refine_rows == "noisy", "NER tasks refine the noisy sentences: loop.refine_rows must be noisy"),
        (c.loop.subset_fraction == 1.0 or c.loop.rounds >= 1,
         "loop.subset_fraction below 1 needs loop.rounds >= 1: the SLM labels the rows the LLM never saw"),
        (not entities or c.loop.subset_fraction == 1.0, "NER tasks annotate the whole corpus: loop.subset_fraction must be 1"),
        (not entities or c.corpus.llm_label_column is None, "NER tasks cannot start from corpus.llm_label_column yet"),
        (not entities or c.llm.runner != "ray_data_llm", "NER tasks run on llm.runner actors (or auto)"),
        (not entities or c.corpus.view_column is None, "NER tasks use dropout, not corpus.view_column, as the second view"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def evolve_rounds(loop) -> int:
    """`loop.evolve_rounds` resolved: null is 4 in evokd mode and none in freeal mode."""
    if loop.evolve_rounds is not None:
        return loop.evolve_rounds
    return 4 if loop.mode == "evokd" else 0


def reference() -> str:
    """Markdown reference of every field with its default."""
    doc = lambda f: f.metadata["doc"].replace("|", "\\|")  # noqa: E731 -- "a | b" choices would split the table cell
    lines = ["| field | default | meaning |", "|---|---|---|"]
    lines.append(f"| `task` | `sentiment` | {doc(RunConfig.__dataclass_fields__['task'])} |")
    for section, cls in _SECTIONS.items():
        for f in fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else ""
            shown = "null" if default is None else default
            lines.append(f"| `{section}.{f.name}` | `{shown}` | {doc(f)} |")
    lines.append(f"| `output` | `runs/freeal` | {doc(RunConfig.__dataclass_fields__['output'])} |")
    return "\n".join(lines)
