-- 006: stopped and failed traces are ungraded (docs/METHODS.md §7).
--
-- Before this migration a trace stopped by the user, stopped early (DeepConf online) or cut by an
-- error was graded like a finished one: its "answer" was whatever number came last in the partial
-- text, so a stopped trace with 30 thinking tokens showed "Answer 8, incorrect". From now on only
-- traces that ended on their own (stop_reason eos, max_tokens or imported; see
-- analysis.records.GRADED_STOP_REASONS) are graded, and the application stores NULL for the rest.
-- This sets the grades stored by older versions to NULL too, in traces and in the sweep cells that
-- point at such traces. The extracted answer is kept: it is what the text said when it stopped.
-- Only grades change, so running it on a database without such traces changes nothing.

UPDATE traces SET correct = NULL
WHERE stop_reason NOT IN ('eos', 'max_tokens', 'imported') AND correct IS NOT NULL;

UPDATE sweep_cells SET correct = NULL
WHERE correct IS NOT NULL
  AND trace_id IN (SELECT trace_id FROM traces WHERE stop_reason NOT IN ('eos', 'max_tokens', 'imported'));
