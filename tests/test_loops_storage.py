"""Loop marks in DuckDB (migration 005): round trip, replace on rerun, keys kept apart, bad ids refused."""
import numpy as np
import pytest

from analysis.loops import mark_loops
from analysis.steps import split_steps
from generation.embeddings import EmbeddingConfig, load_embedder, loop_key, store_trace_loops
from storage.connection import connect
from storage.errors import StorageError
from storage.loops import LoopKey, get_step_loops, repeat_shares, save_step_loops
from storage.testing import make_record
from storage.traces import save_trace

LOOPING = ("Let me check the multiplication again. Seven times eight is fifty-six. "
           "Then I subtract four to get fifty-two. Let me double-check the multiplication once more.")


def _marks(text):
    steps = split_steps(text)
    v = np.eye(len(steps), dtype=np.float32)
    v[-1] = v[0]  # the last step repeats the first
    eligible = np.ones(len(steps), bool)
    eligible[1] = False
    return steps, mark_loops(v, 0.9, eligible)


def _rows(db_config):
    with connect(db_config, read_only=True) as con:
        return con.execute("SELECT trace_id, threshold, n_repeated FROM step_loops ORDER BY trace_id, threshold").fetchall()


def test_round_trip_replace_and_keys(db_config):
    tid = save_trace(db_config, make_record(thinking_text=LOOPING))
    key = LoopKey("all-MiniLM-L6-v2", "sentence", 0.9000000001, 12)
    steps, marks = _marks(LOOPING)
    save_step_loops(db_config, key, [(tid, steps, marks)])
    stored = get_step_loops(db_config, tid, LoopKey("all-MiniLM-L6-v2", "sentence", 0.9, 12))
    assert stored is not None
    assert stored.steps == [(s.start, s.end) for s in steps]
    assert stored.marks.repeat_of.tolist() == marks.repeat_of.tolist() == [-1, -1, -1, 0]
    assert stored.marks.eligible.tolist() == [True, False, True, True]
    np.testing.assert_array_equal(np.isnan(stored.marks.best_similarity), np.isnan(marks.best_similarity))
    assert stored.marks.repeat_share == pytest.approx(1 / 3)
    # Rerunning the same key replaces the row; another threshold is a separate row.
    save_step_loops(db_config, key, [(tid, steps, marks)])
    save_step_loops(db_config, LoopKey("all-MiniLM-L6-v2", "sentence", 0.8, 12), [(tid, steps, marks)])
    assert _rows(db_config) == [(tid, 0.8, 1), (tid, 0.9, 1)]
    assert get_step_loops(db_config, tid, LoopKey("all-MiniLM-L6-v2", "paragraph", 0.9, 12)) is None
    assert repeat_shares(db_config, [tid, 999], key) == {tid: pytest.approx(1 / 3)}


def test_unknown_trace_is_refused_and_nothing_is_stored(db_config):
    tid = save_trace(db_config, make_record(thinking_text=LOOPING))
    steps, marks = _marks(LOOPING)
    key = LoopKey("e", "sentence", 0.9, 0)
    with pytest.raises(StorageError, match="no trace 4242"):
        save_step_loops(db_config, key, [(tid, steps, marks), (4242, steps, marks)])
    assert _rows(db_config) == []
    with pytest.raises(ValueError, match="steps but"):
        save_step_loops(db_config, key, [(tid, steps[:2], marks)])
    with pytest.raises(ValueError, match="unit"):
        LoopKey("e", "word", 0.9, 0)


def test_store_trace_loops_with_the_real_embedder(db_config):
    looping = save_trace(db_config, make_record(thinking_text=LOOPING))
    plain = save_trace(db_config, make_record(thinking_text="The train travels for three hours at sixty miles per hour. "
                                                            "Distance is speed multiplied by time."))
    empty = save_trace(db_config, make_record(thinking_text=""))
    embedder, config = load_embedder(), EmbeddingConfig()
    seen = []
    n = store_trace_loops(db_config, embedder, config, [looping, plain, empty], lambda d, t: seen.append((d, t)), batch=2)
    assert n == 3 and seen == [(2, 3), (3, 3)]
    shares = repeat_shares(db_config, [looping, plain, empty], loop_key(config))
    assert shares == {looping: pytest.approx(0.25), plain: 0.0, empty: None}


def test_cli_loops_marks_a_run_and_skips_it_the_second_time(db_config, capsys):
    import cli

    run_a = save_trace(db_config, make_record(thinking_text=LOOPING))
    other = save_trace(db_config, make_record(model="other", thinking_text="One plain step here."))
    from storage.traces import get_trace

    run_id = get_trace(db_config, run_a).run_id
    assert cli.main(["--db", str(db_config.db_path), "loops", "--run", str(run_id)]) == 0
    out = capsys.readouterr().out
    assert "stored loop marks of 1 traces" in out and "repeated steps: 25.0%" in out
    key = loop_key(EmbeddingConfig())
    assert repeat_shares(db_config, [run_a, other], key) == {run_a: pytest.approx(0.25)}
    assert cli.main(["--db", str(db_config.db_path), "loops", "--run", str(run_id)]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert cli.main(["--db", str(db_config.db_path), "loops", "--run", "999"]) == 1
    assert "Run 999 does not exist" in capsys.readouterr().err
    assert cli.main(["--db", str(db_config.db_path), "loops", "--threshold", "2"]) == 2
