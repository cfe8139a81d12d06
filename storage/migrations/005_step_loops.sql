-- 005: near-duplicate steps (loops) in a trace's thinking, found from sentence embeddings.
--
-- One row per (trace, embedder, step unit, threshold, min_chars): the figure depends on all of
-- them, so each combination is kept apart and a rerun of the same one replaces its row
-- (storage/loops.py deletes and inserts in one transaction). Per-step arrays are aligned with the
-- steps of traces.thinking_text as analysis.steps.split_steps cut them (their character offsets are
-- stored too, so the marks stay attached to the same characters even if the splitter changes).
-- repeat_of[i] = index of the earlier step that step i repeats, -1 for none; best_similarity[i] =
-- highest cosine similarity to an earlier eligible step, NULL where there is none
-- (analysis/loops.py has the exact definition). repeat_share = n_repeated / n_eligible, NULL when
-- no step was eligible. As in 001: no FOREIGN KEY clauses.

CREATE TABLE step_loops (
    trace_id        BIGINT NOT NULL,
    embedder        VARCHAR NOT NULL,
    unit            VARCHAR NOT NULL,     -- sentence | paragraph
    threshold       DOUBLE NOT NULL,      -- rounded to 4 decimals by the application
    min_chars       INTEGER NOT NULL,
    n_steps         INTEGER NOT NULL,
    n_eligible      INTEGER NOT NULL,
    n_repeated      INTEGER NOT NULL,
    repeat_share    DOUBLE,
    step_start      INTEGER[] NOT NULL,
    step_end        INTEGER[] NOT NULL,
    eligible        BOOLEAN[] NOT NULL,   -- long enough to take part (min_chars)
    repeat_of       INTEGER[] NOT NULL,
    best_similarity FLOAT[] NOT NULL,
    created_at      TIMESTAMP NOT NULL,
    PRIMARY KEY (trace_id, embedder, unit, threshold, min_chars)
);
