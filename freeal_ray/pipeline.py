"""What every stage shares: the run's folder and manifest, its tables, the annotator and LLM
settings, and `run_stage`, which does the manifest, resume and error wrapping once for all.

A stage (stages/) is a small unit with a declared name, the tables it reads and the ones it
writes; `run_stage` skips it when the manifest says it finished, names a missing input before
it starts, and turns any failure into one message that says the finished work is kept.
"""

from __future__ import annotations

import logging
import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import ray

from freeal_ray import tables
from freeal_ray.config import RunConfig
from freeal_ray.engine_actors import LLMSettings
from freeal_ray.engines import EngineConfig, engine_dtype
from freeal_ray.errors import FreeALError, short_reason
from freeal_ray.kinds import kind_for
from freeal_ray.manifest import Manifest
from freeal_ray.model_store import prompt_style_for, resolve_encoder, resolve_llm
from freeal_ray.profile import resolve as resolve_profile
from freeal_ray.ray_cluster import want_gpu

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a finished run hands back: its folder, per-round figures and where its outputs are."""

    output: Path
    rounds: dict
    labels_path: Path
    slm_path: Path | None


class Stage(ABC):
    """One step of the data flow. `name`, `inputs` and `outputs` may name the round as {r} and the
    one before as {prev}; inputs are folders that must hold a table before the stage starts."""

    name: str
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()

    def __init__(self, r: int = 0):
        self.r = r

    def _format(self, template: str) -> str:
        return template.format(r=self.r, prev=self.r - 1)

    @property
    def key(self) -> str:
        """The stage's name in the manifest (train-2, annotate-0, ...)."""
        return self._format(self.name)

    def input_folders(self) -> list[str]:
        return [self._format(t) for t in self.inputs]

    def output_folders(self) -> list[str]:
        return [self._format(t) for t in self.outputs]

    @abstractmethod
    def run(self, ctx: RunContext, info: dict) -> None:
        """Do the work; what `info` holds afterwards is recorded in the manifest."""


class RunContext:
    """One run's state on disk, handed to every stage."""

    def __init__(self, config: RunConfig):
        self.cfg = config
        self.task = config.resolved_task()
        self.kind = kind_for(self.task)
        self.out = Path(config.output).expanduser()
        self.manifest = Manifest(self.out, config.to_dict())
        self.incremental = config.loop.subset_fraction < 1.0
        self.model: str | None = None  # the annotator and shots per prompt, once Ray can say what the machine has
        self.shots: int | None = None
        self._llm: LLMSettings | None = None

    # ---- running stages ----------------------------------------------------------------------
    def run_stage(self, stage: Stage) -> bool:
        """Run `stage` unless it finished before; True when it ran."""
        if self.manifest.done(stage.key):
            log.info("stage %s already finished, skipping", stage.key)
            return False
        missing = [f for f in stage.input_folders() if not tables.table_files(self.path(f))]
        if missing:
            raise FreeALError(f"stage {stage.key} needs {', '.join(missing)} in {self.out}, which "
                              f"{'is' if len(missing) == 1 else 'are'} missing: the folder was changed since those "
                              "stages finished; use a new output folder")
        print(f"[freeal_ray] {stage.key} ...", flush=True)
        started, info = time.time(), {}
        try:
            stage.run(self, info)
        except FreeALError:
            raise
        except Exception as exc:
            log.debug("stage %s failed", stage.key, exc_info=True)
            raise FreeALError(
                f"stage {stage.key} failed: {short_reason(exc)}. Finished stages are saved in {self.out}; "
                "fix the cause and re-run the same command to resume (-v shows the full trace)"
            ) from exc
        self.manifest.finish(stage.key, time.time() - started, **info)
        if os.environ.get("FREEAL_RAY_CRASH_AFTER") == stage.key:  # test hook: a kill between stages
            os._exit(17)
        return True

    # ---- tables ------------------------------------------------------------------------------
    def path(self, *parts) -> Path:
        return self.out.joinpath(*[str(p) for p in parts])

    def table(self, *parts) -> ray.data.Dataset:
        ds = tables.read_table(self.path(*parts))
        if ds is None:
            raise RuntimeError(f"table {self.path(*parts)} is empty")
        return ds

    def has_demos(self, r: int) -> bool:
        return bool(tables.table_files(self.path(f"round-{r}", "demos")))

    def demos(self, r: int):
        """Round r's demo pool, read on the driver: tens of rows a class, where a Ray Data read costs its start-up."""
        demos = tables.read_frame(self.path(f"round-{r}", "demos"))
        if demos.empty:
            raise RuntimeError(f"table {self.path(f'round-{r}', 'demos')} is empty")
        return demos

    def n_rows(self) -> int:
        return self.manifest.stage("ingest").get("rows", 0)

    def has_corpus(self) -> bool:
        return bool(self.cfg.corpus.path)

    def has_gold(self) -> bool:
        return bool(self.cfg.corpus.gold_column)

    def label_metrics(self, ds: ray.data.Dataset, prefix: str = "llm") -> dict:
        return self.kind.label_metrics(ds, prefix) if self.has_gold() else {}

    def encoder_path(self, r: int = 0) -> str:
        """The encoder that embeds rows for kNN demos: round r's fine-tuned SLM's from round 1 on."""
        return str(self.path(f"round-{r}", "slm")) if r else str(resolve_encoder(self.cfg.slm.model))

    def scored(self, ds: ray.data.Dataset, r: int, folder: str | None = None) -> ray.data.Dataset:
        """`ds` with round r's SLM's (or the one in `folder`'s) prediction, loss and embedding per row:
        on the run's model host (model_host.py), or on GPUs a pool of scorer actors."""
        from freeal_ray.checkpoint import scorer_compute
        from freeal_ray.model_host import map_with_model

        use_gpu = want_gpu(self.cfg.slm.use_gpu)
        kwargs = {"folder": str(self.path(folder or f"round-{r}/slm")), "device": "cuda" if use_gpu else "cpu",
                  "batch_size": 256 if use_gpu else 64}
        return map_with_model(ds, "freeal_ray.checkpoint:SLMScorer", kwargs, {**scorer_compute(use_gpu), **tables.NO_RESTARTS},
                              hosted=not use_gpu, batch_format="pandas", batch_size=1024)

    def unannotated(self, r: int) -> ray.data.Dataset:
        """Corpus rows with no label in round r's table."""
        return tables.without_ids(self.table("corpus"), self.path(f"round-{r}", "labels"))

    # ---- the annotator -----------------------------------------------------------------------
    def pick_annotator(self) -> None:
        """Resolve `llm.model: auto` and `loop.shots: null` for this machine, once per run."""
        c = self.cfg.llm
        if c.engine != "vllm":
            self.model, self.shots = c.model, self.cfg.loop.shots or 10
            return
        picked = self.manifest.data.get("annotator")
        if picked and c.model == "auto" and self.cfg.loop.shots is None:
            self.model, self.shots = picked["model"], picked["shots"]  # a resumed run keeps its annotator
            return
        use_gpu = want_gpu(c.use_gpu)
        self.model, self.shots, why = resolve_profile(c.model, self.cfg.loop.shots, use_gpu)
        if why:
            print(f"[freeal_ray] annotator {self.model}, {self.shots} shots, in "
                  f"{engine_dtype(c.dtype, use_gpu)}: {why} (llm.model sets another)", flush=True)
        self.manifest.data["annotator"] = {"model": self.model, "shots": self.shots, "why": why}
        self.manifest.save()

    def prompt_style(self) -> str:
        if self.model is None:
            self.pick_annotator()
        return prompt_style_for(self.cfg.llm.prompt_style, self.model, self.cfg.llm.engine, self.cfg.llm.api_style)

    def llm(self) -> LLMSettings:
        """The LLM settings every stage's engines are built from (the engines are shared actors)."""
        if self._llm is None:
            if self.model is None:
                self.pick_annotator()
            self._llm = self.kind.llm_settings(self._llm_settings())
        return self._llm

    def _llm_settings(self) -> LLMSettings:
        c = self.cfg.llm
        use_gpu = want_gpu(c.use_gpu) and c.engine == "vllm"  # an endpoint brings its own
        engine = EngineConfig(
            model_path=str(resolve_llm(self.model)) if c.engine == "vllm" else c.model,
            max_model_len=c.max_model_len, kv_cache_gib=c.kv_cache_gib, cpu_threads=c.cpu_threads, dtype=c.dtype,
            tensor_parallel_size=c.tensor_parallel_size, use_gpu=use_gpu, seed=self.cfg.loop.seed,
            api_base=c.api_base, api_key_env=c.api_key_env, max_concurrency=c.max_concurrency,
            requests_per_minute=c.requests_per_minute, max_retries=c.max_retries, api_style=c.api_style,
            unconstrained=c.unconstrained,
        )
        runner = c.runner if c.runner != "auto" else ("ray_data_llm" if use_gpu else "actors")
        return LLMSettings(c.engine, engine, c.replicas, c.batch_size, c.max_text_chars, runner, c.save_every_s,
                           self.prompt_style())

    def llm_usage(self, folder: Path) -> dict:
        """LLM calls and tokens spent writing the answers in `folder`, and the prompts trimmed to
        fit the model's context (prompt_fit.py)."""
        sums = tables.column_sums(folder, ["prompt_tokens", "output_tokens", "prompt_trimmed"])
        usage = {"llm_calls": tables.count_rows(folder), "prompt_tokens": int(sums["prompt_tokens"]),
                 "output_tokens": int(sums["output_tokens"]), "prompts_trimmed": int(sums["prompt_trimmed"])}
        if self.kind.answers_have_confidence:  # an endpoint without log-probs leaves it unknown
            usage["confidence_unknown"] = tables.count_where(
                folder, lambda r: r["label"] is not None and (r["confidence"] is None or r["confidence"] != r["confidence"]),
                ["label", "confidence"])
        return usage

    def notice_abstentions(self, folder: Path, where: str) -> None:
        """Say in plain words when the LLM left rows without a usable label."""
        labelled = self.kind.labelled
        n = tables.count_rows(folder)
        missing = n - tables.count_where(folder, labelled, [self.kind.label_column])
        if missing:
            print(f"[freeal_ray] the LLM gave no usable answer for {missing} of {n} rows {where} "
                  f"({missing / max(n, 1):.1%}): the SLM labels them", flush=True)
