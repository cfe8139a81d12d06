"""Settings of the OpenAI-compatible backend (no client, no torch: cheap to import for widgets and the CLI)."""
from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from analysis.records import TOP_K_ALTERNATIVES

DEFAULT_API_KEY_ENV = "THINKSCOPE_API_KEY"
FALLBACK_API_KEY_ENV = "OPENAI_API_KEY"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
STALL_TIMEOUT_ENV = "THINKSCOPE_STALL_TIMEOUT_S"
DEADLINE_ENV = "THINKSCOPE_DEADLINE_S"
DEFAULT_STALL_TIMEOUT_S = 60.0
DEFAULT_DEADLINE_S = 3600.0
REDACTED = "REDACTED"
# Query parameters whose value is a credential (api_key, token, sig, X-Amz-Signature, ...).
_SECRET_PARAM = re.compile(r"key|token|secret|passw|pwd|auth|sig|credential|session|cookie|bearer", re.I)
# A URL inside free text (an error message, a log line): scheme up to the next blank or quote.
_URL_IN_TEXT = re.compile(r"""https?://[^\s'"<>]+""", re.I)


class RemoteError(RuntimeError):
    """The server could not be used (refused, unreachable, or kept failing); the message says which."""


def redact_url(url: str) -> str:
    """`url` without credentials: user:password@ and the values of secret-looking query parameters
    become REDACTED, so the URL can be stored in a trace, shown and logged."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:  # not a URL we can take apart: keep nothing that could be a secret
        return re.sub(r"//[^/@\s]*@", f"//{REDACTED}@", url.split("?", 1)[0])
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{f'[{host}]' if ':' in host else host}{'' if port is None else f':{port}'}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = "&".join(f"{quote(k, safe='')}={REDACTED if _SECRET_PARAM.search(k) else quote(v, safe='')}"
                         for k, v in pairs)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment and REDACTED))


def redact_text(text: str) -> str:
    """Every URL inside `text` redacted (see redact_url): for messages and log lines."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text) if "://" in text else text


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, not {raw!r}") from None
    if not 0 < value < float("inf"):
        raise ValueError(f"{name} must be a positive number of seconds, not {raw!r}")
    return value


def env_stall_timeout_s() -> float:
    return _env_seconds(STALL_TIMEOUT_ENV, DEFAULT_STALL_TIMEOUT_S)


def env_deadline_s() -> float:
    return _env_seconds(DEADLINE_ENV, DEFAULT_DEADLINE_S)


@dataclass(frozen=True)
class OpenAIConfig:
    """Where the server is and how hard to try. Holds the NAME of the API-key variable, never the key."""

    base_url: str
    model: str = ""  # empty: the first model the server lists
    api_key_env: str = DEFAULT_API_KEY_ENV
    concurrency: int = 4  # requests in flight at once for strategies and sweeps
    timeout_s: float = 120.0  # per read: the longest silence between two chunks
    # No new token for this long (keep-alive comments, empty chunks and silence do not count): the
    # stream is closed and what arrived is stored as a partial trace. Default: $THINKSCOPE_STALL_TIMEOUT_S or 60.
    stall_timeout_s: float = field(default_factory=env_stall_timeout_s)
    # One generation (all its requests, retries and continuations) ends after this long, stored as
    # a partial trace. Default: $THINKSCOPE_DEADLINE_S or 3600.
    deadline_s: float = field(default_factory=env_deadline_s)
    connect_timeout_s: float = 10.0
    max_retries: int = 4  # on 429, 5xx, connection errors and timeouts, before any token arrived
    backoff_s: float = 0.5  # first retry delay; doubles each retry up to backoff_max_s (Retry-After wins)
    backoff_max_s: float = 8.0
    logprobs: bool = True  # ask for them; servers that cannot send them just do not
    top_logprobs: int = TOP_K_ALTERNATIVES
    template: str | None = None  # local tokenizer (directory or hub id) for /v1/completions prefix continuation

    def __post_init__(self) -> None:
        if not re.match(r"^https?://[^\s/]+", self.base_url or ""):
            raise ValueError(f"The base URL must start with http:// or https://, e.g. http://gpu-box:8000/v1 "
                             f"(got {redact_url(self.base_url or '')!r}).")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        object.__setattr__(self, "model", (self.model or "").strip())
        if not _ENV_NAME.match(self.api_key_env or ""):
            raise ValueError(f"The API key setting is the NAME of an environment variable (e.g. "
                             f"{DEFAULT_API_KEY_ENV}), not the key itself; {self.api_key_env!r} is not a valid name.")
        if not 1 <= self.concurrency <= 256:
            raise ValueError(f"concurrency must be between 1 and 256, not {self.concurrency}")
        if self.timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise ValueError("timeouts must be positive")
        for name in ("stall_timeout_s", "deadline_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        if self.max_retries < 0 or self.backoff_s < 0 or self.backoff_max_s < self.backoff_s:
            raise ValueError("max_retries and backoff_s must be >= 0, backoff_max_s >= backoff_s")
        if not 0 <= self.top_logprobs <= 20:
            raise ValueError("top_logprobs must be between 0 and 20 (the OpenAI API's limit)")
        if self.template is not None and not self.template.strip():
            object.__setattr__(self, "template", None)

    def api_key(self) -> str:
        key = os.environ.get(self.api_key_env)
        if not key and self.api_key_env == DEFAULT_API_KEY_ENV:
            key = os.environ.get(FALLBACK_API_KEY_ENV)
        # Local servers (vLLM without --api-key, transformers serve) accept any key; the client wants one.
        return key or "EMPTY"

    def backoff(self, attempt: int) -> float:
        return min(self.backoff_s * 2**attempt, self.backoff_max_s) * (1 - 0.25 * random.random())

    @property
    def public_url(self) -> str:
        """The base URL without credentials: what is stored, shown and logged."""
        return redact_url(self.base_url)

    def __repr__(self) -> str:  # dataclass keeps a __repr__ defined here; the default one would show credentials
        return (f"OpenAIConfig(base_url={self.public_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r}, "
                f"template={self.template!r})")

    def describe(self) -> dict:
        """What is stored with a trace: where it came from, never the key nor credentials in the URL."""
        return {"kind": "openai", "base_url": self.public_url, "mode": "completions" if self.template else "chat"}
