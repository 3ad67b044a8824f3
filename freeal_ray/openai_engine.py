"""An OpenAI-compatible endpoint as an engine: a vLLM server or a hosted API.

`llm.api_style: chat` speaks `/chat/completions` (what hosted models serve today): a prompt built as
chat messages (prompts.py) goes as those messages, any other prompt as one user message.
`completions` speaks the legacy `/completions` route with the prompt as text.

Answers are constrained to the label set in the first way the server accepts: vLLM's structured
outputs, then (chat) a JSON schema whose `label` is an enum in `response_format`. A server that
refuses every way stops the run with what it refused, unless `llm.unconstrained: parse` allows
asking unconstrained, where the answer is read and one outside the label set abstains. The
answer's probability comes from the log-probs the server returns; where it returns none, the
confidence is unknown (NaN), never a made-up 1.0.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from freeal_ray.engines import TOP_P, Choice, Engine, EngineConfig, Extraction
from freeal_ray.errors import FreeALError
from freeal_ray.prompt_fit import answer_room

log = logging.getLogger(__name__)


class EndpointRefused(FreeALError):
    """The endpoint refused every form of a request the run's settings allow."""


@dataclass(frozen=True)
class Variant:
    """One form of a request: its extra arguments, and how its answer reads (the bare word, a
    JSON object, or free text)."""

    name: str
    kwargs: dict = field(default_factory=dict)
    reads: str = "word"


class OpenAIEngine(Engine):
    """Any OpenAI-compatible endpoint. Requests run `max_concurrency` at a time under a
    requests-per-minute limit; the openai client retries rate limits, 5xx and timeouts with
    exponential backoff (honouring Retry-After). A 400 is not retried: the next form of the request
    is tried instead, and the first form the server accepts is kept for the rest of the run."""

    def __init__(self, config: EngineConfig):
        from openai import OpenAI

        key = os.environ.get(config.api_key_env) or "EMPTY"  # a local vLLM server needs none
        self.config = config
        self.chat = config.api_style == "chat"
        self._client = OpenAI(base_url=config.api_base, api_key=key, max_retries=config.max_retries, timeout=120)
        self._limiter = RateLimiter(config.requests_per_minute)
        self._accepted: dict[str, int] = {}  # purpose -> the first variant the server accepted
        self._lock = threading.Lock()
        self.refusals: dict[str, str] = {}  # variant name -> what the server said, for the run log

    def _request(self, prompt: str, **kwargs):
        self._limiter.wait()
        if self.chat:
            return self._client.chat.completions.create(model=self.config.model_path, messages=as_messages(prompt), **kwargs)
        return self._client.completions.create(model=self.config.model_path, prompt=prompt, **kwargs)

    def _ask(self, purpose: str, prompt: str, variants: list[Variant], **kwargs):
        """The server's answer to the first variant it accepts, from the one accepted before."""
        from openai import BadRequestError

        for i in range(self._accepted.get(purpose, 0), len(variants)):
            try:
                out = self._request(prompt, **kwargs, **variants[i].kwargs)
            except BadRequestError as exc:
                said = _server_message(exc)
                if variants[i].name not in self.refusals:
                    log.warning("the endpoint refused %s for %s (%s); trying the next form", variants[i].name, purpose, said)
                self.refusals[variants[i].name] = said
                continue
            with self._lock:
                self._accepted[purpose] = max(self._accepted.get(purpose, 0), i)
            return out, variants[i]
        refused = "; ".join(f"{v.name}: {self.refusals.get(v.name, '?')}" for v in variants)
        hint = ("" if self.config.unconstrained == "parse" else
                " Set llm.unconstrained: parse to ask unconstrained and read the answers (one outside the label set abstains).")
        raise EndpointRefused(f"the endpoint {self.config.api_base} refused every request form allowed for {purpose}: {refused}.{hint}")

    def _map(self, fn, items):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.config.max_concurrency) as pool:
            return list(pool.map(fn, items))

    def choose(self, prompts, choices):
        variants = self._choice_variants(list(choices))

        def one(prompt):
            out, variant = self._ask("label answers", prompt, variants, max_tokens=answer_room(choices), temperature=0.0)
            return _choice(out, variant, choices)

        return self._map(one, prompts)

    def _choice_variants(self, choices: list[str]) -> list[Variant]:
        logprobs = {"logprobs": True, "top_logprobs": 1} if self.chat else {"logprobs": 1}
        vllm = {"extra_body": {"structured_outputs": {"choice": choices}}}
        variants = [Variant("vLLM structured outputs", {**vllm, **logprobs})]
        if self.chat:
            schema = {"response_format": label_schema([c.strip() for c in choices])}
            variants += [Variant("a JSON schema in response_format", {**schema, **logprobs}, "json"),
                         Variant("a JSON schema in response_format without log-probs", schema, "json")]
        return variants + self._unconstrained(logprobs)

    def _unconstrained(self, logprobs: dict) -> list[Variant]:
        if self.config.unconstrained != "parse":
            return []
        return [Variant("unconstrained", logprobs, "free"), Variant("unconstrained without log-probs", {}, "free")]

    def generate(self, prompts, max_tokens, temperature, stop=("\n",)):
        def one(prompt):
            out = self._request(prompt, max_tokens=max_tokens, temperature=temperature, top_p=TOP_P, stop=list(stop)[:4])
            return (_text(out) or "").strip()

        return self._map(one, prompts)

    def extract(self, prompts, schema, max_tokens, temperature=0.0):
        variants = [Variant("vLLM structured outputs", {"extra_body": {"structured_outputs": {"json": schema}}})]
        if self.chat:
            variants.append(Variant("a JSON schema in response_format", {"response_format": _json_format("entities", schema)}))
        variants += [Variant("unconstrained", {}, "free")] if self.config.unconstrained == "parse" else []

        def one(prompt):
            out, _ = self._ask("entity answers", prompt, variants, max_tokens=max_tokens, temperature=temperature,
                               **({"top_p": TOP_P} if temperature > 0 else {}))
            prompt_tokens, output_tokens = _usage(out)
            return Extraction(_text(out) or "", prompt_tokens, output_tokens)

        return self._map(one, prompts)


def as_messages(prompt: str) -> list[dict]:
    """A prompt built as chat messages (a JSON list, prompts.chat_messages_json) as those
    messages; any other prompt as one user message."""
    if prompt.startswith('[{"role"'):
        try:
            return json.loads(prompt)
        except ValueError:
            pass
    return [{"role": "user", "content": prompt}]


def label_schema(words: Sequence[str]) -> dict:
    """response_format for an answer {"label": one of `words`} (OpenAI's structured outputs)."""
    schema = {"type": "object", "properties": {"label": {"type": "string", "enum": list(words)}},
              "required": ["label"], "additionalProperties": False}
    return _json_format("label", schema)


def _json_format(name: str, schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": strict_subset(schema), "strict": True}}


def strict_subset(schema):
    """`schema` without a string's length bounds, which strict structured outputs of hosted APIs
    refuse (Azure's docs give maxLength as their example); vLLM's own route keeps them."""
    if isinstance(schema, list):
        return [strict_subset(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    bounds = ("maxLength", "minLength") if schema.get("type") == "string" else ()
    return {k: strict_subset(v) for k, v in schema.items() if k not in bounds}


def _server_message(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        message = error.get("message") if isinstance(error, dict) else error
        if message:
            return str(message)[:300]
    return str(exc)[:300]


def _text(out) -> str | None:
    first = out.choices[0]
    return first.message.content if hasattr(first, "message") else first.text


def _usage(out) -> tuple[int, int]:
    usage = out.usage
    return (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)


def read_answer(text: str, reads: str, choices: Sequence[str]) -> int | None:
    """The chosen index, or None: a bare word must be a choice; a JSON answer's `label` must be;
    free text is read as a choice when it is one (case, spaces and end punctuation aside) or
    names exactly one of them as a word."""
    words = [c.strip().lower() for c in choices]
    if reads == "json":
        try:
            text = str(json.loads(text)["label"])
        except (ValueError, TypeError, KeyError):
            return None
    answer = text.strip().lower()
    if reads == "free":
        answer = answer.strip(" .!\"'`*")
        if answer not in words:
            named = [i for i, w in enumerate(words) if re.search(rf"(?<!\w){re.escape(w)}(?!\w)", answer)]
            return named[0] if len(named) == 1 else None
    return words.index(answer) if answer in words else None


def _choice(out, variant: Variant, choices: Sequence[str]) -> Choice:
    index = read_answer(_text(out) or "", variant.reads, choices)
    logprob = _answer_logprob(out)
    if index is None:
        confidence = 0.0
    else:
        confidence = math.nan if logprob is None else math.exp(logprob)  # unknown, not certain
    return Choice(index, confidence, *_usage(out))


def _answer_logprob(out) -> float | None:
    """The answer's log-probability: the sum over its tokens (a JSON answer's scaffolding tokens
    are near-certain), or None where the server returned none."""
    logprobs = getattr(out.choices[0], "logprobs", None)
    if logprobs is None:
        return None
    content = getattr(logprobs, "content", None)
    values = [t.logprob for t in content or []] if content is not None else list(getattr(logprobs, "token_logprobs", None) or [])
    values = [v for v in values if v is not None]
    return sum(values) if values else None


class RateLimiter:
    """Spaces calls at least 60/rpm seconds apart across threads (0: no limit)."""

    def __init__(self, requests_per_minute: int):
        self.interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self.next_at = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        import time

        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_at)
            self.next_at = start + self.interval
        time.sleep(max(0.0, start - now))
