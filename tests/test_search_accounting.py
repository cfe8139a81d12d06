"""Step search counts what it decoded (docs/METHODS.md §5): checked against the tokens the backend
actually produced, counted by a wrapper around the real local backend on the embedded model."""
from __future__ import annotations

import pytest

from analysis.reasoning import ReasoningFormat
from generation.backends import LocalBackend
from generation.decoding import SamplingConfig
from generation.strategies import StrategySettings
from generation.strategies.runner import PromptItem, run_strategy
from storage.runs import get_run_metrics, list_selections
from storage.traces import get_trace

MARKER = ReasoningFormat(kind="answer_marker")
ITEM = PromptItem("Tom has 3 apples and buys 4 more. How many apples does he have?", "7")


class CountingBackend(LocalBackend):
    """The local backend, counting every token of every row it returns (per batch call)."""

    def __init__(self, loaded):
        super().__init__(loaded)
        self.rows_per_call: list[int] = []
        self.tokens = 0

    def sample(self, rows, fmt, settings, stop_event=None, progress=None):
        records = super().sample(rows, fmt, settings, stop_event, progress)
        self.rows_per_call.append(len(records))
        self.tokens += sum(len(r.tokens) for r in records)
        return records


def _search(embedded, db_config, name, n, m, steps, seed):
    backend = CountingBackend(embedded)
    sampling = SamplingConfig(temperature=1.0, max_thinking_tokens=40, max_answer_tokens=8, seed=seed)
    settings = StrategySettings(sampling=sampling, n=n, beam_width=m, max_steps=steps)
    result = run_strategy(db_config, backend, name, [ITEM], MARKER, settings, price_per_million=1.0)
    sel = list_selections(db_config, result.run_id).iloc[0]
    return backend, result, sel


@pytest.mark.parametrize(("name", "seed"), [("beam_search", 1), ("beam_search", 5), ("dvts", 3)])
def test_search_counts_every_decoded_token(embedded, db_config, name, seed):
    n, m = 4, 2
    backend, result, sel = _search(embedded, db_config, name, n, m, 4, seed)
    detail = sel["detail"]
    decoded = detail["decoded_tokens"]
    assert backend.tokens > 0
    assert decoded["total"] == backend.tokens, "decoded tokens = what the backend produced"
    assert decoded["thinking"] + decoded["answer"] + decoded["forced"] == decoded["total"]
    assert detail["rows_per_round"] == backend.rows_per_call
    stored = [get_trace(db_config, t).record for t in detail["trace_ids"]]
    metrics = get_run_metrics(db_config, result.run_id)
    # one prompt: tokens per query, the run's total and its cost are the decoded tokens, not the
    # stored traces (which repeat shared prefixes and leave out pruned branches)
    assert metrics["total_tokens"] == metrics["total_tokens_per_query"] == backend.tokens
    assert metrics["cost_usd"] == pytest.approx(backend.tokens / 1e6)
    assert metrics["mean_total_tokens"] == pytest.approx(sum(len(r.tokens) for r in stored) / len(stored))
    if name == "beam_search":
        # search-and-learn refills: every round decodes n rows; the finished pool is cut to n
        assert all(k == n for k in backend.rows_per_call)
        assert 1 <= len(stored) <= n
    else:
        assert backend.rows_per_call[0] == n and len(stored) == n // m


def test_search_refuses_n_that_does_not_split_into_beams(embedded, db_config):
    backend = CountingBackend(embedded)
    for n, m in [(2, 4), (6, 4)]:
        settings = StrategySettings(n=n, beam_width=m)
        with pytest.raises(ValueError, match="n >= M|multiple of M"):
            run_strategy(db_config, backend, "beam_search", [ITEM], MARKER, settings)
    with pytest.raises(ValueError, match="geomean"):
        run_strategy(db_config, backend, "dvts", [ITEM], MARKER, StrategySettings(n=4, step_aggregate="prod"))
    assert backend.tokens == 0 and backend.rows_per_call == [], "refused before anything was generated"


class ScriptedBackend:
    """A deterministic stand-in for the search logic alone: each row decodes 1-5 tokens and its
    step either continues (ends at a blank line) or finishes, by a seeded coin; it counts what it
    returns. The real-model test above checks the same accounting on real decoding."""

    name = "scripted"

    def __init__(self, finish_p: float, seed: int):
        import random

        from generation.backends.local import LOCAL_CAPABILITIES

        self.capabilities = LOCAL_CAPABILITIES
        self.rng = random.Random(seed)
        self.finish_p = finish_p
        self.rows_per_call: list[int] = []
        self.tokens = 0

    def default_format(self):
        return MARKER

    def sample(self, rows, fmt, settings, stop_event=None, progress=None):
        from analysis.records import TokenStep
        from generation.decoding import DecodeOutcome
        from generation.streaming import GenerationRequest, build_record

        records = []
        for row in rows:
            k = self.rng.randint(1, 5)
            finish = settings.step_delimiter is None or self.rng.random() < self.finish_p
            texts = [" x"] * (k - 1) + ([" Answer: 7"] if finish else ["\n\n"])
            steps = [TokenStep(i, 100 + i, t, -0.5, 1.0, (1,), ("a",), (-0.1,), 0) for i, t in enumerate(texts)]
            request = GenerationRequest(row.prompt, settings.sampling, fmt, row.reference_answer)
            record = build_record(request, self.name, steps, DecodeOutcome("eos" if finish else "max_tokens"), 0.01)
            record.meta["token_self_certainty"] = [self.rng.uniform(0.5, 9.0) for _ in texts]
            if not finish:
                record.meta["step_end"] = True
            records.append(record)
        self.rows_per_call.append(len(rows))
        self.tokens += sum(len(r.tokens) for r in records)
        return records


@pytest.mark.parametrize("seed", range(6))
def test_beam_search_refills_to_n_and_cuts_the_pool_scripted(db_config, seed):
    backend = ScriptedBackend(0.3, seed)
    settings = StrategySettings(n=8, beam_width=2, max_steps=5, step_aggregate="geomean")
    result = run_strategy(db_config, backend, "beam_search", [ITEM], MARKER, settings)
    detail = list_selections(db_config, result.run_id).iloc[0]["detail"]
    assert backend.rows_per_call == detail["rows_per_round"]
    assert all(k == 8 for k in backend.rows_per_call), "finished beams are refilled: n rows every round"
    assert detail["decoded_tokens"]["total"] == backend.tokens == result.metrics["total_tokens"]
    assert 1 <= len(detail["trace_ids"]) <= 8, "the finished pool is cut back to n"


def test_dvts_counts_every_step_scripted(db_config):
    # issue 17: DVTS n = 8, M = 2, 6 steps, no beam finishing early decodes 48 steps (8 rows x 6)
    backend = ScriptedBackend(0.0, 1)
    settings = StrategySettings(n=8, beam_width=2, max_steps=6)
    result = run_strategy(db_config, backend, "dvts", [ITEM], MARKER, settings)
    detail = list_selections(db_config, result.run_id).iloc[0]["detail"]
    assert backend.rows_per_call == [8] * 6
    assert detail["decoded_tokens"]["total"] == backend.tokens == result.metrics["total_tokens"]
    assert len(detail["trace_ids"]) == 4
    stored = sum(len(get_trace(db_config, t).record.tokens) for t in detail["trace_ids"])
    assert detail["pruned_tokens"]["total"] == backend.tokens - stored  # each subtree keeps one child per round
