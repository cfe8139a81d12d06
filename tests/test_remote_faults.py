"""Fault injection for the OpenAI-compatible backend, on loopback only: servers that keep the stream
open without sending text (keep-alive comments, empty chunks), that never answer, that send data
that is not JSON or an HTML page, and credentials inside the base URL.

Every scripted loop is bounded (a few hundred iterations, and it ends when the test's server
closes), and every timeout is short, so a regression fails the test instead of hanging it.
"""
from __future__ import annotations

import json
import socket

import duckdb
import pytest

from generation.backends.openai_compat import OpenAIBackend, OpenAIConfig, RemoteError
from generation.backends.openai_config import redact_text, redact_url
from generation.batch import BatchRow, BatchSettings, generate_batch
from generation.streaming import GenerationRequest, generate
from storage.traces import get_trace, save_trace
from test_openai_backend import SAMPLING, THINK, FakeServer, backend, chunk

# Long enough that a loaded machine still sees each token in time, short enough to keep tests quick.
STALL_S = 0.6
# Iterations of a scripted keep-alive loop: at 0.02 s each, far beyond STALL_S, yet bounded.
LOOP_BOUND = 1500


@pytest.fixture
def server():
    with FakeServer() as s:
        yield s


def _keepalive(server, first: list[dict], filler: bytes):
    """Send `first` chunks, then `filler` over and over until the client leaves (bounded)."""
    def lines():
        for c in first:
            yield f"data: {json.dumps(c)}\n\n".encode()
        for _ in range(LOOP_BOUND):
            if server.release.wait(0.02):
                return
            yield filler
    return lines()


def _stored(db_config, finished):
    assert finished.stored is not None, finished.error
    return get_trace(db_config, finished.stored).record


@pytest.mark.parametrize("filler", [
    b": ping\n\n",  # SSE comments: the client library skips them, so nothing ever reaches the caller
    (f"data: {json.dumps({**chunk(), 'choices': []})}\n\n").encode(),  # chunks without choices
    (f"data: {json.dumps(chunk(''))}\n\n").encode(),  # empty deltas
], ids=["keepalive-comments", "empty-choices", "empty-deltas"])
def test_a_stream_without_new_text_ends_at_the_stall_timeout_and_is_stored(server, db_config, filler):
    server.script = lambda h, body: h.stream_lines(_keepalive(server, [chunk("<think>Let"), chunk(" me")], filler))
    finished = generate(backend(server, stall_timeout_s=STALL_S),
                        GenerationRequest("What is 2 + 3?", SAMPLING, THINK),
                        on_finish=lambda r: save_trace(db_config, r))
    record = _stored(db_config, finished)
    assert record.stop_reason == "error" and record.meta["partial"] is True and record.meta["timeout"] == "stall"
    assert "no new token for 0.6 s" in record.meta["stream_error"] and "after 2 tokens" in record.meta["stream_error"]
    assert record.thinking_text == "Let me" and "stall timeout" in finished.error
    assert server.client_left.wait(10)  # the client closed the stream; the loop did not just run out


def test_a_server_that_never_answers_ends_at_the_stall_timeout(server, db_config):
    server.script = lambda h, body: server.release.wait(30)  # reads the request, then sends nothing
    finished = generate(backend(server, stall_timeout_s=STALL_S, max_retries=10),
                        GenerationRequest("What is 2 + 3?", SAMPLING, THINK),
                        on_finish=lambda r: save_trace(db_config, r))
    record = _stored(db_config, finished)
    assert record.meta["timeout"] == "stall" and record.meta["partial"] is True and len(record.tokens) == 0
    assert "after 0 tokens" in record.meta["stream_error"]
    # Retries count against the same stall budget: not 11 waits of a full timeout each.
    assert len(server.requests) <= 3


def test_listing_models_from_a_silent_server_is_bounded(server):
    server.get_script = lambda h: server.release.wait(30)
    with pytest.raises(RemoteError, match="Could not list the models"):
        OpenAIBackend(OpenAIConfig(server.url, stall_timeout_s=STALL_S))


def test_the_overall_deadline_ends_a_stream_that_never_finishes(server, db_config):
    def tokens():
        yield f"data: {json.dumps(chunk('<think>'))}\n\n".encode()
        for k in range(LOOP_BOUND):
            if server.release.wait(0.02):
                return
            yield f"data: {json.dumps(chunk(f' w{k}'))}\n\n".encode()

    server.script = lambda h, body: h.stream_lines(tokens())
    sampling = type(SAMPLING)(0.7, 0.95, 100_000, 32, 0)  # a budget it never reaches
    finished = generate(backend(server, stall_timeout_s=30, deadline_s=1.0),
                        GenerationRequest("What is 2 + 3?", sampling, THINK),
                        on_finish=lambda r: save_trace(db_config, r))
    record = _stored(db_config, finished)
    assert record.meta["timeout"] == "deadline" and "overall deadline of 1 s" in record.meta["stream_error"]
    assert len(record.tokens) >= 2 and record.thinking_text.startswith("w0 w1")
    assert server.client_left.wait(10)


def test_sampled_rows_that_stall_are_kept_as_marked_records(server):
    server.script = lambda h, body: h.stream_lines(_keepalive(server, [chunk("<think>a")], b": ping\n\n"))
    records = generate_batch(backend(server, stall_timeout_s=STALL_S, concurrency=2),
                             [BatchRow("What is 2 + 3?", "5")] * 2, THINK, BatchSettings(SAMPLING))
    assert [r.meta["timeout"] for r in records] == ["stall", "stall"]
    assert all(r.stop_reason == "error" and r.thinking_text == "a" for r in records)


def test_timeouts_come_from_the_environment_and_are_checked(monkeypatch):
    monkeypatch.setenv("THINKSCOPE_STALL_TIMEOUT_S", "7.5")
    monkeypatch.setenv("THINKSCOPE_DEADLINE_S", "90")
    config = OpenAIConfig("http://127.0.0.1:1/v1")
    assert (config.stall_timeout_s, config.deadline_s) == (7.5, 90.0)
    assert OpenAIConfig("http://127.0.0.1:1/v1", stall_timeout_s=3).stall_timeout_s == 3
    monkeypatch.setenv("THINKSCOPE_STALL_TIMEOUT_S", "soon")
    with pytest.raises(ValueError, match="THINKSCOPE_STALL_TIMEOUT_S must be a number"):
        OpenAIConfig("http://127.0.0.1:1/v1")
    monkeypatch.delenv("THINKSCOPE_STALL_TIMEOUT_S")
    with pytest.raises(ValueError, match="deadline_s must be a positive"):
        OpenAIConfig("http://127.0.0.1:1/v1", deadline_s=0)


# -- messages that name the fault -----------------------------------------------------------------

def test_data_that_is_not_json_is_reported_as_such(server, db_config):
    server.script = lambda h, body: h.stream_lines(iter([f"data: {json.dumps(chunk('<think>ok'))}\n\n".encode(),
                                                         b"data: {this is not json\n\n"]))
    finished = generate(backend(server), GenerationRequest("What is 2 + 3?", SAMPLING, THINK),
                        on_finish=lambda r: save_trace(db_config, r))
    record = _stored(db_config, finished)
    assert "not JSON after 1 tokens" in record.meta["stream_error"] and "{this is not json" in finished.error
    assert "connection broke" not in finished.error and record.thinking_text == "ok"


def test_an_html_page_with_status_200_is_reported_as_such(server):
    page = b"<!DOCTYPE html><html><body><h1>Welcome to nginx!</h1></body></html>"
    server.script = lambda h, body: h.raw(200, "text/html; charset=utf-8", page)
    finished = generate(backend(server), GenerationRequest("What is 2 + 3?", SAMPLING, THINK))
    assert "HTML page" in finished.error and "without a finish reason" not in finished.error
    assert len(server.requests) == 1  # not retried: asking again gets the same page


def test_a_200_answer_without_any_chunk_says_so(server):
    server.script = lambda h, body: h.raw(200, "application/json", json.dumps({"ok": True}).encode())
    finished = generate(backend(server), GenerationRequest("What is 2 + 3?", SAMPLING, THINK))
    assert "held no chat chunks" in finished.error and "application/json" in finished.error


def test_an_error_event_inside_the_stream_is_the_servers_error(server):
    error = {"error": {"message": "the model is overloaded", "type": "server_error"}}
    server.script = lambda h, body: h.stream_lines(iter([f"data: {json.dumps(chunk('<think>a'))}\n\n".encode(),
                                                         f"data: {json.dumps(error)}\n\n".encode()]))
    finished = generate(backend(server), GenerationRequest("What is 2 + 3?", SAMPLING, THINK))
    assert "reported an error mid-stream after 1 tokens" in finished.error and "overloaded" in finished.error


# -- credentials in the base URL --------------------------------------------------------------------

@pytest.mark.parametrize("url, shown", [
    ("http://alice:s3cret@gpu-box:8000/v1", "http://REDACTED@gpu-box:8000/v1"),
    ("http://gpu-box/v1?api_key=sk-live-1&region=eu", "http://gpu-box/v1?api_key=REDACTED&region=eu"),
    ("https://h/v1?access_token=t0k&X-Amz-Signature=abc", "https://h/v1?access_token=REDACTED&X-Amz-Signature=REDACTED"),
    ("http://[::1]:9/v1", "http://[::1]:9/v1"),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown
    assert redact_text(f"Could not reach {url} (ConnectError).") == f"Could not reach {shown} (ConnectError)."


def test_credentials_in_the_base_url_are_never_stored_shown_or_raised(server, db_config):
    secrets = ("alice", "s3cret-pw", "sk-query-9f8e")
    server.script = lambda h, body: h.sse([chunk("<think>a</think>5"), chunk(finish="stop")])
    port = server.url.split(":")[2].split("/")[0]
    # The test server, reached through a URL that carries credentials.
    b = OpenAIBackend(OpenAIConfig(f"http://alice:s3cret-pw@127.0.0.1:{port}/v1?api_key=sk-query-9f8e",
                                   model="fake-model"))
    finished = generate(b, GenerationRequest("What is 2 + 3?", SAMPLING, THINK),
                        on_finish=lambda r: save_trace(db_config, r))
    record = get_trace(db_config, finished.stored).record
    assert record.meta["backend"]["base_url"].startswith("http://REDACTED@127.0.0.1")
    con = duckdb.connect(str(db_config.db_path), read_only=True)
    try:
        dump = str(con.execute("SELECT * FROM traces").fetchall()) + str(con.execute("SELECT * FROM runs").fetchall())
    finally:
        con.close()
    assert "REDACTED" in dump and not any(s in dump for s in secrets)
    assert not any(s in repr(b.config) for s in secrets)
    # An unreachable server: the error names the URL without its credentials.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    down = OpenAIBackend(OpenAIConfig(f"http://alice:s3cret-pw@127.0.0.1:{closed_port}/v1?api_key=sk-query-9f8e",
                                      model="m", max_retries=0))
    failed = generate(down, GenerationRequest("What is 2 + 3?", SAMPLING, THINK))
    assert "Could not reach http://REDACTED@127.0.0.1" in failed.error
    assert not any(s in failed.error + json.dumps(failed.record.meta) for s in secrets)
