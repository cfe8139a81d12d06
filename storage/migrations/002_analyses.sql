-- 002: analyses of traces (MI peaks, logit-lens settling, confidence) and their per-token signals.
--
-- One analysis per (trace, analysing model, settings key): re-running the same settings replaces
-- the row (storage/analyses.py deletes and inserts in one transaction). The settings key is a
-- hash of every parameter, the reference kind and a typed reference included
-- (analysis.trace_signals.AnalysisSettings.key); the parameters themselves are kept in `settings`.
-- As in 001: no FOREIGN KEY clauses and no index on the per-token table (rows of one analysis
-- are appended together, so zonemaps on analysis_id skip the rest).

CREATE SEQUENCE analysis_id_seq START 1;

CREATE TABLE analyses (
    analysis_id             BIGINT PRIMARY KEY DEFAULT nextval('analysis_id_seq'),
    trace_id                BIGINT NOT NULL,
    analysis_model          VARCHAR NOT NULL,
    settings_key            VARCHAR NOT NULL,
    settings                JSON NOT NULL,
    reference_kind          VARCHAR NOT NULL,   -- stored | typed | self
    reference_text          VARCHAR NOT NULL,
    retokenized             BOOLEAN NOT NULL,   -- token ids re-encoded from the trace text
    n_tokens                INTEGER NOT NULL,
    n_layers                INTEGER NOT NULL,
    deep_band_start         INTEGER NOT NULL,
    mi_threshold            DOUBLE,             -- NULL where undefined (NaN)
    n_peaks                 INTEGER NOT NULL,
    peak_ratio              DOUBLE,
    mean_mi                 DOUBLE,
    dtr                     DOUBLE,
    self_certainty          DOUBLE,
    lowest_group_confidence DOUBLE,
    tail_confidence         DOUBLE,
    mean_entropy            DOUBLE,
    notes                   JSON NOT NULL DEFAULT '[]',
    elapsed_s               DOUBLE NOT NULL,
    created_at              TIMESTAMP NOT NULL,
    UNIQUE (trace_id, analysis_model, settings_key)
);

CREATE TABLE analysis_tokens (
    analysis_id    BIGINT NOT NULL,
    position       INTEGER NOT NULL,
    token_id       BIGINT NOT NULL,
    text           VARCHAR NOT NULL,
    phase          TINYINT NOT NULL,
    mi             DOUBLE,
    is_peak        BOOLEAN NOT NULL,
    settling_depth SMALLINT NOT NULL,   -- 1..n_layers
    is_deep        BOOLEAN NOT NULL,
    entropy        FLOAT,
    logprob        FLOAT,
    self_certainty FLOAT,
    confidence     FLOAT,
    jsd            FLOAT[]              -- [n_layers] JSD to the final layer, nats
);
