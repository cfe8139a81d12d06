-- 011: Thought Anchors rollouts (docs/METHODS.md, "Which sentences matter") and branches of traces.
--
-- anchor_samples: one row per (trace, settings key, cut, kind, sample), written as each batch of N
--   samples of one cut finishes, so a stopped run resumes from the batches it has. cut c is the
--   point before sentence c of the trace's thinking (0 = nothing kept, n_sentences = all kept).
--   kind: 'free' (continue thinking) or 'forced' (end of thinking forced right after the prefix).
--   settings_key: a hash of what the rollouts depend on (model, token limits, sampling, seed,
--   embedder); settings holds them readably. answer_key is the grouping key of the extracted answer
--   (analysis.answers.answer_key, as JSON), NULL for no answer; correct NULL = ungraded.
--   new_sentence / similarity: the first regenerated sentence and its cosine with the original
--   sentence at that cut (NULL for forced rows and the last cut).
-- trace_branches: a child trace made by cutting its parent's thinking before sentence
--   sentence_index (character cut_char of the thinking text), applying the edit ('replace': the
--   sentence becomes replacement; 'delete': it is dropped) and continuing. As in 001, no FOREIGN KEY.

CREATE TABLE anchor_samples (
    trace_id      BIGINT NOT NULL,
    settings_key  VARCHAR NOT NULL,
    cut           INTEGER NOT NULL,
    kind          VARCHAR NOT NULL,
    sample        INTEGER NOT NULL,
    n_sentences   INTEGER NOT NULL,
    settings      JSON NOT NULL,
    generated     VARCHAR NOT NULL,
    answer        VARCHAR,
    answer_key    VARCHAR,
    correct       BOOLEAN,
    stop_reason   VARCHAR NOT NULL,
    n_tokens      INTEGER NOT NULL,
    new_sentence  VARCHAR,
    similarity    DOUBLE,
    created_at    TIMESTAMP NOT NULL,
    PRIMARY KEY (trace_id, settings_key, cut, kind, sample)
);

CREATE TABLE trace_branches (
    child_trace_id   BIGINT PRIMARY KEY,
    parent_trace_id  BIGINT NOT NULL,
    sentence_index   INTEGER NOT NULL,
    cut_char         INTEGER NOT NULL,
    edit             VARCHAR NOT NULL,
    replacement      VARCHAR,
    original         VARCHAR NOT NULL,
    created_at       TIMESTAMP NOT NULL
);
