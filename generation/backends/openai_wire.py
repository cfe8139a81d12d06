"""The wire side of the OpenAI-compatible backend: chunks to text pieces, closing streams on Stop,
retry hints, and the local tokenizer that renders prompts for /v1/completions."""
from __future__ import annotations

import math
import socket
import threading
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


@contextmanager
def close_on_stop(stop_event: threading.Event, stream) -> Iterator[None]:
    """Close `stream` the moment `stop_event` is set, so a Stop is not held up by a slow server."""
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if stop_event.wait(_STOP_POLL_S):
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
