-- 001: the vertical slice's warehouse. Tables are append-only or keyed; every write is idempotent.

CREATE TABLE runs (
    run_id      VARCHAR PRIMARY KEY,
    flow        VARCHAR NOT NULL,
    started_at  TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    status      VARCHAR NOT NULL,          -- running | completed | failed
    params      JSON,
    counts      JSON,
    error       VARCHAR
);

CREATE TABLE source_files (
    sha256           VARCHAR PRIMARY KEY,  -- content hash: the same bytes are ingested once
    source           VARCHAR NOT NULL,
    path             VARCHAR NOT NULL,
    size_bytes       BIGINT NOT NULL,
    encoding         VARCHAR,
    rows_read        INTEGER NOT NULL,
    rows_stored      INTEGER NOT NULL,
    rows_duplicate   INTEGER NOT NULL,
    rows_quarantined INTEGER NOT NULL,
    run_id           VARCHAR NOT NULL,
    ingested_at      TIMESTAMP NOT NULL
);

CREATE TABLE feedback (
    feedback_id  VARCHAR PRIMARY KEY,      -- hash of (source, source_id), or of the text when no id
    source       VARCHAR NOT NULL,
    source_id    VARCHAR,
    created_at   TIMESTAMP NOT NULL,       -- when the customer said it (ingest time when missing: see flags)
    channel      VARCHAR NOT NULL,
    product      VARCHAR,
    customer_key VARCHAR,                  -- salted hash of the customer id, never the id itself
    rating       TINYINT,                  -- 1..5
    nps          TINYINT,                  -- 0..10
    text         VARCHAR NOT NULL,         -- normalised and PII-redacted
    text_key     VARCHAR NOT NULL,         -- dedup key of the text
    pii_found    JSON,                     -- counts of redacted items by kind
    flags        VARCHAR[],                -- cleaning notes, e.g. created_at_missing, rating_invalid
    meta         JSON,
    ingested_at  TIMESTAMP NOT NULL,
    run_id       VARCHAR NOT NULL
);

CREATE TABLE quarantine (
    quarantine_id VARCHAR PRIMARY KEY,     -- hash of (source, locator, reason): re-ingest adds nothing
    source        VARCHAR NOT NULL,
    locator       VARCHAR NOT NULL,        -- file:line or file:row
    reason        VARCHAR NOT NULL,
    payload       VARCHAR,                 -- the original row, PII-redacted, truncated to 4000 chars
    run_id        VARCHAR NOT NULL,
    quarantined_at TIMESTAMP NOT NULL
);

CREATE TABLE feedback_nlp (
    feedback_id     VARCHAR PRIMARY KEY,
    tokens          VARCHAR[],
    keywords        VARCHAR[],
    sentiment       VARCHAR NOT NULL,      -- neg | neu | pos
    sentiment_score FLOAT NOT NULL,        -- P(pos) - P(neg), in [-1, 1]
    p_neg           FLOAT NOT NULL,
    p_neu           FLOAT NOT NULL,
    p_pos           FLOAT NOT NULL,
    topics          VARCHAR[] NOT NULL,    -- taxonomy keys
    model_version   VARCHAR NOT NULL,
    enriched_at     TIMESTAMP NOT NULL,
    run_id          VARCHAR NOT NULL
);

CREATE TABLE topics (                      -- the taxonomy in use, synced on every run
    topic       VARCHAR PRIMARY KEY,
    name        VARCHAR NOT NULL,
    stage       VARCHAR NOT NULL,
    team        VARCHAR NOT NULL,
    keywords    VARCHAR[] NOT NULL
);

CREATE TABLE pain_points (
    period          VARCHAR NOT NULL,      -- week
    period_start    DATE NOT NULL,
    topic           VARCHAR NOT NULL,
    channel         VARCHAR NOT NULL,
    volume          INTEGER NOT NULL,      -- feedback mentioning the topic
    neg_count       INTEGER NOT NULL,
    neg_rate        DOUBLE NOT NULL,
    prev_neg_count  INTEGER NOT NULL,      -- same topic and channel, previous period
    prev_neg_rate   DOUBLE,
    growth          DOUBLE NOT NULL,       -- (neg_count - prev) / max(prev, 1), clipped to [0, 2]
    priority        DOUBLE NOT NULL,
    keywords        VARCHAR[],
    quotes          VARCHAR[],
    model_version   VARCHAR NOT NULL,
    run_id          VARCHAR NOT NULL,
    computed_at     TIMESTAMP NOT NULL,
    PRIMARY KEY (period, period_start, topic, channel)
);

CREATE TABLE backlog (
    item_id            VARCHAR PRIMARY KEY, -- one item per topic x channel
    topic              VARCHAR NOT NULL,
    channel            VARCHAR NOT NULL,
    title              VARCHAR NOT NULL,
    owner_team         VARCHAR,
    status             VARCHAR NOT NULL,    -- new | triaged | in_progress | resolved | verified | reopened
    priority           DOUBLE NOT NULL,
    neg_count          INTEGER NOT NULL,
    neg_rate           DOUBLE NOT NULL,
    first_seen_period  DATE NOT NULL,
    last_seen_period   DATE NOT NULL,
    keywords           VARCHAR[],
    quotes             VARCHAR[],
    created_at         TIMESTAMP NOT NULL,
    updated_at         TIMESTAMP NOT NULL,
    run_id             VARCHAR NOT NULL
);

CREATE TABLE model_versions (
    model_version VARCHAR PRIMARY KEY,
    task          VARCHAR NOT NULL,        -- sentiment
    kind          VARCHAR NOT NULL,        -- baseline | transformer
    path          VARCHAR NOT NULL,
    metrics       JSON,
    promoted      BOOLEAN NOT NULL,
    registered_at TIMESTAMP NOT NULL
);
