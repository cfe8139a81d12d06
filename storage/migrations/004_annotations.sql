-- 004: human review of traces: verdicts, notes and span labels, kept as append-only history.
--
-- annotations: one row per saved version. The current state of a (trace, reviewer) is its highest
--   version; nothing is ever updated or deleted, so every edit stays in the history. based_on is
--   the version the saving view had loaded (0 = none); a save whose based_on is older than the
--   latest version at save time is a stale save: it is still stored (nothing is lost) with
--   stale = true and superseded = the newer version it did not see, and the UI says so.
-- annotation_spans: the span labels of one version (a full snapshot per version, so a version
--   reads back without replaying earlier ones). Offsets index traces.thinking_text (characters,
--   end exclusive); step_text is what those characters were when labelled.
-- span_labels: the editable taxonomy. Labels are renamed or retired, never deleted, so old
--   annotations keep a readable label; spans refer to label_id.
-- As in 001: no FOREIGN KEY clauses; storage/annotations.py keeps ids consistent in its
-- transactions.

CREATE SEQUENCE annotation_id_seq START 1;
CREATE SEQUENCE span_label_id_seq START 1;

CREATE TABLE annotations (
    annotation_id BIGINT PRIMARY KEY DEFAULT nextval('annotation_id_seq'),
    trace_id      BIGINT NOT NULL,
    reviewer      VARCHAR NOT NULL,
    version       INTEGER NOT NULL,     -- 1, 2, ... per (trace_id, reviewer)
    based_on      INTEGER NOT NULL,     -- version the saving view had loaded; 0 = none
    stale         BOOLEAN NOT NULL,     -- based_on was older than the latest version at save time
    superseded    INTEGER,              -- for a stale save: the latest version it had not seen
    verdict       VARCHAR,              -- NULL: no verdict yet (span labels only)
    notes         VARCHAR NOT NULL,
    created_at    TIMESTAMP NOT NULL,
    UNIQUE (trace_id, reviewer, version),
    CHECK (verdict IS NULL OR verdict IN ('correct', 'incorrect', 'overthought', 'underthought', 'looping'))
);
CREATE INDEX annotations_trace_idx ON annotations (trace_id);

CREATE TABLE annotation_spans (
    annotation_id BIGINT NOT NULL,
    span_index    INTEGER NOT NULL,     -- order within the version (by start, end, label)
    start_char    INTEGER NOT NULL,
    end_char      INTEGER NOT NULL,
    unit          VARCHAR NOT NULL,     -- sentence | paragraph: how the step was cut
    label_id      BIGINT NOT NULL,
    step_text     VARCHAR NOT NULL,
    PRIMARY KEY (annotation_id, span_index)
);

CREATE TABLE span_labels (
    label_id    BIGINT PRIMARY KEY DEFAULT nextval('span_label_id_seq'),
    name        VARCHAR NOT NULL,
    name_key    VARCHAR NOT NULL UNIQUE,  -- lower(trim(name)): names differ by more than case
    description VARCHAR NOT NULL,
    position    INTEGER NOT NULL,         -- display order
    retired     BOOLEAN NOT NULL,
    created_at  TIMESTAMP NOT NULL,
    updated_at  TIMESTAMP NOT NULL
);

INSERT INTO span_labels (name, name_key, description, position, retired, created_at, updated_at)
SELECT name, lower(name), description, position, false,
       (now() AT TIME ZONE 'UTC')::TIMESTAMP, (now() AT TIME ZONE 'UTC')::TIMESTAMP
FROM (VALUES
    ('problem setup', 'Restates or parses the question', 1),
    ('plan', 'Decides how to approach the problem', 2),
    ('fact retrieval', 'Recalls a fact or definition', 3),
    ('computation', 'Carries out a calculation or derivation', 4),
    ('uncertainty management', 'Hedges, doubts, or weighs alternatives', 5),
    ('self-check', 'Verifies an earlier step or result', 6),
    ('result consolidation', 'Pulls intermediate results together', 7),
    ('answer emission', 'States the final answer', 8),
    ('error', 'A wrong step: bad fact, arithmetic or logic', 9),
    ('overthinking', 'Reasoning that adds nothing after the answer is settled', 10)
) AS t(name, description, position)
ORDER BY position;
