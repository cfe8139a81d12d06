-- 003: what test-time-compute runs add on top of their traces. Independent of 002 (no reference to
-- anything it creates), so either may be applied first on an existing database.
--
-- run_metrics: one row per run, the analysis.run_metrics.RunMetrics of its samples (plus the
--   accuracy of the selected answers for a strategy run) as a JSON object, so new metrics need no
--   migration.
-- strategy_selections: per prompt of a strategy run, the answer picked and why (rule, tally,
--   per-sample scores); trace_ids lists the samples in the order the scores refer to.
-- sweep_cells: the (budget, sample) cells of accuracy-vs-length sweeps, keyed by a hash of what
--   makes two sweeps the same (model, prompt, reference, sampling, format), so a rerun skips
--   stored cells. budget 0 marks free-running samples.

CREATE TABLE run_metrics (
    run_id     BIGINT PRIMARY KEY,
    metrics    JSON NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE SEQUENCE selection_id_seq START 1;

CREATE TABLE strategy_selections (
    selection_id     BIGINT PRIMARY KEY DEFAULT nextval('selection_id_seq'),
    run_id           BIGINT NOT NULL,
    prompt           VARCHAR NOT NULL,
    reference_answer VARCHAR,
    selected_answer  VARCHAR,
    correct          BOOLEAN,
    chosen_trace_id  BIGINT,
    rule             VARCHAR NOT NULL,
    detail           JSON NOT NULL,  -- tally, scores, note, trace_ids
    created_at       TIMESTAMP NOT NULL
);
CREATE INDEX strategy_selections_run_idx ON strategy_selections (run_id);

CREATE TABLE sweep_cells (
    sweep_key           VARCHAR NOT NULL,
    budget              INTEGER NOT NULL,
    sample_index        INTEGER NOT NULL,
    trace_id            BIGINT NOT NULL,
    run_id              BIGINT NOT NULL,
    n_thinking_tokens   INTEGER NOT NULL,
    n_answer_tokens     INTEGER NOT NULL,
    correct             BOOLEAN,
    first_correct_token INTEGER,
    created_at          TIMESTAMP NOT NULL,
    PRIMARY KEY (sweep_key, budget, sample_index)
);
