-- 001: prompts, runs, traces and their per-token rows.
--
-- Layout notes for later migrations:
-- * Every entity has a BIGINT id from its own sequence; later tables (analyses, per-token
--   signals, strategy selections, annotations) reference trace_id / run_id / prompt_id and are
--   added in new files. Nothing here needs rewriting for them.
-- * No FOREIGN KEY clauses: DuckDB backs each with an ART index on the child column, and one on
--   tokens.trace_id would cost memory and insert speed at 10^7 rows; it would also block
--   deleting a parent in the same statement as its children. The storage code keeps the ids
--   consistent inside its transactions instead.
-- * Timestamps are TIMESTAMP in UTC, written by the application (no session time zone involved).
-- * JSON columns hold objects serialised by the application; key order is kept as written.

CREATE SEQUENCE prompt_id_seq START 1;
CREATE SEQUENCE run_id_seq START 1;
CREATE SEQUENCE trace_id_seq START 1;

CREATE TABLE prompts (
    prompt_id        BIGINT PRIMARY KEY DEFAULT nextval('prompt_id_seq'),
    -- sha256 over (text, reference_answer): prompts are deduplicated on both, and a fixed-size
    -- key keeps the unique index small however long the prompt text is.
    prompt_key       VARCHAR NOT NULL UNIQUE,
    text             VARCHAR NOT NULL,
    reference_answer VARCHAR,
    source           VARCHAR NOT NULL DEFAULT 'user',
    created_at       TIMESTAMP NOT NULL
);

CREATE TABLE runs (
    run_id     BIGINT PRIMARY KEY DEFAULT nextval('run_id_seq'),
    model      VARCHAR NOT NULL,
    strategy   VARCHAR NOT NULL,
    settings   JSON NOT NULL DEFAULT '{}',
    created_at TIMESTAMP NOT NULL,
    note       VARCHAR
);

CREATE TABLE traces (
    trace_id          BIGINT PRIMARY KEY DEFAULT nextval('trace_id_seq'),
    run_id            BIGINT NOT NULL,
    prompt_id         BIGINT NOT NULL,
    model             VARCHAR NOT NULL,
    thinking_text     VARCHAR NOT NULL,
    answer_text       VARCHAR NOT NULL,
    extracted_answer  VARCHAR,
    correct           BOOLEAN,          -- NULL: unknown (no reference answer or not graded)
    n_thinking_tokens INTEGER NOT NULL,
    n_answer_tokens   INTEGER NOT NULL,
    n_tokens          INTEGER NOT NULL,
    latency_s         DOUBLE NOT NULL,
    tokens_per_s      DOUBLE NOT NULL,
    stop_reason       VARCHAR NOT NULL,
    settings          JSON NOT NULL DEFAULT '{}',
    meta              JSON NOT NULL DEFAULT '{}',
    created_at        TIMESTAMP NOT NULL
);

-- The trace list is a columnar scan plus top-N over created_at, which DuckDB does without an
-- index; ART indexes only help point lookups, so they exist for the run filter (and the later
-- per-run strategy selections) and for finding the traces of a prompt.
CREATE INDEX traces_run_id_idx ON traces (run_id);
CREATE INDEX traces_prompt_id_idx ON traces (prompt_id);

-- One row per generated token. Deliberately no primary key or index: at 10^7 rows an ART index
-- would slow bulk inserts and use memory, while rows of a trace are written together in one
-- append, so DuckDB's per-row-group min/max (zonemaps) on trace_id already skip everything else
-- for `WHERE trace_id = ?`.
CREATE TABLE tokens (
    trace_id     BIGINT NOT NULL,
    position     INTEGER NOT NULL,
    token_id     BIGINT NOT NULL,      -- -1 when only the token string is known (imports)
    text         VARCHAR NOT NULL,
    logprob      FLOAT,                -- NaN or NULL when unknown
    entropy      FLOAT,
    top_ids      BIGINT[],
    top_texts    VARCHAR[],
    top_logprobs FLOAT[],
    phase        TINYINT NOT NULL      -- analysis.records.THINKING (0) or ANSWER (1)
);
