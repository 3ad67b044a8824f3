"""The config's four sections (corpus, llm, slm, loop): every field with its default and its
reference text (`doc`), which `freeal-ray config-reference` prints and the README copies."""

from __future__ import annotations

from dataclasses import dataclass, field


def _f(default, doc: str, **kw):
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"doc": doc}, **kw)
    return field(default=default, metadata={"doc": doc}, **kw)


@dataclass
class CorpusConfig:
    path: str = _f("", "Corpus file or folder: .jsonl, .csv or .parquet (required).")
    format: str = _f("auto", "auto | jsonl | csv | parquet; auto reads the file extension.")
    id_column: str | None = _f(
        "id", "Column with a unique, stable row id; null generates one from the text's hash."
    )
    text_column: str = _f(
        "text", "Column with the text to label. NER: a list of tokens, or raw text the project tokenises (offsets kept)."
    )
    gold_column: str | None = _f(
        None, "Column with true labels (NER: BIO tags per token), for evaluation only: the loop never reads it to label."
    )
    view_column: str | None = _f(
        None,
        "Column with a second view of each text (e.g. a back-translation) for the consistency "
        "loss; null uses word dropout as the second view.",
    )
    llm_label_column: str | None = _f(
        None,
        "Column with labels an LLM already gave (e.g. from an earlier run or another tool): the loop "
        "starts from them instead of synthesising demos and annotating round 0. A value names a label "
        "by the label or its verbalizer word, in any case and spacing; other values count as "
        "abstentions and are listed with their counts, and a column where none matches is an error.",
    )
    limit: int | None = _f(None, "Use only the first N rows (for a quick look).")


@dataclass
class LLMConfig:
    model: str = _f(
        "auto",
        "Annotator: a preset (qwen2.5-coder-1.5b, qwen2.5-coder-0.5b), a local HF model folder, or auto: the "
        "profile that fits the machine (a GPU or a CPU with native bfloat16: the 1.5B with 10 shots; a CPU "
        "without: the 0.5B with 4 shots; docs/benchmarks.md has the figures).",
    )
    engine: str = _f(
        "vllm",
        "Engine that serves the annotator: vllm (in-process, CPU or GPU build), or openai (any "
        "OpenAI-compatible endpoint: a vLLM server or a hosted API; llm.model is then the served model's name), "
        "or instant (no model, meaningless answers at once: for measuring the pipeline and dry runs).",
    )
    api_base: str = _f("http://127.0.0.1:8000/v1", "openai engine: the endpoint's base URL.")
    api_style: str = _f(
        "chat",
        "openai engine: chat (/chat/completions, what hosted models serve: prompts in llm.prompt_style chat or "
        "chat-turns go as those messages, plain ones as one user message) or completions (the legacy route).",
    )
    unconstrained: str = _f(
        "fail",
        "openai engine, when the endpoint refuses every way of holding answers to the label set (vLLM's "
        "structured outputs, a JSON schema in response_format): fail (stop, naming what it refused) or parse "
        "(ask unconstrained and read the answer; one outside the label set abstains).",
    )
    api_key_env: str = _f("OPENAI_API_KEY", "openai engine: environment variable holding the API key (never the key itself).")
    max_concurrency: int = _f(8, "openai engine: requests in flight per annotator replica.")
    requests_per_minute: int = _f(0, "openai engine: request rate limit per replica; 0 means no limit.")
    max_retries: int = _f(6, "openai engine: retries of a failed request (rate limits, 5xx, timeouts), with exponential backoff.")
    runner: str = _f(
        "auto",
        "How rows reach a vllm engine: actors (one long-lived engine per replica, shared by every stage; "
        "a CPU loads a model in minutes), ray_data_llm (ray.data.llm's vLLM processor, replicas x "
        "tensor_parallel_size GPUs, started per stage), or auto (ray_data_llm on GPUs, actors otherwise).",
    )
    replicas: int = _f(1, "Annotator engines running in parallel.")
    batch_size: int = _f(32, "Rows per engine call.")
    save_every_s: float = _f(
        30.0,
        "Answers are saved to disk at least this often (and every 25,000 rows): a killed run loses at most "
        "this much LLM work. 0 saves every engine batch as its own file, which a fast engine turns into "
        "thousands of small files that every later read plans on the driver.",
    )
    max_model_len: int = _f(
        2048,
        "Longest prompt plus answer, in tokens (the model's own tokenizer counts them). A longer prompt loses its "
        "least similar demos, then the end of its text; the manifest counts such rows as prompts_trimmed.",
    )
    kv_cache_gib: float = _f(2.0, "CPU engine: GiB of memory for the KV cache.")
    cpu_threads: int = _f(
        0,
        "CPU engine: compute threads; 0 is every core the engine's process may run on, split between the "
        "llm.replicas engines (Ray counts an engine as one CPU so the other stages still get scheduled; they "
        "share the cores with it).",
    )
    dtype: str = _f(
        "auto",
        "vllm engine: auto | bfloat16 | float32 | float16. auto is the model's own on GPUs; on a CPU, "
        "bfloat16 where the CPU has it natively (AVX512-BF16, AMX), float32 elsewhere (emulated bfloat16 is far slower).",
    )
    tensor_parallel_size: int = _f(1, "GPU engine: GPUs per annotator replica.")
    use_gpu: str = _f("auto", "auto | true | false: run the engine on GPUs.")
    prompt_style: str = _f(
        "auto",
        "How classification prompts are written: plain (a few-shot completion prompt ending in 'Label:'), "
        "chat (the model's chat template: the instruction as the system message, the demos listed in the "
        "user's message), chat-turns (the demos as earlier user/assistant turns), or auto (the annotator "
        "preset's measured best; chat on a chat endpoint; plain for other models). Chat styles need a vllm "
        "engine with a local model's template, or an openai engine with llm.api_style chat.",
    )
    max_text_chars: int = _f(1000, "Texts are cut to this many characters in prompts.")
    synth_temperature: float = _f(0.8, "Sampling temperature for the texts the LLM writes: round-0 demos (classification; NER's are greedy) "
                                          "and EvoKD's examples (both kinds).")
    synth_max_tokens: int = _f(64, "Longest synthesised demo, in tokens.")


@dataclass
class SLMConfig:
    model: str = _f(
        "all-minilm-l6-v2", "SLM encoder: a preset (all-minilm-l6-v2, all-mpnet-base-v2) or a local HF folder."
    )
    max_length: int = _f(64, "Tokens per text for the SLM.")
    epochs: int = _f(6, "Training epochs per round.")
    warmup_epochs: int = _f(3, "Epochs of plain cross-entropy before the GMM split starts.")
    min_steps: int = _f(
        80,
        "Least optimizer steps per round: a small training set gets more epochs (warm-up and ramp-up stretched "
        "in proportion) until it reaches them. The output head starts from random weights behind a pooler the "
        "sentence encoder never trained, and six epochs of 200 rows (38 steps) left it answering two of TREC's six "
        "classes; 0 keeps slm.epochs whatever the size.",
    )
    batch_size: int = _f(32, "Rows per training step, per worker.")
    lr: float = _f(5e-5, "AdamW learning rate.")
    head_lr: float = _f(
        0.0,
        "Learning rate of the output head, which starts from random weights; 0 means slm.lr for text "
        "classification and 20 x slm.lr for NER, whose per-token head learns too slowly at the encoder's rate "
        "from a few hundred sentences.",
    )
    num_workers: int = _f(1, "Ray Train workers (DDP).")
    use_gpu: str = _f("auto", "auto | true | false: train on GPUs.")
    gmm_threshold: float = _f(0.7, "A row is clean when P(low-loss GMM component) exceeds this.")
    mixup_alpha: float = _f(4.0, "Mixup draws its weight from Beta(alpha, alpha).")
    mixup_weight: float = _f(1.0, "Weight of the mixup loss on clean rows, after ramp-up.")
    consistency_weight: float = _f(1.0, "Weight of the KL consistency loss on noisy rows, after ramp-up.")
    ramp_epochs: int = _f(2, "Epochs over which the mixup and consistency weights ramp up.")
    word_dropout: float = _f(0.15, "Share of words dropped to make the second view.")
    noisy_rows: str = _f(
        "refine",
        "What the SLM learns from rows the GMM calls noisy: refine trains on p_clean * label + (1 - p_clean) * "
        "its own sharpened prediction (DivideMix), so a hard row whose label is right still teaches; drop "
        "keeps only the consistency loss on them.",
    )
    label_floor: float = _f(
        0.5,
        "With noisy_rows=refine, the least weight the given label keeps in a noisy row's target. A loss split "
        "also flags hard rows whose label is right, and there the SLM's guess is often worse than the label; "
        "0 lets the guess replace the label (DivideMix), 1 never moves away from it.",
    )


ROUND0_DEMOS = ("auto", "synthetic", "confident", "mixed", "none")


@dataclass
class LoopConfig:
    rounds: int = _f(2, "Refinement rounds after the initial annotation.")
    prototypes: int = _f(20, "Q: unlabeled rows shown to the LLM as style prototypes in round 0.")
    synth_per_class: int = _f(10, "Demos the LLM writes per class in round 0.")
    round0_demos: str = _f(
        "auto",
        "What round 0 shows the LLM: synthetic (FreeAL: demos it writes itself, the nearest per row), confident "
        "(the LLM labels loop.seed_rows corpus rows zero-shot; per class its top loop.top_ratio by confidence, "
        "then k-medoids, become the demos), mixed (both pools), none (zero-shot: no demo until the SLM picks "
        "some), or auto: confident for text classification in a chat prompt style, whose zero-shot answers "
        "measured trustworthy (docs/benchmarks.md), else synthetic.",
    )
    seed_rows: int = _f(500, "loop.round0_demos confident or mixed: corpus rows the LLM labels zero-shot to find its demos.")
    shots: int | None = _f(None, "m: demos retrieved per row by kNN; null (auto) is the llm.model auto profile's, else 10.")
    top_ratio: float = _f(0.2, "R: per class, the share of clean agreeing rows kept as demo candidates.")
    demos_per_class: int = _f(20, "k-medoids picks this many demos per class from the candidates.")
    medoid_sample_cap: int = _f(2000, "Candidates per class are sampled down to this before k-medoids.")
    min_change: float = _f(0.005, "Stop early when a refinery changes fewer than this share of labels.")
    refine_rows: str = _f(
        "noisy",
        "Rows the refinery re-asks the LLM about: noisy (the rows the SLM judged noisy, and abstentions), "
        "abstentions (only rows with no label), or none (no LLM call; the SLM fills the abstentions). With "
        "corpus.llm_label_column labels from an LLM stronger than the annotator, noisy can change more right "
        "labels than wrong ones.",
    )
    refine_accept: str = _f(
        "surer",
        "Which label a re-asked row keeps: surer (the new answer only where the LLM is surer of it than of the "
        "earlier label, or the row had none) or always (every new answer, FreeAL's rule). On MR (400 rows, 1.5B) "
        "always changed 2 right labels to wrong and 1 wrong to right in two refineries; surer would have kept one "
        "of the two right ones. Classification only; NER refineries take every answer.",
    )
    max_agreement_drop: float = _f(
        0.05,
        "Stop before a round's refinery when its SLM agrees with its training labels on this much smaller a "
        "share of rows than the previous round's SLM did (it trained worse), keeping the previous round's "
        "labels and SLM. 1 turns the guard off. Full-corpus mode only.",
    )
    subset_fraction: float = _f(
        1.0,
        "P: share of the corpus the LLM annotates per round. 1 annotates every row in round 0. Below 1 "
        "(incremental mode), round 0 annotates a random P, every later round but the last a fresh P, "
        "the SLM's consistency loss also trains on unannotated rows, and the SLM labels the rest at the end.",
    )
    subset_strategy: str = _f(
        "random", "Incremental mode: how later rounds pick fresh rows: random, or the SLM's least sure (entropy, margin)."
    )
    mode: str = _f(
        "freeal",
        "freeal (label the corpus: the loop above) or evokd (EvoKD, distil a student from a label set and "
        "task.examples, 0-5 per class, with the corpus optional: its rows are style prototypes and the first probe "
        "of the student; with no examples, round-0 synthesis writes the seeds). Text classification and NER "
        "(an entity task's examples are sentences with their entities listed).",
    )
    evolve_rounds: int | None = _f(
        None,
        "EvoKD rounds: the LLM reads the student's wrong and right answers, analyses its weaknesses, writes hard "
        "and easy examples, a separate call labels them, the student trains on every batch so far. null: 4 in "
        "evokd mode, none in freeal mode; in freeal mode a number runs that many after the last refinery, on "
        "the SLM's mistakes against the clean labels (the examples train the SLM, never join the output labels).",
    )
    evolve_batch: int = _f(16, "EvoKD: examples the LLM writes per round.")
    evolve_hard_share: float = _f(0.5, "EvoKD: share of each batch written as hard examples (aimed at the weaknesses); the rest are easy ones, "
                                         "for the classes with the fewest examples written so far (kept or not). Hard ones lean away from a class whose examples the "
                                         "labelling call mostly rejected in earlier rounds. A round whose student made no mistake on its last "
                                         "probe (the first, from seeds alone) writes easy ones only: there is no weakness to aim at.")
    evolve_shown: int = _f(6, "EvoKD: wrong answers of the student shown to the LLM per round, and as many right ones.")
    evolve_pool: int = _f(64, "EvoKD mode with a corpus: corpus rows the LLM labels as the student's first test.")
    evolve_min_steps: int = _f(
        60, "EvoKD: the student's least number of optimizer steps per round (its training set starts at a few rows)."
    )
    seed: int = _f(0, "Seed for sampling, training and the engine.")
