"""Thought Anchors and branching on the embedded model (generation/anchors.py): a constructed case with a
known anchor, the semantic filter against the embedder directly, resume after Stop, child traces."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from analysis.anchors import AnchorMath, top_anchors
from analysis.records import TokenColumns, TraceRecord
from generation.anchors import (
    AnchorSettings,
    BranchSettings,
    anchors_summary,
    branch_trace,
    cuts,
    estimate,
    load_importance,
    run_anchors,
)
from generation.backends import BackendUnavailable
from generation.embeddings import load_embedder
from storage.anchors import branch_of, branch_tree, get_rollouts
from storage.traces import get_trace, save_trace

# One sentence states the answer, which the question alone does not give: without it the model guesses
# (answers scatter), with it every continuation copies the number, and after it nothing changes.
CODE_THINKING = ("Let me think about this question. The secret code number is 4817. I am sure about it. "
                 "I will write it down now.")


@pytest.fixture(scope="module")
def embedder():
    return load_embedder()


def _trace(config, loaded, thinking=CODE_THINKING, answer="4817") -> int:
    return save_trace(config, TraceRecord(prompt="What is the secret code number?", model=loaded.name,
                                          thinking_text=thinking, answer_text=answer, tokens=TokenColumns.empty(),
                                          stop_reason="imported", reference_answer=answer, latency_s=1.0))


def test_the_sentence_that_states_the_answer_ranks_first(db_config, embedded, embedder):
    tid = _trace(db_config, embedded)
    settings = AnchorSettings(samples=8, max_new_tokens=12, answer_tokens=10, forced=False)
    run = run_anchors(db_config, embedded, tid, settings, embedder)
    assert (run.generated, run.stored, run.total, run.stopped) == (40, 40, 40, False)
    record = get_trace(db_config, tid).record
    result = load_importance(db_config, tid, record, run.key)
    steps = result.steps
    assert steps[1].text == "The secret code number is 4817."
    top = top_anchors(result.scores, "counterfactual", 1)[0]
    assert top.index == 1, [(s.kind, s.index, s.kl, s.n_before) for s in result.scores]
    assert top.accuracy_change > 0.5  # with the sentence nearly every rollout is right, without it almost none
    assert top_anchors(result.scores, "resampling", 1)[0].index == 1

    # The semantic filter's input, against the embedder directly: stored cosine = dot of unit vectors.
    rows = [r for r in get_rollouts(db_config, tid, run.key) if r.cut == 1 and r.new_sentence]
    assert rows
    vectors = embedder.encode([steps[1].text] + [r.new_sentence for r in rows])
    direct = vectors[1:] @ vectors[0]
    assert np.allclose([r.similarity for r in rows], direct, atol=1e-5)
    # ... and the counterfactual count is the number of rollouts below the threshold (NaN counts as different).
    at_cut = [r for r in get_rollouts(db_config, tid, run.key) if r.cut == 1]
    below = sum(1 for r in at_cut if r.similarity is None or r.similarity < AnchorMath().similarity_threshold)
    cf = next(s for s in result.scores if s.kind == "counterfactual" and s.index == 1)
    assert cf.n_before == below
    summary = anchors_summary(run, result)
    json.dumps(summary, allow_nan=False)  # NaN would not be JSON
    assert summary["sentences"][1]["counterfactual_kl"] == pytest.approx(cf.kl, abs=1e-6)


def test_a_stopped_run_keeps_its_batches_and_resumes(db_config, embedded, embedder):
    tid = _trace(db_config, embedded, "First I read it. Then I answer.", "7")
    settings = AnchorSettings(samples=2, max_new_tokens=6, answer_tokens=4, forced_answer_tokens=4)
    stop = threading.Event()

    def progress(done, total, tokens):
        if done >= 1 and tokens == 0:  # the first batch is stored: press Stop
            stop.set()

    first = run_anchors(db_config, embedded, tid, settings, embedder, progress, stop)
    assert first.stopped and first.generated == 2 and first.stored == 2 and first.total == 12
    kept = {(r.kind, r.cut, r.sample): r.generated for r in get_rollouts(db_config, tid, first.key)}
    assert len(kept) == 2
    record = get_trace(db_config, tid).record
    left = estimate(record, settings, stored=first.stored)
    assert left.n_rollouts == 10 and left.expected_tokens > 0

    second = run_anchors(db_config, embedded, tid, settings, embedder)
    assert (second.generated, second.stored, second.stopped) == (10, 12, False)
    rows = get_rollouts(db_config, tid, second.key)
    assert len(rows) == 12 and len({(r.kind, r.cut, r.sample) for r in rows}) == 12
    assert all(r.generated == kept[(r.kind, r.cut, r.sample)] for r in rows if (r.kind, r.cut, r.sample) in kept)
    assert run_anchors(db_config, embedded, tid, settings, embedder).generated == 0  # nothing left to do
    result = load_importance(db_config, tid, record, second.key)
    assert result.complete and {s.kind for s in result.scores} == {"resampling", "counterfactual", "forced"}


def test_branches_are_child_traces_with_their_edit(db_config, embedded):
    tid = _trace(db_config, embedded)
    settings = BranchSettings(samples=2, max_new_tokens=8, answer_tokens=6)
    ids = branch_trace(db_config, embedded, tid, 1, "replace", "The secret code number is 1234.", settings)
    assert len(ids) == 2
    steps, _ = cuts(CODE_THINKING)
    for cid in ids:
        child = get_trace(db_config, cid).record
        assert child.thinking_text.startswith("Let me think about this question. The secret code number is 1234.")
        assert child.meta["branch"]["parent_trace_id"] == tid
        assert child.n_forced_tokens >= child.meta["branch"]["prefix_tokens"] > 0  # the given prefix is not sampled
        b = branch_of(db_config, cid)
        assert (b.parent_trace_id, b.sentence_index, b.cut_char, b.edit) == (tid, 1, steps[1].start, "replace")
        assert b.original == "The secret code number is 4817." and b.replacement == "The secret code number is 1234."
    deleted = branch_trace(db_config, embedded, ids[0], 0, "delete", None, BranchSettings(samples=1, max_new_tokens=4,
                                                                                          answer_tokens=4))
    root, tree = branch_tree(db_config, deleted[0])
    assert root == tid and [b.child_trace_id for b in tree] == [*ids, *deleted]
    assert branch_of(db_config, deleted[0]).edit == "delete"


def test_bad_requests_get_clear_messages(db_config, embedded, embedder):
    tid = _trace(db_config, embedded)
    with pytest.raises(ValueError, match="sentences 0 to 3"):
        branch_trace(db_config, embedded, tid, 9, "delete", None)
    with pytest.raises(ValueError, match="replacement is empty"):
        branch_trace(db_config, embedded, tid, 0, "replace", "  ")
    with pytest.raises(ValueError, match="No trace 404"):
        run_anchors(db_config, embedded, 404, AnchorSettings(samples=1), embedder)
    empty = _trace(db_config, embedded, thinking="", answer="1")
    with pytest.raises(ValueError, match="no thinking text"):
        run_anchors(db_config, embedded, empty, AnchorSettings(samples=1), embedder)
    with pytest.raises(ValueError, match="samples"):
        AnchorSettings(samples=0)


def test_a_server_backend_is_refused_with_the_reason(db_config, embedded, embedder):
    from generation.backends.openai_compat import OpenAIBackend, OpenAIConfig

    server = OpenAIBackend(OpenAIConfig(base_url="http://127.0.0.1:9/v1", model="remote"))
    tid = _trace(db_config, embedded)
    with pytest.raises(BackendUnavailable, match="continuing a trace from its token ids"):
        run_anchors(db_config, server, tid, AnchorSettings(samples=1), embedder)
    with pytest.raises(BackendUnavailable, match="Branching a trace"):
        branch_trace(db_config, server, tid, 0, "delete", None)
