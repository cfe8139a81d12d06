-- 010: named prompt sets (GSM8K, MATH-500, AIME, any Hugging Face dataset, local files), stored once
-- so pages and the CLI can run strategies over them without the hub or the file.
--
-- prompt_sets: one row per set. name is what users pick (unique); source says where the rows came
--   from ("hf:openai/gsm8k:main:test", "file:/data/x.parquet"); preset names the preset whose
--   system prompt, answer format and grading apply (NULL: none); fields records the field mapping
--   used ({"prompt": "question", "answer": "answer"}); n_items counts prompt_set_items rows.
-- prompt_set_items: the prompts of a set in their source order (idx 0, 1, ...). prompt is the text
--   given to the model (the preset's instruction included); reference_answer is already extracted
--   (GSM8K: the text after "####"); meta keeps the source row's id-like fields (unique_id, level...).
-- Replacing a set deletes its items and inserts the new ones in one transaction
-- (storage/prompt_sets.py); as in 001, no FOREIGN KEY clauses.

CREATE SEQUENCE prompt_set_id_seq START 1;

CREATE TABLE prompt_sets (
    set_id      BIGINT PRIMARY KEY DEFAULT nextval('prompt_set_id_seq'),
    name        VARCHAR NOT NULL UNIQUE,
    source      VARCHAR NOT NULL,
    preset      VARCHAR,
    fields      JSON NOT NULL,
    n_items     INTEGER NOT NULL,
    created_at  TIMESTAMP NOT NULL
);

CREATE TABLE prompt_set_items (
    set_id            BIGINT NOT NULL,
    idx               INTEGER NOT NULL,
    prompt            VARCHAR NOT NULL,
    reference_answer  VARCHAR,
    meta              JSON NOT NULL,
    PRIMARY KEY (set_id, idx)
);
