-- 008: the journal of finished traces, and whether a run finished (issue 11, items 2 and 4).
--
-- journal_applied: one row per journal entry (storage/journal.py) stored in the database, written
--   in the same transaction as its traces, so replaying an entry twice (a crash between COMMIT and
--   removing the file, or two processes replaying at once) stores nothing twice. trace_ids is the
--   JSON list of the ids its traces got, which a late replay returns instead of inserting.
-- runs.status: 'complete', 'running' (a sweep or strategy run in progress; owner_pid is the process
--   generating it) or 'interrupted' (it stopped before all its cells or prompts were done, or its
--   process died). A sweep with the same settings resumes into its interrupted run.

CREATE TABLE journal_applied (
    entry_id   VARCHAR PRIMARY KEY,
    trace_ids  JSON NOT NULL,
    applied_at TIMESTAMP NOT NULL
);

ALTER TABLE runs ADD COLUMN status VARCHAR DEFAULT 'complete';
ALTER TABLE runs ADD COLUMN owner_pid INTEGER;

-- Runs left by killed sweeps and strategy runs: made by this program (imports and the sample data
-- carry a note), never given metrics, and either a sweep/strategy or without a single trace.
UPDATE runs SET status = 'interrupted'
WHERE note IS NULL
  AND run_id NOT IN (SELECT run_id FROM run_metrics)
  AND (strategy <> 'single' OR run_id NOT IN (SELECT run_id FROM traces));
