-- 007: a content hash per trace, so importing the same file twice stores nothing new.
--
-- content_hash = sha256 over (prompt text, reference answer, model, thinking, answer, stop reason),
-- each as 'N' (null) or 'S<UTF-8 bytes>:<text>', joined by '|': storage/content.py computes the
-- same in Python for new rows (CONTENT_HASH_SQL there is this expression; a test checks they agree).
-- Times, ids, meta and token rows are left out: they differ between formats for the same trace.
-- No index: an import looks hashes up a batch at a time, and a columnar scan of one VARCHAR column
-- is cheap next to the insert, while an ART index would cost memory and insert speed at 10^6 rows.
ALTER TABLE traces ADD COLUMN content_hash VARCHAR;

UPDATE traces AS t
SET content_hash = sha256(concat_ws('|',
    CASE WHEN p.text IS NULL THEN 'N' ELSE 'S' || strlen(p.text) || ':' || p.text END,
    CASE WHEN p.reference_answer IS NULL THEN 'N' ELSE 'S' || strlen(p.reference_answer) || ':' || p.reference_answer END,
    CASE WHEN t.model IS NULL THEN 'N' ELSE 'S' || strlen(t.model) || ':' || t.model END,
    CASE WHEN t.thinking_text IS NULL THEN 'N' ELSE 'S' || strlen(t.thinking_text) || ':' || t.thinking_text END,
    CASE WHEN t.answer_text IS NULL THEN 'N' ELSE 'S' || strlen(t.answer_text) || ':' || t.answer_text END,
    CASE WHEN t.stop_reason IS NULL THEN 'N' ELSE 'S' || strlen(t.stop_reason) || ':' || t.stop_reason END))
FROM prompts AS p
WHERE p.prompt_id = t.prompt_id;
