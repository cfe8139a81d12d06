"""The OpenAI-compatible backend against a tiny scripted HTTP server written here: reasoning fields,
logprobs, dropped connections, retries, cancellation, bounded concurrency, and the API key."""
from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import duckdb
import pytest

from analysis.reasoning import ReasoningFormat
from analysis.records import FORCED
from generation.backends import BackendUnavailable
from generation.backends.openai_compat import OpenAIBackend, OpenAIConfig
from generation.batch import BatchRow, BatchSettings, BudgetForcing, generate_batch
from generation.decoding import SamplingConfig
from generation.strategies import StrategySettings
from generation.strategies.runner import PromptItem, run_strategy
from generation.streaming import GenerationRequest, LiveGeneration, generate
from generation.sweep import SweepSettings, run_sweep
from storage.runs import sweep_cells
from storage.traces import get_trace, save_trace

THINK = ReasoningFormat(kind="think_tags")
MARKER = ReasoningFormat(kind="answer_marker")
SAMPLING = SamplingConfig(0.7, 0.95, 64, 32, 0)


def chunk(content=None, finish=None, logprob=None, **delta_extra):
    delta = dict(delta_extra)
    if content is not None:
        delta["content"] = content
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    if logprob is not None:
        token = content if content is not None else next(iter(delta_extra.values()))
        choice["logprobs"] = {"content": [{"token": token, "logprob": logprob, "bytes": None,
                                           "top_logprobs": [{"token": token, "logprob": logprob, "bytes": None},
                                                            {"token": "x", "logprob": logprob - 2, "bytes": None}]}]}
    return {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "fake-model", "choices": [choice]}


class FakeServer:
    """A scripted OpenAI-compatible server. `script(handler, body)` answers each POST; `handler.sse`
    sends chunks (and may close the socket early), `handler.status` sends an error status."""

    def __init__(self):
        self.script = None
        self.get_script = None  # answers GET /models when set
        self.requests: list[dict] = []
        self.auth: list[str] = []
        self.inflight = 0
        self.max_inflight = 0
        self.lock = threading.Lock()
        self.client_left = threading.Event()  # a stream_lines writer found the client gone
        self.release = threading.Event()  # set at exit: ends every bounded wait and loop of a script
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                if server.get_script is not None:
                    server.get_script(self)
                    return
                self._json(200, {"object": "list", "data": [{"id": "fake-model", "object": "model", "created": 0,
                                                             "owned_by": "test"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    server.auth.append(self.headers.get("Authorization", ""))
                    server.inflight += 1
                    server.max_inflight = max(server.max_inflight, server.inflight)
                try:
                    server.script(self, body)
                finally:
                    with server.lock:
                        server.inflight -= 1

            def _json(self, status, obj, headers=()):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def status(self, code, headers=()):
                self._json(code, {"error": {"message": f"status {code}", "type": "test"}}, headers)

            def sse(self, chunks, done=True, between=None):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                for k, c in enumerate(chunks):
                    if between is not None:
                        between(k)
                    self.wfile.write(f"data: {json.dumps(c)}\n\n".encode())
                    self.wfile.flush()
                if done:
                    self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

            def raw(self, status, content_type, body: bytes):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def stream_lines(self, lines):
                """An event stream written line by line as given (bytes), until `lines` ends or the client leaves."""
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    for line in lines:
                        self.wfile.write(line)
                        self.wfile.flush()
                except OSError:  # broken pipe / reset: the client closed the stream
                    server.client_left.set()
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    with FakeServer() as s:
        yield s


def backend(server, **kw) -> OpenAIBackend:
    return OpenAIBackend(OpenAIConfig(server.url, **{"backoff_s": 0.01, "backoff_max_s": 0.05, **kw}))


def test_reasoning_content_and_logprobs_are_split_and_stored(server, db_config):
    server.script = lambda h, body: h.sse([
        chunk(role="assistant"),
        chunk(reasoning_content="Two", logprob=-0.1), chunk(reasoning_content=" plus three.", logprob=-0.2),
        chunk("The answer is", logprob=-0.3), chunk(" 5.", logprob=-0.4), chunk(finish="stop"),
    ])
    b = backend(server)
    assert b.name == "fake-model"  # asked the server: no model was given
    seen = []
    finished = generate(b, GenerationRequest("What is 2 + 3?", SAMPLING, THINK, "5"), on_token=seen.append,
                        on_finish=lambda r: save_trace(db_config, r))
    assert finished.error is None
    record = get_trace(db_config, finished.stored).record
    assert record.stop_reason == "eos" and record.model == "fake-model"
    assert record.thinking_text == "Two plus three." and record.answer_text == "The answer is 5."
    assert record.extracted_answer == "5" and record.correct is True
    # The closing tag is added as its own (forced) step: the server sent thinking apart. Forced steps
    # are counted apart from thinking (analysis.records.FORCED).
    assert record.n_thinking_tokens == 2 and record.n_answer_tokens == 2 and len(seen) == 5
    assert record.tokens.phase[2] == FORCED
    assert record.meta["forced_positions"] == [2] and record.tokens.text[2] == "</think>\n\n"
    assert record.tokens.logprob.tolist() == pytest.approx([-0.1, -0.2, math.nan, -0.3, -0.4], nan_ok=True)
    assert record.tokens.top_texts[3][:2] == ["The answer is", "x"] and record.tokens.token_id.tolist() == [-1] * 5
    assert record.meta["logprobs"] is True and record.meta["reasoning_field"] is True
    assert record.meta["backend"]["base_url"] == server.url
    sent = server.requests[0]
    assert sent["logprobs"] is True and sent["top_logprobs"] == 5 and sent["model"] == "fake-model"
    assert sent["stream"] is True and sent["max_tokens"] == 64 + 32


@pytest.mark.parametrize("chunks, thinking, answer", [
    ([chunk(reasoning="Hmm, 2+3."), chunk("5"), chunk(finish="stop")], "Hmm, 2+3.", "5"),
    ([chunk("<think>Hmm"), chunk(", 2+3.</think>"), chunk(" 5"), chunk(finish="stop")], "Hmm, 2+3.", "5"),
    # The template pre-opened <think>: reasoning starts before any opening tag.
    ([chunk("Hmm, 2+3."), chunk("</think>"), chunk("5"), chunk(finish="stop")], "Hmm, 2+3.", "5"),
    ([chunk("It is 5."), chunk(finish="stop")], "", "It is 5."),  # a plain model: no reasoning at all
])
def test_every_place_reasoning_can_arrive(server, chunks, thinking, answer):
    server.script = lambda h, body: h.sse(chunks)
    record = generate(backend(server), GenerationRequest("What is 2 + 3?", SAMPLING, THINK)).record
    assert (record.thinking_text, record.answer_text) == (thinking, answer)
    assert record.stop_reason == "eos"


def test_without_logprobs_the_trace_says_so(server):
    server.script = lambda h, body: h.sse([chunk("Five. Answer: 5"), chunk(finish="length")])
    record = generate(backend(server), GenerationRequest("What is 2 + 3?", SAMPLING, MARKER)).record
    assert record.meta["logprobs"] is False and "no log-probabilities" in record.meta["token_boundaries"]
    assert math.isnan(record.tokens.logprob[0]) and record.tokens.top_ids.shape == (1, 0)
    assert record.stop_reason == "max_tokens" and record.answer_text == "5"
    # The answer-marker format sends the step-by-step system prompt, as the local backend does.
    assert server.requests[0]["messages"][0]["role"] == "system"


def test_dropped_connection_leaves_a_stored_partial_trace(server, db_config):
    server.script = lambda h, body: h.sse([chunk("<think>Let"), chunk(" me"), chunk(" think")], done=False)
    finished = generate(backend(server), GenerationRequest("What is 2 + 3?", SAMPLING, THINK),
                        on_finish=lambda r: save_trace(db_config, r))
    record = get_trace(db_config, finished.stored).record
    assert record.stop_reason == "error" and record.meta["partial"] is True
    assert "after 3 tokens" in record.meta["stream_error"] and "error" in record.meta
    assert record.thinking_text == "Let me think" and finished.error


def test_retries_on_503_and_429_then_succeeds(server):
    answers = iter([503, 429])

    def script(h, body):
        code = next(answers, None)
        if code is None:
            h.sse([chunk("<think>ok</think>5"), chunk(finish="stop")])
        else:
            h.status(code, [("Retry-After", "0")] if code == 429 else ())

    server.script = script
    record = generate(backend(server), GenerationRequest("What is 2 + 3?", SAMPLING, THINK)).record
    assert record.stop_reason == "eos" and record.answer_text == "5" and record.meta["retries"] == 2
    assert len(server.requests) == 3


def test_gives_up_after_max_retries_and_does_not_retry_a_bad_request(server):
    server.script = lambda h, body: h.status(500)
    finished = generate(backend(server, max_retries=2), GenerationRequest("What is 2 + 3?", SAMPLING, THINK))
    assert finished.record.stop_reason == "error" and "500" in finished.error and "after 2 retries" in finished.error
    assert len(server.requests) == 3
    server.requests.clear()
    server.script = lambda h, body: h.status(400)
    finished = generate(backend(server), GenerationRequest("What is 2 + 3?", SAMPLING, THINK))
    assert "400" in finished.error and len(server.requests) == 1


def test_stop_closes_a_stalled_stream(server):
    release = threading.Event()
    waited_out = []

    def stall(k):
        if k == 2 and not release.wait(30):
            waited_out.append(True)

    server.script = lambda h, body: h.sse([chunk("<think>a"), chunk("b"), chunk("c"), chunk(finish="stop")],
                                          between=stall)
    request = GenerationRequest("What is 2 + 3?", SAMPLING, THINK)
    with LiveGeneration(backend(server), request) as live:
        for event in live.events():
            if event is not None and getattr(event, "text", "") == "b":
                live.stop()  # the server now stalls: only closing the stream ends the wait
    assert live.finished.record.stop_reason == "stopped"
    assert not waited_out  # we returned while the server was still stalling
    release.set()


def test_samples_run_concurrently_within_the_bound_and_seeds_differ(server):
    barrier = threading.Barrier(2, timeout=20)

    def script(h, body):
        barrier.wait()  # two requests must be in flight together, or this times out
        h.sse([chunk(f"<think>s{body['seed']}</think>{body['seed']}"), chunk(finish="stop")])

    server.script = script
    ticks = []
    rows = [BatchRow("What is 2 + 3?", "5")] * 6
    records = generate_batch(backend(server, concurrency=2), rows, THINK, BatchSettings(SAMPLING),
                             progress=lambda *a: ticks.append(a))
    assert server.max_inflight == 2
    assert [r.answer_text for r in records] == ["0", "1", "2", "3", "4", "5"]
    assert ticks[-1][:2] == (6, 6)


def test_strategies_that_need_logits_or_prefixes_say_they_are_unavailable(server, db_config):
    b = backend(server)
    assert not b.capabilities.budget_forcing and not b.capabilities.full_distribution
    for name in ("beam_search", "best_of_n", "deepconf_online", "budget_forcing"):
        with pytest.raises(BackendUnavailable, match="unavailable with the backend"):
            run_strategy(db_config, b, name, [PromptItem("What is 2 + 3?", "5")], THINK, StrategySettings(n=2))
    with pytest.raises(BackendUnavailable, match="prefix continuation"):
        run_sweep(db_config, b, THINK, SweepSettings("What is 2 + 3?", "5", (8,), 1))
    assert server.requests == []  # refused before anything was sent


def test_budget_is_cut_without_prefix_continuation(server):
    server.script = lambda h, body: h.sse([chunk(f"w{k} ") for k in range(10)] + [chunk(finish="length")])
    sampling = SamplingConfig(0.7, 0.95, 4, 8, 0)
    record = generate(backend(server), GenerationRequest("What is 2 + 3?", sampling, THINK)).record
    assert record.stop_reason == "max_tokens" and len(record.tokens) == 4 and "budget_cut" in record.meta


def test_api_key_comes_from_the_named_variable_and_is_never_stored(server, db_config, monkeypatch):
    secret = "sk-test-4f1d9c-never-store-me"
    monkeypatch.setenv("MY_SERVER_KEY", secret)
    server.script = lambda h, body: h.sse([chunk("<think>a</think>5"), chunk(finish="stop")])
    b = backend(server, api_key_env="MY_SERVER_KEY")
    finished = generate(b, GenerationRequest("What is 2 + 3?", SAMPLING, THINK),
                        on_finish=lambda r: save_trace(db_config, r))
    assert server.auth[-1] == f"Bearer {secret}"
    record = get_trace(db_config, finished.stored).record
    assert secret not in json.dumps(record.settings) + json.dumps(record.meta)
    con = duckdb.connect(str(db_config.db_path), read_only=True)
    try:
        tables = [t for (t,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        dump = "".join(str(con.execute(f'SELECT * FROM "{t}"').fetchall()) for t in tables)
    finally:
        con.close()
    assert "fake-model" in dump and secret not in dump


def test_config_rejects_bad_values_clearly():
    with pytest.raises(ValueError, match="http://"):
        OpenAIConfig("localhost:8000")
    with pytest.raises(ValueError, match="NAME of an environment variable"):
        OpenAIConfig("http://x/v1", api_key_env="sk-abc-123")
    with pytest.raises(ValueError, match="concurrency"):
        OpenAIConfig("http://x/v1", concurrency=0)


def test_sweep_through_an_outage_stores_no_failed_cell_and_resumes(server, db_config, model_cache_dir):
    """Prefix continuation through /v1/completions (the embedded tokenizer renders the prompt)."""
    down = threading.Event()
    down.set()

    def script(h, body):
        if down.is_set():
            h.status(503)
            return
        assert body["prompt"].startswith("<|im_start|>")  # rendered here with the chat template
        text = "Nine plus eight. Answer: 17" if "Final Answer:" not in body["prompt"] else " 17"
        h.sse([{"id": "c", "object": "text_completion", "created": 0, "model": "fake-model",
                "choices": [{"index": 0, "text": text, "finish_reason": None, "logprobs": None}]},
               {"id": "c", "object": "text_completion", "created": 0, "model": "fake-model",
                "choices": [{"index": 0, "text": "", "finish_reason": "stop", "logprobs": None}]}])

    server.script = script
    b = backend(server, template="embedded:SmolLM2-135M-Instruct", max_retries=1)
    assert b.capabilities.budget_forcing
    settings = SweepSettings("What is 9 + 8?", "17", (4, 8), 1, max_answer_tokens=8, batch_size=2)
    first = run_sweep(db_config, b, MARKER, settings)
    assert first.generated == 0 and first.missing == 2 and first.error and "503" in first.error
    assert sweep_cells(db_config, first.key) == []
    down.clear()
    again = run_sweep(db_config, b, MARKER, settings)
    assert again.generated == 2 and again.missing == 0 and again.error is None
    assert all(c.correct for c in again.cells)


def test_generate_page_through_a_server(server, tmp_path, monkeypatch, model_cache_dir):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from storage.config import StorageConfig
    from storage.traces import count_traces

    secret = "sk-ui-7d2e-never-show-me"
    monkeypatch.setenv("THINKSCOPE_DB", str(tmp_path / "app.duckdb"))
    monkeypatch.setenv("THINKSCOPE_API_KEY", secret)
    st.cache_resource.clear()
    st.cache_data.clear()
    server.script = lambda h, body: h.sse([chunk(reasoning_content="Two plus three."), chunk("5"),
                                           chunk(finish="stop")])
    try:
        at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=180)
        at.run()
        before = count_traces(StorageConfig.from_env())
        at.radio(key="backend_kind").set_value("openai").run()
        at.text_input(key="server_url").input(server.url).run()
        assert not at.exception, at.exception
        assert any("fake-model" in c.value for c in at.caption)
        at.text_area(key="prompt").input("What is 2 + 3?")
        at.button[0].click().run()
        assert not at.exception, at.exception
        assert count_traces(StorageConfig.from_env()) == before + 1
        assert any("no log-probabilities" in i.value for i in at.info)
        assert server.auth[-1] == f"Bearer {secret}" and secret not in repr(at._tree)
    finally:
        st.cache_resource.clear()


def _completion_chunks(pieces, finish="stop"):
    def one(text, reason=None):
        return {"id": "c", "object": "text_completion", "created": 0, "model": "fake-model",
                "choices": [{"index": 0, "text": text, "finish_reason": reason, "logprobs": None}]}
    return [one(p) for p in pieces] + [one("", finish)]


def test_min_budget_replaces_an_early_answer_with_wait_through_completions(server, model_cache_dir):
    def script(h, body):
        if body["prompt"].endswith("Hmm. Wait"):
            h.sse(_completion_chunks([" so", " 2+3", " is", " 5", ".", " Answer", ":", " 5"]))
        else:
            h.sse(_completion_chunks(["Hmm", ".", " Answer", ":", " 5"]))

    server.script = script
    b = backend(server, template="embedded:SmolLM2-135M-Instruct")
    settings = BatchSettings(SAMPLING, BudgetForcing(min_thinking_tokens=6, max_waits=1))
    [record] = generate_batch(b, [BatchRow("What is 2 + 3?", "5")], MARKER, settings)
    assert len(server.requests) == 2 and "Answer:" not in server.requests[1]["prompt"].split("assistant")[-1]
    assert record.meta["removed_delimiters"] == [" Answer:"] and record.meta["wait_positions"] == [2]
    assert record.tokens.text[2] == " Wait" and record.meta["forced_positions"] == [2]
    assert record.thinking_text == "Hmm. Wait so 2+3 is 5." and record.answer_text == "5"
    assert record.stop_reason == "eos" and record.correct is True
