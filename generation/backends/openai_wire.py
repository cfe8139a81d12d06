"""The wire side of the OpenAI-compatible backend: chunks to text pieces, closing streams on Stop,
retry hints, and the local tokenizer that renders prompts for /v1/completions."""
from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

_STOP_POLL_S = 0.05


@dataclass
class Piece:
    text: str
    reasoning: bool  # arrived in a reasoning field, not in content
    logprob: float = math.nan
    top: tuple[tuple[str, float], ...] = ()


class Stopped(Exception):
    """The user stopped while a request was being opened or retried."""


class Watchdog:
    """When one generation gives up: no new token for `stall_s` seconds (keep-alive comments, empty
    chunks and silence are no progress), or `deadline_s` seconds after it began."""

    def __init__(self, stall_s: float, deadline_s: float):
        now = time.monotonic()
        self.stall_s, self.deadline_s = stall_s, deadline_s
        self._last = now
        self._deadline = now + deadline_s
        self.fired: str | None = None  # "stall" or "deadline", once the watcher closed a stream for it

    def progress(self) -> None:
        self._last = time.monotonic()

    def remaining(self) -> float:
        """Seconds until it expires (<= 0: expired)."""
        return min(self._last + self.stall_s, self._deadline) - time.monotonic()

    def expired(self) -> str | None:
        """"deadline", "stall", or None while there is time left."""
        now = time.monotonic()
        if now >= self._deadline:
            return "deadline"
        return "stall" if now - self._last >= self.stall_s else None

    def describe(self, kind: str) -> str:
        if kind == "deadline":
            return f"the generation reached its overall deadline of {self.deadline_s:g} s"
        return f"the server sent no new token for {self.stall_s:g} s (stall timeout)"


@contextmanager
def close_on_stop(stop_event: threading.Event, stream, watchdog: Watchdog | None = None) -> Iterator[None]:
    """Close `stream` the moment `stop_event` is set, so a Stop is not held up by a slow server, or
    when `watchdog` expires (its `fired` then says why), so a server that keeps the stream open
    without sending text cannot hold the generation forever."""
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if stop_event.wait(_STOP_POLL_S):
                abort(stream)
                return
            if watchdog is not None and (kind := watchdog.expired()) is not None:
                watchdog.fired = kind
                abort(stream)
                return

    watcher = threading.Thread(target=watch, name="thinkscope-stream-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        quiet_close(stream)


def abort(stream) -> None:
    """Close a stream whose reader may be blocked in recv(): closing the socket from another thread
    does not wake that read on Linux, shutting it down does. The socket comes from the HTTP/1.1
    response's documented `network_stream` extension; without one, a plain close is all we can do."""
    try:
        network = stream.response.extensions.get("network_stream")
        sock = network.get_extra_info("socket") if network is not None else None
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except (AttributeError, OSError):
        pass
    quiet_close(stream)


def quiet_close(stream) -> None:
    try:
        stream.close()
    except Exception:  # already closed or broken: nothing left to release
        pass


def status_text(exc) -> str:
    body = getattr(exc, "body", None)
    detail = body.get("detail") or body.get("message") if isinstance(body, dict) else None
    return f"{exc.status_code}{f' ({detail})' if detail else ''}"


def chat_pieces(text: str, reasoning: bool, entries: list) -> list[Piece]:
    """One piece per token when the logprob entries spell the text exactly, else the chunk as one piece."""
    def top(entry) -> tuple:
        alts = getattr(entry, "top_logprobs", None) or []
        return tuple(sorted(((a.token, float(a.logprob)) for a in alts), key=lambda t: -t[1]))

    if len(entries) == 1:
        return [Piece(text, reasoning, float(entries[0].logprob), top(entries[0]))]
    if entries and "".join(e.token for e in entries) == text:
        return [Piece(e.token, reasoning, float(e.logprob), top(e)) for e in entries]
    return [Piece(text, reasoning)]


def completion_pieces(choice) -> list[Piece]:
    lp = choice.logprobs
    tokens = list(getattr(lp, "tokens", None) or []) if lp is not None else []
    values = list(getattr(lp, "token_logprobs", None) or []) if lp is not None else []
    tops = list(getattr(lp, "top_logprobs", None) or []) if lp is not None else []
    if tokens and len(values) == len(tokens) and "".join(tokens) == choice.text:
        return [Piece(t, False, math.nan if v is None else float(v),
                       tuple(sorted(((a, float(b)) for a, b in (tops[i] or {}).items()), key=lambda x: -x[1]))
                       if i < len(tops) else ())
                for i, (t, v) in enumerate(zip(tokens, values))]
    return [Piece(choice.text, False)]


def retry_after(headers) -> float | None:
    try:
        value = float(headers.get("retry-after", ""))
    except (TypeError, ValueError):
        return None
    return value if 0 < value <= 60 else None


def load_template(name: str):
    """The tokenizer whose chat template renders prompts for /v1/completions (prefix continuation)."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from generation.models import EMBEDDED_MODEL, ModelLoadError, embedded_cache_path

    source = str(embedded_cache_path()) if name == EMBEDDED_MODEL else name
    try:
        return AutoTokenizer.from_pretrained(source, local_files_only=Path(source).expanduser().exists())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Could not load the tokenizer {name!r} for prefix continuation: {exc}") from exc


def broken_stream_text(exc: BaseException, n_tokens: int) -> str:
    """Why a stream that had begun failed, in words that name the actual fault."""
    import json

    import openai

    from generation.backends.openai_config import redact_text

    if isinstance(exc, json.JSONDecodeError):
        snippet = (exc.doc or "")[:80]
        return f"the server sent data that is not JSON after {n_tokens} tokens ({exc.msg}; it began {snippet!r})"
    if isinstance(exc, openai.APIConnectionError):  # also timeouts
        return f"the connection broke mid-stream after {n_tokens} tokens ({type(exc).__name__}: {redact_text(str(exc))})"
    if isinstance(exc, openai.APIError):  # an {"error": ...} event inside the stream
        return f"the server reported an error mid-stream after {n_tokens} tokens: {redact_text(str(exc))}"
    return f"the stream failed after {n_tokens} tokens ({type(exc).__name__}: {redact_text(str(exc))})"


def not_an_event_stream(response) -> str | None:
    """Why a 200 answer to a streaming request cannot be a stream (an HTML page: a proxy, a login
    page or a wrong path), or None when it may be one."""
    content_type = (response.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type in ("text/html", "application/xhtml+xml"):
        return (f"answered {response.status_code} with an HTML page ({content_type}), not an event stream of chat "
                "chunks: is the base URL the API's (it usually ends in /v1), not a web page or a proxy's login?")
    return None
