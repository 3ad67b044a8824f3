"""`ray job submit` against a real local cluster started with `ray start --head`."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import write_jsonl

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def head_node():
    """A one-node cluster from the project's environment, stopped afterwards."""
    temp = tempfile.mkdtemp(prefix="/tmp/frj")  # Ray's socket paths must stay short
    gcs, dashboard = free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    # Every port explicit: the test session's own Ray holds the defaults (the dashboard agent's
    # 52365 among them), and a second agent that cannot bind leaves the job API with no agent.
    ports = {name: free_port() for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
        "runtime-env-agent-port", "node-manager-port", "object-manager-port", "ray-client-server-port")}
    start = [RAY, "start", "--head", "--block", f"--port={gcs}", "--num-cpus=4", "--include-dashboard=true",
             f"--dashboard-port={dashboard}", f"--temp-dir={temp}", "--disable-usage-stats",
             *(f"--{name}={port}" for name, port in ports.items())]
    # --block keeps this cluster's processes under one parent we can stop, leaving any other Ray
    # instance on the machine (the test session's own) alone; `ray stop` would end them all.
    head = subprocess.Popen(start, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        # The job's output is on disk by now; SIGTERM makes `ray start --block` stop its processes
        # one by one (~30 s here), and nothing of this throwaway cluster needs a clean stop.
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=60)
        subprocess.run(["pkill", "-9", "-f", temp], check=False)  # any of its processes that left the group
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_job_submit_labels_a_corpus(head_node, tmp_path):
    address, env = head_node
    rows = [{"id": f"r{i}", "text": f"film number {i}", "llm": ["negative", "positive"][i % 2]} for i in range(30)]
    corpus = write_jsonl(tmp_path / "corpus.jsonl", rows)
    out = tmp_path / "run"
    entry = [
        sys.executable, str(ROOT / "jobs" / "label_corpus.py"), "--corpus", str(corpus), "--task", "sentiment",
        "--set", "corpus.llm_label_column=llm", "--set", "loop.rounds=0", "--set", f"output={out}",
    ]
    deadline = time.time() + 180
    while True:  # the dashboard's job API comes up a while after the head starts
        submitted = subprocess.run([RAY, "job", "submit", "--address", address, "--", *entry],
                                   env=env, capture_output=True, text=True, timeout=600)
        if submitted.returncode == 0 or time.time() > deadline:
            break
        time.sleep(3)
    log = submitted.stdout + submitted.stderr
    assert submitted.returncode == 0 and "succeeded" in log, log[-3000:]
    labels = pd.read_parquet(out / "labels").set_index("id")
    assert labels["label"].to_dict() == {r["id"]: r["llm"] for r in rows}
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"ingest", "annotate-0", "finalize"} <= set(manifest["stages"])
