"""An OpenAI-compatible endpoint as an engine: a vLLM server or a hosted API."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from freeal_ray.engines import Choice, Engine, EngineConfig, Extraction


class OpenAIEngine(Engine):
    """Any OpenAI-compatible completions endpoint: a vLLM server or a hosted API.

    Requests run `max_concurrency` at a time under a requests-per-minute limit; the openai client
    retries rate limits, 5xx and timeouts with exponential backoff (honouring Retry-After). A vLLM
    server constrains answers to the label set; other endpoints may answer anything, and an
    answer outside the set is an abstention.
    """

    def __init__(self, config: EngineConfig):
        from openai import OpenAI

        key = os.environ.get(config.api_key_env) or "EMPTY"  # a local vLLM server needs none
        self.config = config
        self._client = OpenAI(base_url=config.api_base, api_key=key, max_retries=config.max_retries, timeout=120)
        self._limiter = RateLimiter(config.requests_per_minute)
        self._constrain = True

    def _complete(self, **kwargs):
        self._limiter.wait()
        return self._client.completions.create(model=self.config.model_path, **kwargs)

    def _map(self, fn, items):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.config.max_concurrency) as pool:
            return list(pool.map(fn, items))

    def choose(self, prompts, choices):
        from openai import BadRequestError

        def one(prompt):
            kwargs = dict(prompt=prompt, max_tokens=8, temperature=0.0, logprobs=1)
            if self._constrain:
                try:
                    out = self._complete(extra_body={"structured_outputs": {"choice": list(choices)}}, **kwargs)
                    return _choice_from_completion(out, choices)
                except BadRequestError:
                    self._constrain = False  # a hosted API without structured outputs: answers are checked instead
            return _choice_from_completion(self._complete(**kwargs), choices)

        return self._map(one, prompts)

    def generate(self, prompts, max_tokens, temperature, stop=("\n",)):
        def one(prompt):
            out = self._complete(prompt=prompt, max_tokens=max_tokens, temperature=temperature, top_p=0.95, stop=list(stop)[:4])
            return out.choices[0].text.strip()

        return self._map(one, prompts)


    def extract(self, prompts, schema, max_tokens):
        from openai import BadRequestError

        def one(prompt):
            kwargs = dict(prompt=prompt, max_tokens=max_tokens, temperature=0.0)
            out = None
            if self._constrain:
                try:
                    out = self._complete(extra_body={"structured_outputs": {"json": schema}}, **kwargs)
                except BadRequestError:
                    self._constrain = False  # unconstrained answers are parsed, and counted where they fail
            out = out or self._complete(**kwargs)
            usage = out.usage
            return Extraction(out.choices[0].text or "", usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0)

        return self._map(one, prompts)


class RateLimiter:
    """Spaces calls at least 60/rpm seconds apart across threads (0: no limit)."""

    def __init__(self, requests_per_minute: int):
        import threading

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


def _choice_from_completion(completion, choices: Sequence[str]) -> Choice:
    first = completion.choices[0]
    text = first.text or ""
    index = next((i for i, c in enumerate(choices) if c.strip() == text.strip()), None)
    logprobs = getattr(first, "logprobs", None)
    token_logprobs = [lp for lp in (getattr(logprobs, "token_logprobs", None) or []) if lp is not None]
    confidence = math.exp(sum(token_logprobs)) if index is not None and token_logprobs else (1.0 if index is not None else 0.0)
    usage = completion.usage
    return Choice(index, confidence, usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0)
