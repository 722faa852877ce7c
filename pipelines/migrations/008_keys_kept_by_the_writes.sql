-- lake: nothing to do (DuckLake has no keys: there, the writes keep them already)
-- 008: feedback and feedback_nlp, the two tables that grow with every review, keep their key
-- (feedback_id) without a PRIMARY KEY. DuckDB keeps a primary key in an ART index, and rewrites a
-- table's index whole at every checkpoint, which every write that closes the file ends with: 0.11 s
-- after adding 1,000 rows to a 100,000-row table, 0.69 s on a 1,000,000-row one (0.005 s without
-- the key), so each run's ingest and enrich paid time in proportion to the warehouse, not to what
-- they added; and every insert checked the index (about 0.2 s per 100,000 NLP rows). The writes
-- already keep the keys unique without it, as they must in DuckLake, which has no keys: ingest
-- inserts with an anti-join (Warehouse.insert_parquet, on_conflict='ignore'), enrich deletes a
-- batch's rows before inserting them (pipelines.enrich.write_nlp), each in one transaction on the
-- only connection that writes. pipelines.warehouse.KEYS_KEPT_BY_WRITES declares the two keys.
-- The tables are made again with the same columns, types and NOT NULLs, and the rows copied.

CREATE TABLE feedback__008 (
    feedback_id  VARCHAR NOT NULL,         -- hash of (source, source_id), or of the text when no id
    source       VARCHAR NOT NULL,
    source_id    VARCHAR,
    created_at   TIMESTAMP NOT NULL,       -- when the customer said it (ingest time when missing: see flags)
    channel      VARCHAR NOT NULL,
    product      VARCHAR,
    customer_key VARCHAR,                  -- salted hash of the customer id, never the id itself
    rating       TINYINT,                  -- 1..5
    nps          TINYINT,                  -- 0..10
    text         VARCHAR NOT NULL,         -- normalised and PII-redacted
    text_key     VARCHAR NOT NULL,         -- dedup key of the text (16 hex digits of its MD5: 007)
    pii_found    JSON,                     -- counts of redacted items by kind
    flags        VARCHAR[],                -- cleaning notes, e.g. created_at_missing, rating_invalid
    meta         JSON,
    ingested_at  TIMESTAMP NOT NULL,
    run_id       VARCHAR NOT NULL
);
INSERT INTO feedback__008 BY NAME SELECT * FROM feedback;
DROP TABLE feedback;
ALTER TABLE feedback__008 RENAME TO feedback;

CREATE TABLE feedback_nlp__008 (
    feedback_id      VARCHAR NOT NULL,
    tokens           VARCHAR,              -- the words, separated by single spaces (006)
    keywords         VARCHAR[],
    sentiment        VARCHAR NOT NULL,     -- neg | neu | pos
    sentiment_score  FLOAT NOT NULL,       -- P(pos) - P(neg), in [-1, 1]
    p_neg            FLOAT NOT NULL,
    p_neu            FLOAT NOT NULL,
    p_pos            FLOAT NOT NULL,
    topics           VARCHAR[] NOT NULL,   -- taxonomy keys
    model_version    VARCHAR NOT NULL,
    enriched_at      TIMESTAMP NOT NULL,
    run_id           VARCHAR NOT NULL,
    topic_sentiments STRUCT(topic VARCHAR, sentiment VARCHAR, score FLOAT)[],
    emotion          VARCHAR,              -- anger | disappointment | anxiety | joy | none
    emotion_evidence VARCHAR[],            -- the lexicon words that decided it
    urgent           BOOLEAN,              -- escalation, churn, safety or fraud wording, not positive
    urgency_reasons  VARCHAR[]             -- category:word, e.g. escalation:12315
);
INSERT INTO feedback_nlp__008 BY NAME SELECT * FROM feedback_nlp;
DROP TABLE feedback_nlp;
ALTER TABLE feedback_nlp__008 RENAME TO feedback_nlp;
