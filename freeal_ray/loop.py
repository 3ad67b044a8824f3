"""The FreeAL loop: stages in order, each written to disk and recorded in the manifest.

round 0:  ingest -> synthesize (demo pool: written by the LLM, or its surest zero-shot answers) -> annotate (every row, LLM)
round r:  train (SLM) -> score (loss, GMM clean split) -> select (next demos) -> refine (LLM, noisy rows only)
final:    labels (abstentions filled by the SLM), the SLM checkpoint, the report

Incremental mode (loop.subset_fraction below 1) annotates a random P of the rows in round 0 and
adds a fresh P after each refinery but the last (expand); the SLM labels the rest in finalize.

Every table carries the row's text and pass-through columns along, so no stage needs a join:
round r's labels are its clean rows as they were plus its noisy rows as the LLM re-labelled them.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import ray

from freeal_ray import corpus as cio
from freeal_ray import metrics as M
from freeal_ray.annotation import LLMSettings, annotate, synthesize_demos
from freeal_ray.config import RunConfig
from freeal_ray.embedding import Encoder
from freeal_ray.engines import EngineConfig, engine_dtype
from freeal_ray.errors import CorpusError, FreeALError, short_reason
from freeal_ray.logs import LOG_FILE_ENV, THIRD_PARTY, quiet_logger
from freeal_ray.manifest import Manifest
from freeal_ray.model_store import prompt_style_for, resolve_encoder, resolve_llm
from freeal_ray.noise import fit_loss_gmm
from freeal_ray.profile import resolve as resolve_profile
from freeal_ray.sampling import row_draws, subset_size, uncertainty
from freeal_ray.seeding import confident_demos
from freeal_ray.selection import select_demos
from freeal_ray.slm import SLMScorer, label_indices
from freeal_ray.training import TrainSettings, train_slm

log = logging.getLogger(__name__)
SLM_COLUMNS = ["pred", "probs", "loss", "embedding", "p_clean", "clean"]


@dataclass
class RunResult:
    output: Path
    rounds: dict
    labels_path: Path
    slm_path: Path | None


def ensure_ray() -> None:
    """Join (RAY_ADDRESS) or start a Ray cluster, and set Ray Data up for this driver."""
    if not ray.is_initialized():
        env = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "VLLM_LOGGING_LEVEL": "ERROR",
               "RAY_DATA_USE_DATASOURCE_V2": "0"}
        env.update({k: v for k, v in os.environ.items() if k.startswith(("VLLM_", "FREEAL_RAY_"))})
        address = os.environ.get("RAY_ADDRESS")
        kwargs = {} if address else {"num_cpus": max(4, os.cpu_count() or 1)}  # stages overlap; see README
        runtime_env = {"env_vars": env}
        to_file = LOG_FILE_ENV in os.environ  # the CLI without -v: workers write to the run's log file
        if to_file:
            runtime_env["worker_process_setup_hook"] = "freeal_ray.logs.redirect_worker_output"
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=not to_file, logging_level="WARNING", **kwargs)
        if to_file:
            for name in THIRD_PARTY:
                quiet_logger(name)  # ray.init installs terminal handlers of its own
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="Use 'expr' instead of 'fn'")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # our own bars count rows; Ray's per-operator bars are noise here
    ctx.print_on_execution_start = False
    # Ray 2.60's Parquet reader (DataSourceV2) starts a pool of FooterReader actors for every
    # read: ~9 s a read on 2 cores against 0.5 s for the V1 reader, and each actor needs a free
    # CPU to start, so a read inside a pipeline that holds every CPU can wait forever.
    ctx.use_datasource_v2 = False


class FreeALRun:
    """The loop for text classification; `EntityRun` (entity_loop.py) swaps in the NER pieces."""

    def __init__(self, config: RunConfig):
        self.cfg = config
        self.task = config.resolved_task()
        self.out = Path(config.output).expanduser()
        self.manifest = Manifest(self.out, config.to_dict())
        self.incremental = config.loop.subset_fraction < 1.0
        self.entities = False
        self.model: str | None = None  # the annotator and shots per prompt, once Ray can say what the machine has
        self.shots: int | None = None

    scorer = SLMScorer

    # ---- plumbing ------------------------------------------------------------------------
    @contextmanager
    def _stage(self, name: str):
        """Run the body unless the stage finished before; record it when it finishes."""
        if self.manifest.done(name):
            log.info("stage %s already finished, skipping", name)
            yield None
            return
        print(f"[freeal_ray] {name} ...", flush=True)
        started = time.time()
        info: dict = {}
        try:
            yield info
        except FreeALError:
            raise
        except Exception as exc:
            log.debug("stage %s failed", name, exc_info=True)
            raise FreeALError(
                f"stage {name} failed: {short_reason(exc)}. Finished stages are saved in {self.out}; "
                "fix the cause and re-run the same command to resume (-v shows the full trace)"
            ) from exc
        self.manifest.finish(name, time.time() - started, **info)
        if os.environ.get("FREEAL_RAY_CRASH_AFTER") == name:  # test hook: a kill between stages
            os._exit(17)

    def _path(self, *parts) -> Path:
        return self.out.joinpath(*[str(p) for p in parts])

    def _pick_annotator(self) -> None:
        """Resolve `llm.model: auto` and `loop.shots: null` for this machine, once per run."""
        c = self.cfg.llm
        if c.engine != "vllm":
            self.model, self.shots = c.model, self.cfg.loop.shots or 10
            return
        use_gpu = _want_gpu(c.use_gpu)
        picked = self.manifest.data.get("annotator")
        if picked and c.model == "auto" and self.cfg.loop.shots is None:
            self.model, self.shots = picked["model"], picked["shots"]  # a resumed run keeps its annotator
            return
        self.model, self.shots, why = resolve_profile(c.model, self.cfg.loop.shots, use_gpu)
        if why:
            print(f"[freeal_ray] annotator {self.model}, {self.shots} shots, in "
                  f"{engine_dtype(c.dtype, use_gpu)}: {why} (llm.model sets another)", flush=True)
        self.manifest.data["annotator"] = {"model": self.model, "shots": self.shots, "why": why}
        self.manifest.save()

    def _llm(self) -> LLMSettings:
        if self.model is None:
            self._pick_annotator()
        c = self.cfg.llm
        use_gpu = _want_gpu(c.use_gpu) and c.engine == "vllm"  # an endpoint brings its own
        engine = EngineConfig(
            model_path=str(resolve_llm(self.model)) if c.engine == "vllm" else c.model,
            max_model_len=c.max_model_len,
            kv_cache_gib=c.kv_cache_gib,
            cpu_threads=c.cpu_threads,
            dtype=c.dtype,
            tensor_parallel_size=c.tensor_parallel_size,
            use_gpu=use_gpu,
            seed=self.cfg.loop.seed,
            api_base=c.api_base, api_key_env=c.api_key_env, max_concurrency=c.max_concurrency,
            requests_per_minute=c.requests_per_minute, max_retries=c.max_retries,
        )
        runner = c.runner if c.runner != "auto" else ("ray_data_llm" if use_gpu else "actors")
        return LLMSettings(c.engine, engine, c.replicas, c.batch_size, c.max_text_chars, runner, c.save_every_s,
                           prompt_style_for(c.prompt_style, self.model, c.engine))

    def _table(self, *parts) -> ray.data.Dataset:
        ds = cio.read_table(self._path(*parts))
        if ds is None:
            raise RuntimeError(f"table {self._path(*parts)} is empty")
        return ds

    # ---- the loop ------------------------------------------------------------------------
    def run(self) -> RunResult:
        ensure_ray()
        self._pick_annotator()
        self.ingest()
        n_rows = self.manifest.stage("ingest")["rows"]
        llm = None
        if self.cfg.corpus.llm_label_column:
            self.start_from_given_labels()
        else:
            llm = self.annotate_round_zero(n_rows)
        last = 0
        for r in range(1, self.cfg.loop.rounds + 1):
            self.train(r)
            self.score(r)
            if not self.incremental and self._slm_regressed(r):
                break
            self.select(r)
            llm = self.refine(r, llm)
            last = r
            if self.incremental:
                if r < self.cfg.loop.rounds:
                    llm = self.expand(r, n_rows, llm)
                continue  # the annotated set grows every round: no early stop
            changed = self.manifest.data["rounds"][str(r)].get("changed_fraction", 1.0)
            if changed < self.cfg.loop.min_change:
                print(f"[freeal_ray] labels changed for {changed:.2%} of rows in round {r}: stopping early")
                break
        return self.finalize(last)

    def _slm_regressed(self, r: int) -> bool:
        """True when round r's SLM reproduces its (refined) labels markedly less often than round
        r - 1's SLM reproduced the older ones. Labels the refinery improved should be easier to fit,
        so the drop means this SLM trained worse (small corpora, an unlucky seed), and its noisy
        split and demos would steer the LLM wrong: the run ends on round r - 1's labels and SLM."""
        if r < 2:
            return False
        rounds = self.manifest.data["rounds"]
        now, before = rounds[str(r)].get("slm_agreement"), rounds[str(r - 1)].get("slm_agreement")
        if now is None or before is None or before - now <= self.cfg.loop.max_agreement_drop:
            return False
        reason = f"round {r}'s SLM agrees with {now:.1%} of labels, round {r - 1}'s with {before:.1%}"
        print(f"[freeal_ray] {reason}: keeping round {r - 1}'s labels and SLM")
        self.manifest.round_metrics(r, stopped=reason)
        return True

    def annotate_round_zero(self, n_rows: int) -> LLMSettings | None:
        """Round 0: a demo pool (`loop.round0_demos`), then the LLM labels every row with the
        nearest of its demos (`none`: with no demo)."""
        llm = None
        kind = self.round0_demo_kind()
        with self._stage("synthesize") as info:
            if info is not None:
                pools = []
                if kind in ("synthetic", "mixed"):
                    llm = llm or self._llm()
                    pools.append(self._synthesize(n_rows, llm, info))
                if kind in ("confident", "mixed"):
                    llm = llm or self._llm()
                    pools.append(self._confident_demos(n_rows, llm, info))
                shutil.rmtree(self._path("round-0", "demos"), ignore_errors=True)
                if pools:
                    cio.write_part(pd.concat(pools, ignore_index=True), self._path("round-0", "demos"), "demos")
                info.update(demos=sum(len(p) for p in pools), round0_demos=kind)
        with self._stage("annotate-0") as info:
            if info is not None:
                llm = llm or self._llm()
                rows, n = self._table("corpus"), n_rows
                if self.incremental:
                    n = subset_size(n_rows, self.cfg.loop.subset_fraction)
                    rows = self._fresh_rows(0, n, "random")
                demos = self._demos(0) if self._has_demos(0) else pd.DataFrame(columns=["id", "text", "label"])
                annotate(
                    rows, demos, self.task, llm,
                    str(resolve_encoder(self.cfg.slm.model)), self.shots if len(demos) else 0, 0,
                    str(self._path("round-0", "labels")), total=n,
                )
                usage = self._llm_usage(self._path("round-0", "labels"), 0)
                seed = self._llm_usage(self._path("round-0", "seed-answers"), 0)  # confident demos' zero-shot calls
                info.update({k: usage[k] + seed[k] for k in usage})
                self._notice_abstentions(self._path("round-0", "labels"), "in round 0")
                self.manifest.round_metrics(0, **info, **self._label_metrics(self._table("round-0", "labels"), "label", "llm"))
        return llm

    round0_can_be_confident = True  # NER answers carry no per-span confidence to rank by

    def round0_demo_kind(self) -> str:
        """`loop.round0_demos` resolved. auto trusts the LLM's own confident answers only where its
        zero-shot prompt measured trustworthy, a chat style (MR 0.858 against 0.578 plain, 1.5B), and
        lets it write demos where the plain prompt would pick wrong ones; no gold is needed to decide."""
        kind = self.cfg.loop.round0_demos
        if kind != "auto":
            return kind
        if self.model is None:
            self._pick_annotator()
        style = prompt_style_for(self.cfg.llm.prompt_style, self.model, self.cfg.llm.engine)
        return "confident" if self.round0_can_be_confident and style != "plain" else "synthetic"

    def _confident_demos(self, n_rows: int, llm: LLMSettings, info: dict) -> pd.DataFrame:
        """The LLM labels `loop.seed_rows` random rows zero-shot; per class its surest answers,
        spread by k-medoids, become round 0's demos (seeding.py)."""
        loop = self.cfg.loop
        n = min(loop.seed_rows, n_rows)
        folder = self._path("round-0", "seed-answers")
        annotate(self._seed_rows(n), pd.DataFrame(columns=["id", "text", "label"]), self.task, llm,
                 str(resolve_encoder(self.cfg.slm.model)), 0, 0, str(folder), total=n)
        answers = self._table("round-0", "seed-answers").to_pandas()
        embeddings = Encoder(str(resolve_encoder(self.cfg.slm.model))).embed(answers["text"].tolist())
        picks = confident_demos(answers["label"].to_numpy(), answers["confidence"].to_numpy(), embeddings,
                                loop.top_ratio, loop.demos_per_class, loop.seed)
        demos = answers.iloc[picks]
        if demos.empty:
            raise FreeALError(f"the LLM gave no answer in the label set for any of the {n} seed rows it labelled "
                              "zero-shot; set loop.round0_demos: synthetic")
        info.update(seed_rows=n, confident_demos=len(demos))
        if "gold" in demos:
            info.update(confident_demo_acc=float((demos["label"] == demos["gold"]).mean()))
        return demos.assign(origin="seed")[["id", "text", "label", "origin"]].reset_index(drop=True)

    def _seed_rows(self, n: int) -> ray.data.Dataset:
        """A random `n` corpus rows, by a draw of their ids (a resumed stage asks about the same rows)."""
        keyed = self._table("corpus").map_batches(_with_draw, fn_kwargs={"seed": self.cfg.loop.seed + 1}, batch_format="pandas")
        return keyed.sort(["draw", "id"]).limit(n).drop_columns(["draw"])

    def _synthesize(self, n_rows: int, llm: LLMSettings, info: dict) -> pd.DataFrame:
        demos, counts = synthesize_demos(
            self._table("corpus"), n_rows, self.task, llm, self.cfg.loop.prototypes,
            self.cfg.loop.synth_per_class, self.cfg.llm.synth_temperature,
            self.cfg.llm.synth_max_tokens, self.cfg.loop.seed,
        )
        info.update(synthesis=counts)
        _require_demos(demos, self.task, counts)
        return demos

    def start_from_given_labels(self) -> None:
        """Round 0 from labels an LLM already gave: no synthesis, no LLM call."""
        with self._stage("annotate-0") as info:
            if info is None:
                return
            labels_dir = self._path("round-0", "labels")
            shutil.rmtree(labels_dir, ignore_errors=True)
            given = self._table("corpus").map_batches(
                _given_labels, fn_kwargs={"labels": tuple(self.task.labels)}, batch_format="pandas"
            )
            cio.write_table(given.map_batches(cio.conform, batch_format="pandas"), labels_dir)
            table = self._table("round-0", "labels")
            outside = table.filter(lambda r: r["given_label"] is not None and r["label"] is None).count()
            if outside:
                print(f"[freeal_ray] {outside} given labels are outside the label set: counted as abstentions")
            info.update(llm_calls=0, prompt_tokens=0, output_tokens=0, given_outside_label_set=outside)
            self.manifest.round_metrics(0, **info, **self._label_metrics(table, "label", "llm"))

    def ingest(self) -> None:
        with self._stage("ingest") as info:
            if info is None:
                return
            c = self.cfg.corpus
            raw, bad_lines = cio.read_raw(c)
            if c.limit:
                raw = raw.limit(c.limit)
            renames = cio.passthrough_renames(cio.check_columns(c, raw), c)
            if renames:
                shown = ", ".join(f"{a} as {b}" for a, b in renames.items())
                print(f"[freeal_ray] corpus columns named like the output's are kept under new names: {shown}", flush=True)
            opts = {
                "text_column": c.text_column, "id_column": c.id_column, "gold_column": c.gold_column,
                "view_column": c.view_column, "llm_label_column": c.llm_label_column,
                "entities": self.entities, "renames": renames,
            }
            rows = raw.map_batches(cio.normalise_rows, fn_kwargs={"cfg": opts}, batch_format="pandas")
            for folder in ("corpus", "quarantine"):
                shutil.rmtree(self._path(folder), ignore_errors=True)
            rows = rows.materialize()
            bad = rows.filter(lambda r: r["__error"] is not None)
            good = rows.filter(lambda r: r["__error"] is None).drop_columns(["__error"])
            if c.id_column is None:
                good = cio.drop_duplicate_ids(good)
            else:
                dupes = cio.find_duplicate_ids(good)
                if dupes:
                    shown = ", ".join(f"{i!r} ({n} rows)" for i, n in dupes)
                    raise CorpusError(
                        f"corpus {c.path} has duplicate ids in column {c.id_column!r}: {shown}. Ids must be "
                        "unique; fix them, or set corpus.id_column: null to derive ids from the text"
                    )
            good, duplicates = cio.split_duplicate_texts(good)
            shutil.rmtree(self._path("duplicates"), ignore_errors=True)
            if duplicates is not None:
                cio.write_table(duplicates, self._path("duplicates"))
            quarantined = bad.map_batches(cio.quarantine_rows, batch_format="pandas")
            if bad_lines is not None:
                quarantined = quarantined.union(bad_lines.map_batches(lambda b: b.to_pandas(), batch_format="pyarrow"))
            cio.write_table(good.map_batches(cio.conform, batch_format="pandas"), self._path("corpus"))
            cio.write_table(quarantined, self._path("quarantine"))
            n_rows, n_bad = cio.count_rows(self._path("corpus")), cio.count_rows(self._path("quarantine"))
            if n_rows == 0:
                raise CorpusError(f"corpus {c.path} has no usable rows ({n_bad} quarantined: see {self._path('quarantine')})")
            if n_bad:
                print(f"[freeal_ray] {n_bad} rows quarantined with their reasons in {self._path('quarantine')}")
            n_dupes = cio.count_rows(self._path("duplicates"))
            if n_dupes:
                print(f"[freeal_ray] {n_dupes} rows repeat another row's text: each text is labelled once, "
                      "and the output copies its label to the repeats (column duplicate_of)")
            self._check_gold()
            n_long = self._notice_long_texts()
            info.update(rows=n_rows, quarantined=n_bad, duplicate_texts=n_dupes, texts_cut=n_long, renamed_columns=renames)

    def _notice_long_texts(self) -> int:
        """Texts longer than llm.max_text_chars reach the LLM cut: say so once, at ingest."""
        if self.entities:
            return 0
        cap = self.cfg.llm.max_text_chars
        n = self._table("corpus").filter(lambda row, cap=cap: len(row["text"]) > cap).count()
        if n:
            print(f"[freeal_ray] {n} texts are longer than llm.max_text_chars ({cap}): the LLM sees their first "
                  f"{cap} characters (the SLM its first slm.max_length tokens)", flush=True)
        return n

    def _check_gold(self) -> None:
        if not self.cfg.corpus.gold_column:
            return
        unknown = self._table("corpus").filter(
            lambda r, labels=set(self.task.labels): r["gold"] is not None and r["gold"] not in labels
        ).take(3)
        if unknown:
            raise CorpusError(
                f"gold column {self.cfg.corpus.gold_column!r} holds labels outside the task's label set, "
                f"e.g. row {unknown[0]['id']!r} has {unknown[0]['gold']!r}; labels: {', '.join(self.task.labels)}"
            )

    def _has_demos(self, round_: int) -> bool:
        return bool(cio.table_files(self._path(f"round-{round_}", "demos")))

    def _demos(self, round_: int) -> pd.DataFrame:
        return self._table(f"round-{round_}", "demos").to_pandas()

    def _train_settings(self, r: int, labels) -> TrainSettings:
        s = self.cfg.slm
        return TrainSettings(
            encoder_path=str(resolve_encoder(s.model)), labels=tuple(labels), max_length=s.max_length,
            epochs=s.epochs, warmup_epochs=s.warmup_epochs, batch_size=s.batch_size, lr=s.lr,
            gmm_threshold=s.gmm_threshold, mixup_alpha=s.mixup_alpha, mixup_weight=s.mixup_weight,
            consistency_weight=s.consistency_weight, ramp_epochs=s.ramp_epochs,
            word_dropout=s.word_dropout, noisy_rows=s.noisy_rows, seed=self.cfg.loop.seed + r, head_lr=s.head_lr,
            label_floor=s.label_floor,
        )

    def train(self, r: int) -> None:
        with self._stage(f"train-{r}") as info:
            if info is None:
                return
            s = self.cfg.slm
            labels = self.task.labels

            def to_training_rows(batch: pd.DataFrame) -> pd.DataFrame:
                out = pd.DataFrame({"text": batch["text"]})
                out["label_idx"] = label_indices(batch["label"] if "label" in batch else [None] * len(batch), labels)
                if "view" in batch:
                    out["view"] = batch["view"]
                return out

            rows = self._table(f"round-{r - 1}", "labels").map_batches(to_training_rows, batch_format="pandas")
            unlabelled = self._unlabelled_sample(r) if self.incremental else None
            if unlabelled is not None:
                rows = rows.union(unlabelled.map_batches(to_training_rows, batch_format="pandas"))
            settings = self._train_settings(r, labels)
            result = train_slm(rows, settings, str(self._path(f"round-{r}", "slm")), s.num_workers, _want_gpu(s.use_gpu),
                               desc=f"SLM training, round {r}")
            info.update({k: result[k] for k in ("train_loss", "clean_fraction") if k in result})

    def score(self, r: int) -> None:
        with self._stage(f"score-{r}") as info:
            if info is None:
                return
            partial, final = self._path(f"round-{r}", "scores.partial"), self._path(f"round-{r}", "scores")
            for p in (partial, final):
                shutil.rmtree(p, ignore_errors=True)
            scored = self._scored(self._table(f"round-{r - 1}", "labels"), r)
            cio.write_table(scored.map_batches(cio.conform, batch_format="pandas"), partial)
            losses = _loss_sample(cio.read_table(partial, columns=["loss"]), self.cfg.loop.seed)
            gmm = fit_loss_gmm(losses[np.isfinite(losses)], seed=self.cfg.loop.seed)
            threshold = self.cfg.slm.gmm_threshold

            def add_clean(batch: pd.DataFrame) -> pd.DataFrame:
                loss = batch["loss"].to_numpy(dtype=float)
                p = np.where(np.isfinite(loss), gmm.p_clean(np.nan_to_num(loss, nan=gmm.hi)), 0.0)
                batch["p_clean"] = p
                batch["clean"] = p > threshold
                return batch

            cio.write_table(cio.read_table(partial).map_batches(add_clean, batch_format="pandas").map_batches(cio.conform, batch_format="pandas"), final)
            shutil.rmtree(partial)
            scores = self._table(f"round-{r}", "scores")
            clean = scores.filter(lambda row: bool(row["clean"]))
            n, n_clean = scores.count(), clean.count()
            # Over labelled rows only: an abstention cannot agree, and counting it would make a round
            # with more abstentions look like a worse SLM to the early-stop guard.
            agreement = scores.filter(self.agrees).count() / max(scores.filter(self.labelled).count(), 1)
            info.update(gmm=gmm.__dict__, clean=n_clean, rows=n, agreement=agreement)
            metrics = {"clean_fraction": n_clean / max(n, 1), "slm_agreement": agreement}
            if self.cfg.corpus.gold_column:
                metrics.update(self._score_metrics(scores, clean, n_clean))
            self.manifest.round_metrics(r, **metrics)

    def _score_metrics(self, scores: ray.data.Dataset, clean: ray.data.Dataset, n_clean: int) -> dict:
        return {"slm_acc": M.label_quality(scores, "pred", self.task.labels)["acc"],
                "clean_precision": M.label_quality(clean, "label", self.task.labels)["acc"] if n_clean else None,
                **M.split_quality(scores)}

    def select(self, r: int) -> None:
        with self._stage(f"select-{r}") as info:
            if info is None:
                return
            loop = self.cfg.loop
            candidates = self._demo_candidates(self._table(f"round-{r}", "scores"))
            demos = pd.DataFrame()
            if candidates.limit(1).count():  # Ray's groupby fails on a dataset with no rows at all
                demos = candidates.groupby("label").map_groups(
                    select_demos, fn_kwargs=dict(top_ratio=loop.top_ratio, k=loop.demos_per_class,
                                                 sample_cap=loop.medoid_sample_cap, seed=loop.seed, columns=self.demo_columns),
                    batch_format="pandas",
                ).to_pandas()
            if demos.empty:
                demos = pd.DataFrame(columns=[*self.demo_columns, "origin"])
            if (demos.empty or demos["label"].nunique() < len(self._demo_groups())) and self._has_demos(r - 1):
                # A class with no clean agreeing row keeps its previous demos, so no class goes unshown.
                previous = self._demos(r - 1)
                missing = previous[~previous["label"].isin(set(demos["label"]))]
                demos = pd.concat([demos, missing], ignore_index=True)
            shutil.rmtree(self._path(f"round-{r}", "demos"), ignore_errors=True)
            cio.write_part(demos[[*self.demo_columns, "origin"]], self._path(f"round-{r}", "demos"), "demos")
            info.update(demos=len(demos), per_class=demos["label"].value_counts().to_dict())

    demo_columns: tuple[str, ...] = ("id", "text", "label")

    def _demo_groups(self) -> tuple[str, ...]:
        return self.task.labels

    def _demo_candidates(self, scores: ray.data.Dataset) -> ray.data.Dataset:
        """Clean rows where the SLM agrees with the label, with what selection needs."""
        return cio.where(
            scores, lambda row: bool(row["clean"]) and row["label"] is not None and row["pred"] == row["label"],
            ["clean", "label", "pred"],
        ).select_columns(["id", "text", "label", "loss", "embedding"])

    def refine(self, r: int, llm: LLMSettings | None) -> LLMSettings | None:
        labels_dir = self._path(f"round-{r}", "labels")
        with self._stage(f"refine-{r}") as info:
            if info is None:
                return llm
            scores = self._table(f"round-{r}", "scores")

            clean_dir = labels_dir / "clean"
            shutil.rmtree(clean_dir, ignore_errors=True)
            reask = REASK[self.cfg.loop.refine_rows]
            kept = scores.filter(lambda row: not reask(row))
            cio.write_table(kept.map_batches(self.carry, batch_format="pandas").map_batches(cio.conform, batch_format="pandas"), clean_dir)
            noisy = scores.filter(reask).map_batches(self.carry, batch_format="pandas")
            n_noisy = noisy.count()
            answers_dir = self._path(f"round-{r}", "answers")
            if n_noisy:
                llm = llm or self._llm()
                annotate(
                    noisy, self._demos(r), self.task, llm, str(self._path(f"round-{r}", "slm", "encoder")),
                    self.shots, r, str(answers_dir), total=n_noisy,
                )
            kept_previous = self._accept_answers(answers_dir, labels_dir / "refined")
            usage = self._llm_usage(answers_dir, r)
            self._notice_abstentions(labels_dir / "refined", f"of the {n_noisy} rows re-asked in round {r}")
            table = self._table(f"round-{r}", "labels")
            changed = table.filter(self.changed).count()
            n = table.count()
            info.update(noisy=n_noisy, changed=changed, **usage)
            metrics = {"noisy_rows": n_noisy, "changed": changed, "changed_fraction": changed / max(n, 1),
                       "kept_previous": kept_previous, **usage}
            metrics.update(self._label_metrics(table, "label", "llm"))
            if self.cfg.corpus.gold_column:
                metrics.update(self._final_metrics(table.map_batches(self.fill, batch_format="pandas")))
            self.manifest.round_metrics(r, **metrics)
        return llm

    def _accept_answers(self, answers_dir: Path, refined_dir: Path) -> int:
        """The refinery's labels from its answers (`loop.refine_accept`); how many kept the earlier label."""
        shutil.rmtree(refined_dir, ignore_errors=True)
        answers = cio.read_table(answers_dir)
        if answers is None:
            return 0
        accepted = answers.map_batches(self.accept, fn_kwargs={"rule": self.cfg.loop.refine_accept}, batch_format="pandas")
        cio.write_table(accepted.map_batches(cio.conform, batch_format="pandas"), refined_dir)
        return cio.read_table(refined_dir).filter(lambda row: bool(row.get("kept_previous"))).count()

    accept = staticmethod(lambda batch, rule: keep_surer_answer(batch, rule))
    carry = staticmethod(lambda batch: carry_to_refinery(batch))
    fill = staticmethod(lambda batch: _fill_abstentions(batch))
    changed = staticmethod(lambda row: row["label"] != row["prev_label"])
    agrees = staticmethod(lambda row: row["label"] is not None and row["pred"] == row["label"])
    labelled = staticmethod(lambda row: row["label"] is not None)

    def _final_metrics(self, final: ray.data.Dataset) -> dict:
        return {"final_acc": M.label_quality(final, "label", self.task.labels)["acc"], **M.label_moves(final)}

    def expand(self, r: int, n_rows: int, llm: LLMSettings | None) -> LLMSettings | None:
        """Incremental mode: the LLM annotates a fresh P of the corpus with round r's demos."""
        labels_dir = self._path(f"round-{r}", "labels")
        with self._stage(f"expand-{r}") as info:
            if info is None:
                return llm
            remaining = n_rows - cio.count_rows(self._path(f"round-{r - 1}", "labels"))
            n = min(subset_size(n_rows, self.cfg.loop.subset_fraction), remaining)
            if n > 0:
                llm = llm or self._llm()
                annotate(
                    self._fresh_rows(r, n, self.cfg.loop.subset_strategy), self._demos(r), self.task, llm,
                    str(self._path(f"round-{r}", "slm", "encoder")), self.shots, r,
                    str(labels_dir / "added"), total=n,
                )
            added = self._llm_usage(labels_dir / "added", r)
            refined = self._llm_usage(self._path(f"round-{r}", "answers"), r)
            info.update(added=added["llm_calls"])
            self.manifest.round_metrics(
                r, added_rows=added["llm_calls"], annotated_rows=cio.count_rows(labels_dir),
                **{k: refined[k] + added[k] for k in added},
            )
        return llm

    def _fresh_rows(self, r: int, n: int, strategy: str) -> ray.data.Dataset:
        """The `n` rows round r adds, picked once and written, so a resumed stage asks about the
        same rows (an SLM re-scoring could break ties differently)."""
        folder = self._path(f"round-{r}", "fresh")
        if not folder.exists():
            partial = folder.with_name("fresh.partial")
            shutil.rmtree(partial, ignore_errors=True)
            pool = self._unannotated(r - 1) if r > 0 else self._table("corpus")
            if strategy == "random":
                keyed = pool.map_batches(_with_draw, fn_kwargs={"seed": self.cfg.loop.seed}, batch_format="pandas")
                picked = keyed.sort(["draw", "id"]).limit(n)
            else:
                scored = self._scored(pool, r)
                keyed = scored.map_batches(_with_uncertainty, fn_kwargs={"strategy": strategy}, batch_format="pandas")
                picked = keyed.sort(["draw", "id"], descending=[True, False]).limit(n)
            cio.write_table(picked.drop_columns(["draw"]).map_batches(cio.conform, batch_format="pandas"), partial)
            partial.rename(folder)
        return self._table(f"round-{r}", "fresh")

    def _unannotated(self, r: int) -> ray.data.Dataset:
        """Corpus rows with no label in round r's table: a distributed anti-join, no id set in memory."""
        corpus = self._table("corpus")
        done = cio.read_table(self._path(f"round-{r}", "labels"), columns=["id"])
        if done is None:
            return corpus
        n = self.manifest.stage("ingest")["rows"]
        return corpus.join(done, "left_anti", num_partitions=cio.join_partitions(n), on=("id",))

    def _unlabelled_sample(self, r: int) -> ray.data.Dataset | None:
        """About as many rows round r - 1 left unannotated as it annotated, for round r's
        consistency loss. Written once: Ray Train re-reads its dataset every epoch, and the
        anti-join is the dear part."""
        folder = self._path(f"round-{r}", "unlabelled")
        if not folder.exists():
            n_rows = self.manifest.stage("ingest")["rows"]
            n_labelled = cio.count_rows(self._path(f"round-{r - 1}", "labels"))
            share = min(1.0, n_labelled / max(n_rows - n_labelled, 1))
            rest = self._unannotated(r - 1)
            if share < 1.0:
                rest = rest.random_sample(share, seed=self.cfg.loop.seed + r)
            partial = folder.with_name("unlabelled.partial")
            shutil.rmtree(partial, ignore_errors=True)
            cio.write_table(rest.select_columns([c for c in ("id", "text", "view") if c in rest.columns()]), partial)
            partial.mkdir(parents=True, exist_ok=True)  # an empty sample is still a finished one
            partial.rename(folder)
        return cio.read_table(folder)

    def _scored(self, ds: ray.data.Dataset, r: int) -> ray.data.Dataset:
        """`ds` with round r's SLM's prediction, loss and embedding per row (one scorer actor)."""
        return ds.map_batches(
            self.scorer, fn_constructor_kwargs={"folder": str(self._path(f"round-{r}", "slm"))},
            batch_format="pandas", batch_size=64, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1,
            **cio.NO_RESTARTS,
        )

    def _notice_abstentions(self, folder: Path, where: str) -> None:
        """Say in plain words when the LLM left rows without a label in the label set."""
        ds = None if self.entities else cio.read_table(folder, columns=["label"])
        if ds is None:
            return
        n, missing = cio.count_rows(folder), ds.filter(lambda row: row["label"] is None).count()
        if missing:
            print(f"[freeal_ray] the LLM gave no answer in the label set for {missing} of {n} rows {where} "
                  f"({missing / max(n, 1):.1%}): the SLM labels them", flush=True)

    def _llm_usage(self, folder: Path, round_: int) -> dict:
        ds = cio.read_table(folder, columns=["prompt_tokens", "output_tokens"])
        if ds is None:
            return {"llm_calls": 0, "prompt_tokens": 0, "output_tokens": 0}
        sums = ds.sum(["prompt_tokens", "output_tokens"]) or {}
        return {"llm_calls": ds.count(), "prompt_tokens": int(sums.get("sum(prompt_tokens)") or 0),
                "output_tokens": int(sums.get("sum(output_tokens)") or 0)}

    def _label_metrics(self, ds: ray.data.Dataset, column: str, prefix: str) -> dict:
        if not self.cfg.corpus.gold_column:
            return {}
        q = M.label_quality(ds, column, self.task.labels)
        return {f"{prefix}_acc": q["acc"], f"{prefix}_coverage": q["coverage"], f"{prefix}_macro_f1": q["macro_f1"]}

    def finalize(self, last: int) -> RunResult:
        labels_out, slm_out = self._path("labels"), self._path("slm")
        if self.manifest.stage("finalize").get("rounds", last) != last:
            del self.manifest.data["stages"]["finalize"]  # a finished run resumed with more rounds
        with self._stage("finalize") as info:
            if info is not None:
                shutil.rmtree(labels_out, ignore_errors=True)
                final = self._table(f"round-{last}", "labels").map_batches(self.fill, batch_format="pandas")
                drop = [c for c in ("demo_ids", "prompt_tokens", "output_tokens", "prev_label", "prev_tags", "prev_confidence",
                                    "kept_previous") if c in final.columns()]
                cio.write_table(final.drop_columns(drop).map_batches(cio.conform, batch_format="pandas"), labels_out)
                if self.incremental and last:
                    info.update(self._label_the_rest(last, labels_out / "slm"))
                info.update(self._label_the_duplicates(labels_out / "duplicates"))
                if last:
                    shutil.rmtree(slm_out, ignore_errors=True)
                    shutil.copytree(self._path(f"round-{last}", "slm"), slm_out)
                info.update(rounds=last)
        from freeal_ray.report import write_report

        write_report(self.out, self.manifest.data)
        return RunResult(self.out, self.manifest.data["rounds"], labels_out, slm_out if slm_out.exists() else None)


    def _label_the_duplicates(self, out: Path) -> dict:
        """Rows that repeat a labelled row's text get its label (a distributed join on its id)."""
        duplicates = cio.read_table(self._path("duplicates"))
        if duplicates is None:
            return {}
        canonical = self._table("labels").rename_columns({"id": "duplicate_of"})  # read before `out` is written
        copies = duplicates.rename_columns({"canonical_id": "duplicate_of"}).join(
            canonical, "inner", num_partitions=cio.join_partitions(cio.count_rows(self._path("duplicates"))), on=("duplicate_of",)
        )
        cio.write_table(copies.map_batches(cio.conform, batch_format="pandas"), out)
        return {"duplicates_labelled": cio.count_rows(out)}

    def _label_the_rest(self, last: int, out: Path) -> dict:
        """Incremental mode: the last SLM labels every row the LLM never saw (source 'slm')."""
        rest = self._scored(self._unannotated(last), last)
        labelled = rest.map_batches(_slm_labels, fn_kwargs={"round_": last}, batch_format="pandas")
        cio.write_table(labelled.map_batches(cio.conform, batch_format="pandas"), out)
        n = cio.count_rows(out)
        metrics = {"slm_labelled_rows": n}
        if self.cfg.corpus.gold_column:
            metrics["final_acc"] = M.label_quality(self._table("labels"), "label", self.task.labels)["acc"]
        self.manifest.round_metrics(last, **metrics)
        return {"slm_labelled": n}


def _with_draw(batch: pd.DataFrame, seed: int) -> pd.DataFrame:
    batch["draw"] = row_draws(batch["id"], seed)
    return batch


def _with_uncertainty(batch: pd.DataFrame, strategy: str) -> pd.DataFrame:
    """Scored rows back to corpus rows, keyed by how unsure the SLM is (sorted on as `draw`)."""
    batch["draw"] = uncertainty(np.stack(batch["probs"].to_numpy()), strategy)
    return batch.drop(columns=[c for c in SLM_COLUMNS if c in batch])


def _slm_labels(batch: pd.DataFrame, round_: int) -> pd.DataFrame:
    batch["label"] = batch["pred"]
    batch["confidence"] = [float(np.max(p)) for p in batch["probs"]]
    batch["source"] = "slm"
    batch["round"] = round_
    return batch.drop(columns=[c for c in SLM_COLUMNS if c in batch])


def _loss_sample(ds: ray.data.Dataset, seed: int, cap: int = 200_000) -> np.ndarray:
    """Up to about `cap` losses for fitting the GMM: five numbers are learnt, so a sample does."""
    n = ds.count()
    if n > cap:
        ds = ds.random_sample(cap / n, seed=seed)
    return np.concatenate([b["loss"] for b in ds.iter_batches(batch_format="numpy", batch_size=65536)] or [np.zeros(0)])


# Which scored rows the refinery re-asks (loop.refine_rows); every other row keeps its label.
REASK = {
    "noisy": lambda row: not bool(row["clean"]),  # abstentions have no loss, so they are never clean
    "abstentions": lambda row: row["label"] is None,
    "none": lambda row: False,
}


def carry_to_refinery(batch: pd.DataFrame) -> pd.DataFrame:
    """A scored row as the refinery keeps or re-asks it: this round's SLM prediction and the
    label it had (and how sure the LLM was of it), without the SLM's scratch columns (earlier
    rounds' copies are replaced)."""
    batch = batch.drop(columns=[c for c in ("slm_pred", "prev_label", "prev_confidence", "kept_previous") if c in batch])
    batch = batch.rename(columns={"pred": "slm_pred"})
    batch["prev_label"] = batch["label"]
    batch["prev_confidence"] = batch["confidence"] if "confidence" in batch else np.nan
    return batch.drop(columns=[c for c in SLM_COLUMNS if c in batch])


def keep_surer_answer(batch: pd.DataFrame, rule: str) -> pd.DataFrame:
    """A re-asked row's label (`loop.refine_accept`): with `surer`, the new answer replaces the
    earlier label only where the LLM is surer of it than it was of that label (or had none), so
    a hesitant second answer does not overturn a confident first one; `always` takes every new
    answer, FreeAL's rule. Rows keep `kept_previous` to say which rule held."""
    batch = batch.copy()
    keep = np.zeros(len(batch), dtype=bool)
    if rule == "surer" and "prev_label" in batch:
        label, prev = M.as_strings(batch["label"]), M.as_strings(batch["prev_label"])
        hesitant = _floats(batch["confidence"], -1.0) < _floats(batch["prev_confidence"], -1.0)
        had = prev != None  # noqa: E711 -- elementwise on object arrays
        keep = had & ((label == None) | ((label != prev) & hesitant))  # noqa: E711
        batch.loc[keep, "label"] = batch.loc[keep, "prev_label"]
        batch.loc[keep, "confidence"] = batch.loc[keep, "prev_confidence"]
    batch["kept_previous"] = keep
    return batch


def _floats(column, missing: float) -> np.ndarray:
    """A column as floats, nulls (None, NaN, pandas' NA) as `missing`."""
    return pd.to_numeric(pd.Series(list(column), dtype=object), errors="coerce").fillna(missing).to_numpy(dtype=float)


def _given_labels(batch: pd.DataFrame, labels: tuple[str, ...]) -> pd.DataFrame:
    known = set(labels)
    batch["label"] = [x if x in known else None for x in batch["given_label"]]
    batch["source"] = "given"
    batch["confidence"] = np.nan
    batch["round"] = 0
    return batch


def _fill_abstentions(batch: pd.DataFrame) -> pd.DataFrame:
    """Where the LLM abstained, the SLM's prediction becomes the label (source 'slm')."""
    if "slm_pred" not in batch:
        return batch
    missing = batch["label"].isna()
    batch.loc[missing, "label"] = batch.loc[missing, "slm_pred"]
    batch.loc[missing, "source"] = "slm"
    return batch


def _require_demos(demos: pd.DataFrame, task, counts: dict) -> None:
    missing = [label for label in task.labels if label not in set(demos["label"])]
    if missing:
        log.warning("the LLM wrote no usable demo for %s; those classes start with no demos", missing)
    if demos.empty:
        raise RuntimeError(
            f"demo synthesis produced no usable demo: of {counts['written']} written examples, {counts['empty']} were "
            f"empty, {counts['copied_a_corpus_row']} repeated a corpus row they were shown and "
            f"{counts['written_for_two_labels']} were written for two labels; add examples to the task file or try "
            "another llm.model"
        )


def _want_gpu(setting: str) -> bool:
    if setting in ("true", "false"):
        return setting == "true"
    return cluster_can_have_gpus()


def cluster_can_have_gpus() -> bool:
    """GPUs in the cluster now, or in the node types its autoscaler may start: a cluster that scales
    its GPU workers from zero (cluster/) has none at the instant a run starts, yet its annotators
    and trainers belong on them. Ray Train and Data read the same autoscaler config."""
    if ray.cluster_resources().get("GPU", 0) > 0:
        return True
    try:
        from ray._private.state import state

        most = state.get_max_resources_from_cluster_config() or {}
    except Exception:  # an older Ray, or a cluster with no autoscaler: what it has now is all it gets
        log.debug("no autoscaler config to read", exc_info=True)
        return False
    return most.get("GPU", 0) > 0
