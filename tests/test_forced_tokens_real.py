"""Budget forcing on the real embedded model: the forced end of thinking is counted apart, so the
thinking count never exceeds the budget (issue 10: "budget 128 gives 132")."""
import numpy as np
import pytest

from analysis.records import ANSWER, FORCED
from analysis.reasoning import ReasoningFormat
from generation.batch import BatchRow, BatchSettings, generate_batch
from generation.decoding import SamplingConfig
from generation.streaming import Finished, GenerationRequest, LiveGeneration

MARKER = ReasoningFormat(kind="answer_marker")
LONG = "Explain in detail, step by step, how to add 123 and 456."


def _check_counts(record, budget: int) -> None:
    tokens = record.tokens
    forced = record.meta["forced_positions"]
    assert forced, "the budget was reached, so the end of thinking was forced"
    assert record.n_thinking_tokens <= budget
    assert record.n_forced_tokens == len(forced)
    assert record.n_thinking_tokens + record.n_forced_tokens + record.n_answer_tokens == len(tokens)
    assert np.flatnonzero(tokens.phase == FORCED).tolist() == forced
    assert "".join(tokens.text[i] for i in forced).strip() == MARKER.forced_end_text.strip()
    assert set(tokens.phase[forced[-1] + 1:]) <= {ANSWER}  # after the forced marker: the answer


@pytest.mark.parametrize("budget", [8, 16])
def test_streamed_generation_counts_forced_tokens_apart(embedded, budget):
    cfg = SamplingConfig(temperature=0.0, max_thinking_tokens=budget, max_answer_tokens=6)
    with LiveGeneration(embedded, GenerationRequest(LONG, cfg, MARKER)) as live:
        events = list(live.events())
    record = events[-1].record if isinstance(events[-1], Finished) else None
    assert record is not None
    _check_counts(record, budget)
    assert record.n_thinking_tokens == budget  # it rambles on: every sampled thinking token is used
    # The live stream already says which tokens were forced.
    steps = [e for e in events if not isinstance(e, Finished) and e is not None]
    assert [k for k, s in enumerate(steps) if s.phase == FORCED] == record.meta["forced_positions"]


def test_batched_generation_counts_forced_tokens_apart(embedded):
    cfg = SamplingConfig(temperature=0.8, max_thinking_tokens=12, max_answer_tokens=6, seed=3)
    rows = [BatchRow(LONG, max_thinking_tokens=b) for b in (8, 12)]
    for row, record in zip(rows, generate_batch(embedded, rows, MARKER, BatchSettings(cfg))):
        if record.meta["forced_end_position"] is None:  # ended thinking by itself
            assert record.n_forced_tokens == 0 and record.n_thinking_tokens <= row.max_thinking_tokens
            continue
        _check_counts(record, row.max_thinking_tokens)
