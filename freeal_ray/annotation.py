"""LLM annotation on Ray Data: retrieve demos, build prompts, ask the engine, save as we go.
Text classification and NER share the stage; their adapters (kinds/) pick the prompt builder and
the worker that reads the answers.

rows -> a PromptBuilder (encoder + FAISS over the demo pool, on the run's model host) -> LLM client tasks -> the run's
engine actors (one engine each, loaded once per run) -> Parquet parts, written at least every
`save_every_s`. A re-run skips ids that already have a part, so a kill mid-stage costs at most that
much LLM work and nothing saved is asked again.
"""

from __future__ import annotations

import logging
import os

import pandas as pd
import ray
from tqdm.auto import tqdm

from freeal_ray.engine_actors import LLMSettings, engine_pool
from freeal_ray.errors import FreeALError, short_reason
from freeal_ray.kinds import kind_for
from freeal_ray.model_host import map_with_model
from freeal_ray.prompts import answer_choices
from freeal_ray.tables import NO_RESTARTS, PartWriter, conform, count_rows, without_ids
from freeal_ray.task import EntityTask, Task
from freeal_ray.workers import label_answers

log = logging.getLogger(__name__)


# Ray Data's driver keeps a stats record for every block a stage has produced until the stage ends
# (ray-project/ray#66016; ~25 KB a block measured here), so driver memory grows with blocks, not rows.
MAX_BLOCKS_PER_STAGE = 200


def rows_per_block(total: int | None, batch_size: int) -> int:
    """Rows per annotation block: one engine batch, so the progress bar moves as each is answered,
    until a stage would pass MAX_BLOCKS_PER_STAGE blocks; then whole batches per block, so a
    million-row stage costs the driver what a hundred-thousand-row one does."""
    if not total or MAX_BLOCKS_PER_STAGE <= 0:
        return batch_size
    return batch_size * max(1, -(-total // (batch_size * MAX_BLOCKS_PER_STAGE)))


def annotate(
    rows: ray.data.Dataset,
    demos: pd.DataFrame,
    task: Task | EntityTask,
    settings: LLMSettings,
    encoder_path: str,
    shots: int,
    round_: int,
    out_dir: str,
    total: int | None = None,
) -> None:
    """Label `rows` with the LLM into Parquet parts under `out_dir`, skipping ids done before.

    Classification rows get `label` and `confidence`; NER rows (an `EntityTask`, rows with
    `tokens`, demos with `tokens` and `tags`) get BIO `tags` and per-row span counts."""
    n_done = count_rows(out_dir)
    if n_done:
        rows = without_ids(rows, out_dir)
        total = None if total is None else max(0, total - n_done)
    rows = rows.repartition(target_num_rows_per_block=rows_per_block(total, settings.batch_size))
    kind = kind_for(task)
    builder, builder_kwargs = kind.prompt_builder(settings)
    prompts = map_with_model(
        rows, f"{builder.__module__}:{builder.__qualname__}",
        dict(task=task, demos=demos, encoder_path=encoder_path, shots=shots, max_chars=settings.max_text_chars, **builder_kwargs),
        {"compute": ray.data.ActorPoolStrategy(size=1), "num_cpus": 0.5, **NO_RESTARTS},
        batch_format="pandas", batch_size=settings.batch_size,
    )
    if settings.runner == "ray_data_llm":
        from freeal_ray.ray_llm import choose_labels

        labelled = choose_labels(prompts, settings, answer_choices(task, settings.prompt_style)).map_batches(
            label_answers, fn_kwargs=dict(task=task, round_=round_), batch_format="pandas", num_cpus=0.1
        )
    else:
        worker, worker_kwargs = kind.llm_worker(settings)
        labelled = prompts.map_batches(
            worker,
            fn_kwargs=dict(task=task, engines=engine_pool(settings), round_=round_, **worker_kwargs),
            batch_format="pandas",
            batch_size=settings.batch_size,
            compute=ray.data.TaskPoolStrategy(size=settings.replicas),  # a batch in flight per engine
            num_cpus=0.1,
        )
    crash_after = int(os.environ.get("FREEAL_RAY_CRASH_AFTER_PARTS", "0"))  # test hook: a kill mid-stage
    parts, trimmed, unsure = PartWriter(out_dir, settings.save_every_s), 0, 0
    with tqdm(total=total, desc=f"LLM annotation, round {round_}", unit="row") as bar:
        try:
            for batch in labelled.iter_batches(batch_format="pandas", batch_size=None):
                if parts.add(conform(batch)) and crash_after and parts.parts >= crash_after:
                    os._exit(17)
                bar.update(len(batch))
                trimmed += int(batch["prompt_trimmed"].sum()) if "prompt_trimmed" in batch else 0
                if "confidence" in batch:
                    unsure += int((batch["label"].notna() & batch["confidence"].isna()).sum())
            parts.flush()
        except FreeALError:
            parts.flush()  # answers already paid for reach disk before the error does
            raise
        except Exception as exc:
            parts.flush()
            raise FreeALError(
                f"LLM annotation failed in round {round_}: {short_reason(exc)}. The {count_rows(out_dir)} rows "
                f"finished so far are saved in {out_dir}; re-run the same command to resume."
            ) from exc
    if trimmed:
        print(f"[freeal_ray] {trimmed} prompts in round {round_} were longer than llm.max_model_len "
              f"({settings.engine_config.max_model_len} tokens) allows: their least similar demos were left out, "
              "then their text cut, to fit", flush=True)
    if unsure:
        print(f"[freeal_ray] the endpoint returned no log-probabilities for {unsure} answers in round {round_}: their "
              "confidence is unknown (left empty, never taken as certain)", flush=True)
