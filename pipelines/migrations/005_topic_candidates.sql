-- 005: emerging topics. Negative feedback that no taxonomy topic covers is clustered into candidate
-- topics (pipelines/emerging.py, models/emerging.py); CX leads accept one into their taxonomy or
-- dismiss it (`cxloop taxonomy accept|dismiss`). A re-run updates a candidate's evidence, never
-- its status. Independent of 004: either may be applied first.

CREATE TABLE topic_candidates (
    candidate_id   VARCHAR PRIMARY KEY,    -- TC- + hash of the five top keywords: the same theme keeps its id
    keywords       VARCHAR[] NOT NULL,     -- c-TF-IDF over the clusters, most distinctive first
    match_keywords VARCHAR[] NOT NULL,     -- the few keywords that find the members: accept's default
    quotes         VARCHAR[] NOT NULL,     -- up to 3 representative (redacted) texts, mutually different
    size           INTEGER NOT NULL,       -- feedback in the cluster
    feedback_ids   VARCHAR[] NOT NULL,
    first_seen     TIMESTAMP,              -- created_at of the cluster's earliest feedback
    last_seen      TIMESTAMP,              -- … and of its latest
    coherence      DOUBLE,                 -- mean cosine of the members to the cluster's centroid
    status         VARCHAR NOT NULL DEFAULT 'new',  -- new | accepted | dismissed
    accepted_key   VARCHAR,                -- the taxonomy topic it became
    decided_by     VARCHAR,
    decided_at     TIMESTAMP,
    suggested_at   TIMESTAMP NOT NULL,     -- when it was first suggested
    run_id         VARCHAR NOT NULL,       -- the run that last computed it
    computed_at    TIMESTAMP NOT NULL
);

-- v_topic_candidates: the suggestions for CX leads, with the topic an accepted one became.
CREATE OR REPLACE VIEW v_topic_candidates AS
SELECT c.candidate_id, c.status, c.size, c.keywords, c.match_keywords, c.quotes, c.first_seen, c.last_seen,
       c.coherence, c.accepted_key, t.name AS accepted_name, c.decided_by, c.decided_at, c.suggested_at,
       c.computed_at, c.feedback_ids
FROM topic_candidates c LEFT JOIN topics t ON t.topic = c.accepted_key;
