"""Start `transformers serve` on loopback: a real OpenAI-compatible server for tests and benchmarks."""
from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def transformers_serve(model_dir: Path | str, ready_timeout_s: float = 180.0,
                       extra_args: tuple[str, ...] = ()) -> Iterator[str]:
    """Yield the base URL (…/v1) of `transformers serve MODEL_DIR` once /health answers; stop it after.

    The server pins the model and names it by the path it was given. Raises RuntimeError with the
    end of the server's log when it exits or is not ready in time."""
    port = free_port()
    exe = Path(sys.executable).parent / "transformers"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([str(exe), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
                                 *extra_args], stdout=log, stderr=subprocess.STDOUT)

        def log_tail() -> str:
            log.seek(0)
            return log.read().decode(errors="replace")[-2000:]

        try:
            deadline = time.monotonic() + ready_timeout_s
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"transformers serve exited ({proc.returncode}):\n{log_tail()}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"transformers serve not ready after {ready_timeout_s:.0f} s:\n{log_tail()}")
                time.sleep(0.5)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
