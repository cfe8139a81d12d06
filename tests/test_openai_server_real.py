"""The OpenAI-compatible backend against a real server: `transformers serve` on loopback with the
embedded model's converted directory (CPU; it ignores logprobs). Few tokens: the CPU is slow."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from analysis.reasoning import ReasoningFormat
from generation.backends.openai_compat import OpenAIBackend, OpenAIConfig
from generation.backends.serve import transformers_serve
from generation.decoding import SamplingConfig
from generation.strategies import StrategySettings
from generation.strategies.runner import PromptItem, run_strategy
from generation.streaming import GenerationRequest, generate
from generation.sweep import SweepSettings, run_sweep
from storage.runs import sweep_cells
from storage.traces import count_traces, get_trace, save_trace

REPO = Path(__file__).resolve().parent.parent
MARKER = ReasoningFormat(kind="answer_marker")


@pytest.fixture(scope="session")
def served(model_cache_dir):
    """(base URL, model directory) of a running `transformers serve`; stopped after the session."""
    model_dir = model_cache_dir / "models" / "SmolLM2-135M-Instruct"
    try:
        with transformers_serve(model_dir) as url:
            yield url, model_dir
    except RuntimeError as exc:
        pytest.fail(str(exc))


def test_streaming_generation_through_the_server(served, db_config):
    url, model_dir = served
    backend = OpenAIBackend(OpenAIConfig(url))
    assert backend.name == str(model_dir)  # serve names its pinned model by the path; the backend asks
    seen = []
    request = GenerationRequest("What is 2 + 3?", SamplingConfig(0.7, 0.95, 6, 4, 0), MARKER, "5")
    finished = generate(backend, request, on_token=seen.append, on_finish=lambda r: save_trace(db_config, r))
    record = get_trace(db_config, finished.stored).record
    assert finished.error is None and len(seen) >= 1 and len(record.tokens) == len(seen)
    assert "".join(record.tokens.text) == record.meta["raw_text"] and record.meta["raw_text"].strip()
    assert record.stop_reason in ("eos", "max_tokens") and record.meta["backend"]["mode"] == "chat"
    assert record.meta["logprobs"] is False  # serve ignores logprobs; the trace says so


def test_self_consistency_through_the_server(served, db_config):
    url, model_dir = served
    backend = OpenAIBackend(OpenAIConfig(url, concurrency=2, template=str(model_dir)))
    settings = StrategySettings(sampling=SamplingConfig(0.7, 0.95, 6, 4, 0), n=2)
    run = run_strategy(db_config, backend, "self_consistency", [PromptItem("What is 2 + 3?", "5")], MARKER, settings)
    assert len(run.trace_ids[0]) == 2 and not run.stopped
    for trace_id in run.trace_ids[0]:
        record = get_trace(db_config, trace_id).record
        assert record.model == str(model_dir) and record.stop_reason in ("eos", "max_tokens")
        assert record.meta["backend"]["mode"] == "completions" and len(record.tokens) >= 1
    assert run.selections[0].rule and run.metrics["total_tokens"] >= 2


def test_cancelled_sweep_through_the_server_resumes(served, db_config):
    url, model_dir = served
    backend = OpenAIBackend(OpenAIConfig(url, concurrency=1, template=str(model_dir)))
    settings = SweepSettings("What is 9 + 8?", "17", (3, 6), 1, max_answer_tokens=3, batch_size=1)
    stop = threading.Event()

    def progress(done, total, tokens):
        if done >= 1:  # the first cell is stored: cancel the second
            stop.set()

    first = run_sweep(db_config, backend, MARKER, settings, progress, stop)
    assert first.stopped and first.generated == 1 and first.missing == 1
    assert len(sweep_cells(db_config, first.key)) == 1
    rest = run_sweep(db_config, backend, MARKER, settings)
    assert rest.generated == 1 and rest.missing == 0 and count_traces(db_config) == 2
    forced = [get_trace(db_config, c.trace_id).record for c in rest.cells]
    # A budget reached while thinking forces "Final Answer:" through prefix continuation.
    assert all(r.meta.get("forced_end_position") is None or "Final Answer:" in r.meta["raw_text"] for r in forced)


def test_cli_generate_streams_through_the_server(served, tmp_path):
    url, _ = served
    db = tmp_path / "cli.duckdb"
    env = {**os.environ, "THINKSCOPE_DB": str(db)}
    out = subprocess.run(
        [sys.executable, "cli.py", "generate", "--backend", "openai", "--base-url", url, "--prompt", "What is 2 + 3?",
         "--answer", "5", "--max-thinking", "4", "--max-answer", "3", "--format", "answer_marker"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "── thinking ──" in out.stdout and "stored as trace" in out.stdout
