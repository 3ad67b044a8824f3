"""The OpenAI-compatible engine against a local HTTP endpoint: retries, rate limit, parsing.

The endpoint here is a small stand-in server, because what is under test is the client: how it
retries a 429 and a 500, spaces requests, reads answers and log-probs, and abstains on an answer
outside the label set. (The real vLLM engine is tested in test_engine_annotation.py.)
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from freeal_ray.engines import EngineConfig
from freeal_ray.openai_engine import OpenAIEngine, RateLimiter


class Endpoint(BaseHTTPRequestHandler):
    failures = []  # status codes to answer with before succeeding
    requests = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Endpoint.requests.append((time.monotonic(), body, self.headers.get("Authorization")))
        if Endpoint.failures:
            code = Endpoint.failures.pop(0)
            self.send_response(code)
            self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "slow down"}}')
            return
        answer = " positive" if "good" in body["prompt"] else " maybe"
        payload = {
            "id": "c", "object": "text_completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "text": answer, "finish_reason": "stop",
                         "logprobs": {"tokens": [answer], "token_logprobs": [-0.5], "top_logprobs": None, "text_offset": [0]}}],
            "usage": {"prompt_tokens": len(body["prompt"].split()), "completion_tokens": 1, "total_tokens": 1},
        }
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint(monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Endpoint.failures, Endpoint.requests = [], []
    monkeypatch.setenv("FREEAL_TEST_KEY", "sk-test")
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


def config(base, **kw):
    return EngineConfig(model_path="served-model", api_base=base, api_key_env="FREEAL_TEST_KEY", **kw)


def test_answers_map_to_the_label_set_and_unknown_answers_abstain(endpoint):
    engine = OpenAIEngine(config(endpoint, max_concurrency=4))
    got = engine.choose(["a good film", "an odd film", "good again"], [" negative", " positive"])
    assert [c.index for c in got] == [1, None, 1]
    assert got[0].confidence == pytest.approx(2.718281828 ** -0.5) and got[1].confidence == 0.0
    assert got[0].prompt_tokens == 3 and got[0].output_tokens == 1
    _, body, auth = Endpoint.requests[0]
    assert body["model"] == "served-model" and body["structured_outputs"] == {"choice": [" negative", " positive"]}
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
