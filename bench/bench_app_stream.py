"""Tokens/s as a user sees them in the browser vs bare `model.generate`, side by side in one run.

    python bench/bench_app_stream.py [--tokens 160] [--repeats 3]

One side is a real `streamlit run app.py` (fresh database in a temporary directory via THINKSCOPE_DB,
the model from the converted cache) driven by Debian's Chromium through Playwright: the Generate page
decodes greedily with a thinking budget of N tokens, and a MutationObserver in the page records when
each "Thinking… k tokens" label reaches the browser. The other side is `model.generate` in this
process, greedy, exactly N new tokens, timed by a streamer. Both rates run from the first token to the
last (prefill excluded on both sides); runs alternate so machine noise hits both. Target: >= 0.8.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import generation  # noqa: E402,F401  (OMP_WAIT_POLICY before torch, as in the app)
import torch  # noqa: E402

from generation.models import ModelSpec, cache_dir, load_model  # noqa: E402
from generation.prompting import detect_format, encode_prompt  # noqa: E402
from tests.browser_support import chromium_page, running_app  # noqa: E402

# Greedy SmolLM2-135M thinks past 200 tokens on this prompt before writing "Answer:".
PROMPT = "Describe in detail how a bicycle works, step by step."

# Records (ms since page load, thinking tokens shown) each time the label changes, and when it folds.
_OBSERVER = """() => {
  window.__ts = []; window.__folded = null;
  const seen = () => {
    for (const el of document.querySelectorAll('[data-testid="stMarkdownContainer"] strong')) {
      const m = /^Thinking… (\\d+) tokens/.exec(el.textContent);
      if (m) { const n = +m[1]; const last = window.__ts[window.__ts.length - 1];
               if (!last || last[1] !== n) window.__ts.push([performance.now(), n]); return; }
    }
    if (window.__folded === null && document.body.textContent.includes('Thought for')) window.__folded = performance.now();
  };
  new MutationObserver(seen).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


class _Clock:
    """A `generate` streamer that timestamps every step (the first `put` is the prompt)."""

    def __init__(self):
        self.times: list[float] = []

    def put(self, _ids) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def bare_generate(loaded, prompt_ids: list[int], n: int) -> float:
    ids = torch.tensor([prompt_ids])
    clock = _Clock()
    with torch.inference_mode():
        loaded.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                              do_sample=False, pad_token_id=loaded.tokenizer.pad_token_id, streamer=clock)
    steps = clock.times[1:]  # one per new token
    return (len(steps) - 1) / (steps[-1] - steps[0])


def in_app(page, url: str, n: int) -> tuple[float, int]:
    """Thinking tokens/s between the first and the last label the browser showed, and that last count."""
    page.goto(url)
    prompt = page.get_by_label("Prompt")
    prompt.wait_for(timeout=120_000)
    prompt.fill(PROMPT)
    for name, value in (("Temperature", "0"), ("Max thinking tokens", str(n)), ("Max answer tokens", "4")):
        box = page.get_by_role("spinbutton", name=name)
        box.fill(value)
        box.press("Enter")
    page.wait_for_timeout(1000)
    page.evaluate(_OBSERVER)
    page.get_by_role("button", name="Generate").click()
    page.get_by_text(re.compile(r"Saved as trace #\d+")).wait_for(timeout=600_000)
    marks = [m for m in page.evaluate("window.__ts") if m[1] > 0]
    (t0, n0), (t1, n1) = marks[0], marks[-1]
    return (n1 - n0) / ((t1 - t0) / 1000), n1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=160, help="thinking budget of each run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    loaded = load_model(ModelSpec())  # converts into the cache on first use; the server loads from there
    fmt = detect_format(loaded.tokenizer)
    prompt_ids = encode_prompt(loaded.tokenizer, PROMPT, fmt)
    bare_generate(loaded, prompt_ids, 8)  # warm-up
    bare, app, shown = [], [], []
    with tempfile.TemporaryDirectory() as tmp, \
            running_app(Path(tmp) / "bench.duckdb", cache_dir(), Path(tmp) / "streamlit.log") as url, \
            chromium_page() as page:
        in_app(page, url, 16)  # warm-up: the server loads the model on the first visit
        for _ in range(args.repeats):
            rate, n_shown = in_app(page, url, args.tokens)
            app.append(rate)
            shown.append(n_shown)
            bare.append(bare_generate(loaded, prompt_ids, n_shown))
    b, a = statistics.median(bare), statistics.median(app)
    print(f"| measure | thinking tokens/s (median of {args.repeats}) |")
    print("|---|---|")
    print(f"| bare model.generate, greedy, {statistics.median(shown):.0f} tokens | {b:.1f} |")
    print(f"| in the app, as the browser shows it (streamlit run + Chromium) | {a:.1f} |")
    print(f"| **ratio** (target >= 0.8) | **{a / b:.2f}** |")
    print(f"runs: bare {[round(x, 1) for x in bare]}, app {[round(x, 1) for x in app]}, tokens {shown};"
          f" load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
