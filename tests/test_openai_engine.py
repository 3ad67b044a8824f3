"""The OpenAI-compatible engine against a local HTTP endpoint: retries, rate limit, parsing.

The endpoint here is a small stand-in server, because what is under test is the client: how it
retries a 429 and a 500, spaces requests, reads answers and log-probs, and abstains on an answer
outside the label set. (The real vLLM engine is tested in test_engine_annotation.py.)
"""

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from freeal_ray.engines import EngineConfig
from freeal_ray.openai_engine import OpenAIEngine, RateLimiter


class Endpoint(BaseHTTPRequestHandler):
    """Both routes of an OpenAI-compatible server. `refuse` names request fields it answers with a
    400 (as hosted APIs do for vLLM's structured_outputs), `logprobs` whether it returns any."""

    failures = []  # status codes to answer with before succeeding
    requests = []
    refuse = set()
    logprobs = True

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Endpoint.requests.append((time.monotonic(), body, self.headers.get("Authorization"), self.path))
        if Endpoint.failures:
            self._send(Endpoint.failures.pop(0), {"error": {"message": "slow down"}})
            return
        refused = sorted(f for f in Endpoint.refuse if body.get(f))
        if refused:
            self._send(400, {"error": {"message": f"{refused[0]} is not supported by this model"}})
            return
        chat = self.path.endswith("/chat/completions")
        prompt = " ".join(m["content"] for m in body["messages"]) if chat else body["prompt"]
        word = "positive" if "good" in prompt else ("the answer is negative." if "bad" in prompt else "maybe")
        text = json.dumps({"label": word}) if "response_format" in body else word
        give = bool(body.get("logprobs")) and Endpoint.logprobs
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": 1, "total_tokens": 1}
        if chat:
            logprobs = {"content": [{"token": text, "logprob": -0.5, "bytes": None, "top_logprobs": []}]} if give else None
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": logprobs}
            payload = {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"], "choices": [choice], "usage": usage}
        else:
            text = " " + text
            logprobs = {"tokens": [text], "token_logprobs": [-0.5], "top_logprobs": None, "text_offset": [0]} if give else None
            choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": logprobs}
            payload = {"id": "c", "object": "text_completion", "created": 0, "model": body["model"], "choices": [choice], "usage": usage}
        self._send(200, payload)

    def _send(self, code, payload):
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Retry-After", "0")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint(monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Endpoint.failures, Endpoint.requests, Endpoint.refuse, Endpoint.logprobs = [], [], set(), True
    monkeypatch.setenv("FREEAL_TEST_KEY", "sk-test")
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


def config(base, **kw):
    return EngineConfig(model_path="served-model", api_base=base, api_key_env="FREEAL_TEST_KEY", **kw)


def test_answers_map_to_the_label_set_and_unknown_answers_abstain(endpoint):
    engine = OpenAIEngine(config(endpoint, max_concurrency=4, api_style="completions"))
    got = engine.choose(["a good film", "an odd film", "good again"], [" negative", " positive"])
    assert [c.index for c in got] == [1, None, 1]
    assert got[0].confidence == pytest.approx(2.718281828 ** -0.5) and got[1].confidence == 0.0
    assert got[0].prompt_tokens == 3 and got[0].output_tokens == 1
    _, body, auth, path = Endpoint.requests[0]
    assert path == "/v1/completions" and body["model"] == "served-model"
    assert body["structured_outputs"] == {"choice": [" negative", " positive"]}
    assert auth == "Bearer sk-test"  # the key comes from the named environment variable


def test_rate_limits_and_server_errors_are_retried(endpoint):
    Endpoint.failures = [429, 500]
    engine = OpenAIEngine(config(endpoint, max_concurrency=1, max_retries=3))
    got = engine.choose(["a good film"], [" negative", " positive"])
    assert got[0].index == 1 and len(Endpoint.requests) == 3


def test_retries_give_up_with_the_error(endpoint):
    Endpoint.failures = [503] * 5
    engine = OpenAIEngine(config(endpoint, max_concurrency=1, max_retries=1))
    with pytest.raises(Exception, match="503|Service|slow down"):
        engine.choose(["a good film"], [" negative", " positive"])
    assert len(Endpoint.requests) == 2


def test_rate_limiter_spaces_requests():
    limiter = RateLimiter(requests_per_minute=1200)  # one per 50 ms
    started = time.monotonic()
    threads = [threading.Thread(target=limiter.wait) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - started >= 0.19
    assert RateLimiter(0).interval == 0.0


CHOICES = ["negative", "positive"]  # a chat prompt's answers: the bare words


def test_the_chat_route_gets_the_messages_and_the_answer_its_probability(endpoint):
    from freeal_ray.prompts import messages_json

    engine = OpenAIEngine(config(endpoint))
    messages = [{"role": "system", "content": "Label the review."}, {"role": "user", "content": "Text: a good film"}]
    got = engine.choose([messages_json(messages), "a plain good prompt"], CHOICES)
    assert [c.index for c in got] == [1, 1] and got[0].confidence == pytest.approx(2.718281828 ** -0.5)
    (_, first, _, path), (_, second, _, _) = sorted(Endpoint.requests, key=lambda r: len(r[1]["messages"]), reverse=True)
    assert path == "/v1/chat/completions" and first["messages"] == messages
    assert second["messages"] == [{"role": "user", "content": "a plain good prompt"}]  # a plain prompt: one user turn
    assert first["structured_outputs"] == {"choice": CHOICES} and first["logprobs"] is True
    assert first["max_tokens"] >= len("positive")  # room for the longest label, not a fixed few tokens


def test_a_hosted_endpoint_without_structured_outputs_or_logprobs_gets_a_schema_and_unknown_confidence(endpoint):
    Endpoint.refuse = {"structured_outputs", "logprobs"}
    engine = OpenAIEngine(config(endpoint, max_concurrency=1))
    got = engine.choose(["a good film", "an odd film", "good again"], CHOICES)
    assert [c.index for c in got] == [1, None, 1]
    assert math.isnan(got[0].confidence) and got[1].confidence == 0.0  # unknown, never a made-up 1.0
    accepted = [body for _, body, _, _ in Endpoint.requests if "response_format" in body and "logprobs" not in body]
    assert accepted[0]["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"] == CHOICES
    # the first prompt found the form the server takes (3 requests); the next two go straight to it
    assert len(Endpoint.requests) == 5 and len(accepted) == 3


def test_a_strict_schema_leaves_out_the_sentence_length_bound_that_vllm_s_route_keeps(endpoint):
    from freeal_ray.ner import synthesis_schema

    Endpoint.refuse = {"structured_outputs"}
    OpenAIEngine(config(endpoint, max_concurrency=1, api_style="chat")).extract(["Write a sentence."], synthesis_schema(["PER"]), 64)
    asked, accepted = (body for _, body, _, _ in Endpoint.requests)
    assert asked["structured_outputs"]["json"]["properties"]["sentence"]["maxLength"] == 400
    strict = accepted["response_format"]["json_schema"]["schema"]
    assert strict["properties"]["sentence"] == {"type": "string"} and strict["required"] == ["sentence", "entities"]


def test_an_endpoint_that_refuses_every_constraint_stops_unless_answers_may_be_parsed(endpoint):
    from freeal_ray.openai_engine import EndpointRefused

    Endpoint.refuse = {"structured_outputs", "response_format"}
    with pytest.raises(EndpointRefused, match="structured_outputs is not supported.*llm.unconstrained: parse"):
        OpenAIEngine(config(endpoint, max_concurrency=1)).choose(["a good film"], CHOICES)
    got = OpenAIEngine(config(endpoint, max_concurrency=1, unconstrained="parse")).choose(
        ["a good film", "a bad film", "an odd film"], CHOICES)
    assert [c.index for c in got] == [1, 0, None]  # "the answer is negative." is read; "maybe" abstains
    assert got[0].confidence == pytest.approx(2.718281828 ** -0.5)


def test_free_answers_are_read_only_when_they_name_one_label():
    from freeal_ray.openai_engine import read_answer

    assert read_answer(" Positive.", "free", CHOICES) == 1
    assert read_answer("**negative**", "free", CHOICES) == 0
    assert read_answer("It is positive, not negative", "free", CHOICES) is None
    assert read_answer('{"label": "positive"}', "json", CHOICES) == 1 and read_answer("{}", "json", CHOICES) is None
    assert read_answer("positive ", "word", CHOICES) == 1 and read_answer("positively", "word", CHOICES) is None


@pytest.fixture(scope="module")
def vllm_server(tiny_models):
    """A real `vllm.entrypoints.openai.api_server` on the CPU, serving the tiny model."""
    import os
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "ERROR"}
    server = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_models["llm"]),
         "--served-model-name", "tiny", "--port", str(port), "--max-model-len", "1024", "--compilation-config", '{"mode": 0}'],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the vLLM server exited: {server.stderr.read()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            break
        except OSError:
            time.sleep(1)
    else:
        server.kill()
        pytest.fail("the vLLM server did not start in 300 s")
    yield f"http://127.0.0.1:{port}/v1"
    server.terminate()
    server.wait(timeout=60)


@pytest.mark.slow
def test_a_real_vllm_server_answers_chat_messages_within_the_label_set_with_their_probability(vllm_server):
    from freeal_ray.ner import answer_schema
    from freeal_ray.prompts import messages_json

    engine = OpenAIEngine(EngineConfig(model_path="tiny", api_base=vllm_server, max_concurrency=4))
    prompts = [messages_json([{"role": "system", "content": "Is the review positive or negative?"},
                              {"role": "user", "content": f"Text: the film was {word}"}])
               for word in ("superb and lovely", "awful and dull", "great", "boring")]
    got = engine.choose(prompts, CHOICES)
    assert all(c.index in (0, 1) for c in got) and all(0.0 < c.confidence <= 1.0 for c in got)  # real log-probs
    assert engine.refusals == {} and all(c.prompt_tokens > 10 for c in got)  # vLLM took the structured choice
    entities = engine.extract(prompts[:2], answer_schema(["PER", "LOC"]), 128)
    assert engine.refusals == {} and all(e.output_tokens > 0 for e in entities)
    finished = [e for e in entities if e.output_tokens < 128]  # an answer cut by max_tokens is not whole JSON
    assert all(isinstance(json.loads(e.text)["entities"], list) for e in finished)  # held to the schema
