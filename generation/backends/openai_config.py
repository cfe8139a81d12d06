"""Settings of the OpenAI-compatible backend (no client, no torch: cheap to import for widgets and the CLI)."""
from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass

from analysis.records import TOP_K_ALTERNATIVES

DEFAULT_API_KEY_ENV = "THINKSCOPE_API_KEY"
FALLBACK_API_KEY_ENV = "OPENAI_API_KEY"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class RemoteError(RuntimeError):
    """The server could not be used (refused, unreachable, or kept failing); the message says which."""


@dataclass(frozen=True)
class OpenAIConfig:
    """Where the server is and how hard to try. Holds the NAME of the API-key variable, never the key."""

    base_url: str
    model: str = ""  # empty: the first model the server lists
    api_key_env: str = DEFAULT_API_KEY_ENV
    concurrency: int = 4  # requests in flight at once for strategies and sweeps
    timeout_s: float = 120.0  # per read: the longest silence between two chunks
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
                             f"(got {self.base_url!r}).")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        object.__setattr__(self, "model", (self.model or "").strip())
        if not _ENV_NAME.match(self.api_key_env or ""):
            raise ValueError(f"The API key setting is the NAME of an environment variable (e.g. "
                             f"{DEFAULT_API_KEY_ENV}), not the key itself; {self.api_key_env!r} is not a valid name.")
        if not 1 <= self.concurrency <= 256:
            raise ValueError(f"concurrency must be between 1 and 256, not {self.concurrency}")
        if self.timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise ValueError("timeouts must be positive")
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

    def describe(self) -> dict:
        """What is stored with a trace: where it came from, never the key."""
        return {"kind": "openai", "base_url": self.base_url, "mode": "completions" if self.template else "chat"}
