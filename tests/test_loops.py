"""Loop marks and answer clusters: against slow references, and with the real all-MiniLM-L6-v2."""
import numpy as np
import pytest

from analysis.answer_clusters import cluster_answers
from analysis.loops import mark_loops
from analysis.steps import split_steps
from generation.embeddings import EmbeddingConfig, load_embedder


def _unit_rows(rng, n, d, n_distinct=None):
    # Few distinct directions plus noise: many pairs land near any threshold, and exact ties occur.
    base = rng.normal(size=(n_distinct or n, d))
    rows = base[rng.integers(0, len(base), n)] + rng.normal(scale=0.3, size=(n, d)) * (rng.random((n, 1)) < 0.7)
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def reference_loops(e, threshold, eligible):
    n = len(e)
    repeat_of, best = [-1] * n, [None] * n
    for i in range(n):
        if not eligible[i]:
            continue
        top, arg = None, -1
        for j in range(i):
            if not eligible[j]:
                continue
            s = float(np.dot(e[i], e[j]))
            if top is None or s > top:
                top, arg = s, j
        best[i] = top
        if top is not None and top >= threshold:
            repeat_of[i] = arg
    return repeat_of, best


@pytest.mark.parametrize("seed", range(60))
def test_mark_loops_matches_double_loop(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 14))
    e = _unit_rows(rng, n, 6, n_distinct=max(1, n // 3))
    eligible = rng.random(n) < 0.8
    threshold = float(rng.choice([0.5, 0.8, 0.95, 1.0]))
    marks = mark_loops(e, threshold, eligible)
    repeat_of, best = reference_loops(e, threshold, eligible)
    assert marks.repeat_of.tolist() == repeat_of
    for got, want in zip(marks.best_similarity.tolist(), best):
        assert (np.isnan(got) and want is None) or got == pytest.approx(want, abs=1e-5)
    n_eligible = int(eligible.sum())
    expected = sum(r >= 0 for r in repeat_of) / n_eligible if n_eligible else None
    assert marks.repeat_share == expected


def test_blocks_give_the_same_marks(monkeypatch):
    import analysis.loops as loops

    e = _unit_rows(np.random.default_rng(7), 50, 5, n_distinct=8)
    whole = mark_loops(e, 0.9)
    monkeypatch.setattr(loops, "ROW_BLOCK", 7)
    blocked = mark_loops(e, 0.9)
    assert whole.repeat_of.tolist() == blocked.repeat_of.tolist()
    assert whole.n_repeated > 0


def test_first_occurrence_is_not_marked_and_bad_input_is_refused():
    v = np.eye(3, dtype=np.float32)
    marks = mark_loops(np.stack([v[0], v[1], v[0], v[0]]), 0.99)
    assert marks.repeat_of.tolist() == [-1, -1, 0, 0] and marks.repeat_share == 0.5
    assert mark_loops(np.zeros((0, 3), np.float32), 0.9).repeat_share is None
    with pytest.raises(ValueError, match="unit-normalised"):
        mark_loops(np.ones((2, 3), np.float32), 0.9)
    with pytest.raises(ValueError, match="matrix"):
        mark_loops(np.ones(3, np.float32), 0.9)
    with pytest.raises(ValueError, match="one flag per step"):
        mark_loops(v, 0.9, np.ones(2, bool))
    with pytest.raises(ValueError, match="cosine"):
        mark_loops(v, 1.5)


def test_cluster_answers_matches_leader_reference():
    rng = np.random.default_rng(3)
    e = _unit_rows(rng, 30, 4, n_distinct=5)
    clusters = cluster_answers(e, 0.9)
    leaders, labels = [], []
    for i in range(len(e)):
        sims = [float(e[i] @ e[j]) for j in leaders]
        if sims and max(sims) >= 0.9:
            labels.append(sims.index(max(sims)))
        else:
            labels.append(len(leaders))
            leaders.append(i)
    assert clusters.labels.tolist() == labels and clusters.leaders.tolist() == leaders
    assert sum(clusters.sizes()) == 30


def test_embedding_config_validates():
    with pytest.raises(ValueError, match="threshold"):
        EmbeddingConfig(threshold=0)
    with pytest.raises(ValueError, match="unit"):
        EmbeddingConfig(unit="word")
    with pytest.raises(ValueError, match="batch_size"):
        EmbeddingConfig(batch_size=0)
    with pytest.raises(ValueError, match="not a directory"):
        EmbeddingConfig(model_path="/nonexistent/model")


@pytest.fixture(scope="module")
def embedder():
    return load_embedder()


def _marks(embedder, text):
    cfg = EmbeddingConfig()
    steps = split_steps(text, cfg.unit)
    eligible = np.array([len(s.text) >= cfg.min_chars for s in steps], dtype=bool)
    return steps, mark_loops(embedder.encode([s.text for s in steps]), cfg.threshold, eligible)


def test_real_embedder_flags_a_reworded_repeat(embedder):
    text = ("Let me check the multiplication again. Seven times eight is fifty-six. "
            "Then I subtract four to get fifty-two. Let me double-check the multiplication once more.")
    steps, marks = _marks(embedder, text)
    assert marks.repeat_of.tolist() == [-1, -1, -1, 0], marks.best_similarity
    assert marks.repeat_share == pytest.approx(0.25)


def test_real_embedder_leaves_a_plain_solution_alone(embedder):
    text = ("The train leaves at nine and travels for three hours. Its speed is sixty miles per hour. "
            "Distance is speed multiplied by time. So it covers one hundred and eighty miles.")
    _, marks = _marks(embedder, text)
    assert marks.n_repeated == 0 and marks.repeat_share == 0.0, marks.best_similarity


def test_real_embedder_clusters_free_text_answers(embedder):
    answers = ["Paris", "The capital of France is Paris.", "Berlin", "It is Paris", "berlin"]
    clusters = cluster_answers(embedder.encode(answers), 0.6)
    assert clusters.labels[0] == clusters.labels[3]
    assert clusters.labels[2] == clusters.labels[4] != clusters.labels[0]
