-- 004: learned topics with their own polarity, emotion and urgency per feedback. Rows scored before
-- this migration have NULLs here and an older model_version, so the next `enrich` re-scores them.

ALTER TABLE feedback_nlp ADD COLUMN topic_sentiments STRUCT(topic VARCHAR, sentiment VARCHAR, score FLOAT)[];
ALTER TABLE feedback_nlp ADD COLUMN emotion VARCHAR;              -- anger | disappointment | anxiety | joy | none
ALTER TABLE feedback_nlp ADD COLUMN emotion_evidence VARCHAR[];   -- the lexicon words that decided it
ALTER TABLE feedback_nlp ADD COLUMN urgent BOOLEAN;               -- escalation, churn, safety or fraud wording, not positive
ALTER TABLE feedback_nlp ADD COLUMN urgency_reasons VARCHAR[];    -- category:word, e.g. escalation:12315

-- v_feedback keeps 002's columns in place and adds the new ones at the end.
CREATE OR REPLACE VIEW v_feedback AS
SELECT f.feedback_id, f.created_at, f.channel, f.product, f.source, f.source_id,
       f.rating, f.nps, f.text,
       n.sentiment, n.sentiment_score, n.topics, n.keywords, n.model_version,
       f.customer_key, f.flags, f.ingested_at,
       n.topic_sentiments, n.emotion, n.urgent, n.urgency_reasons, n.emotion_evidence
FROM feedback f LEFT JOIN feedback_nlp n USING (feedback_id);

-- v_journey_stages (004): the stage's polarity in a feedback is its topics' own polarity (negative if
-- any of the stage's topics is negative, else positive if any is positive), not the whole text's.
CREATE OR REPLACE VIEW v_journey_stages AS
WITH base AS (
    SELECT f.feedback_id, any_value(f.created_at) AS created_at, any_value(f.channel) AS channel,
           any_value(f.customer_key) AS customer_key, t.stage,
           CASE WHEN bool_or(u.ts.sentiment = 'neg') THEN 'neg' WHEN bool_or(u.ts.sentiment = 'pos') THEN 'pos'
                ELSE 'neu' END AS sentiment
    FROM feedback f JOIN feedback_nlp n USING (feedback_id),
         unnest(n.topic_sentiments) AS u(ts) JOIN topics t ON t.topic = u.ts.topic
    GROUP BY f.feedback_id, t.stage
),
periods AS (
    SELECT *, 'day' AS period, CAST(date_trunc('day', created_at) AS DATE) AS period_start FROM base
    UNION ALL SELECT *, 'week', CAST(date_trunc('week', created_at) AS DATE) FROM base
    UNION ALL SELECT *, 'month', CAST(date_trunc('month', created_at) AS DATE) FROM base
)
SELECT period, period_start, stage, CASE WHEN grouping(channel) = 1 THEN '*' ELSE channel END AS channel,
       count(*) AS volume,
       count(*) FILTER (WHERE sentiment = 'neg') AS neg_count,
       count(*) FILTER (WHERE sentiment = 'neg') / count(*) AS neg_rate,
       (count(*) FILTER (WHERE sentiment = 'pos') - count(*) FILTER (WHERE sentiment = 'neg')) / count(*)
           AS net_sentiment,
       count(DISTINCT customer_key) AS customers
FROM periods
GROUP BY GROUPING SETS ((period, period_start, stage, channel), (period, period_start, stage));

-- v_nps_drivers: per topic, NPS (0–10 answers) and CSAT (1–5 ratings) of the feedback mentioning it,
-- and how much the overall score would move without that topic's negative mentions (004: a mention is
-- negative by the topic's own polarity).
CREATE OR REPLACE VIEW v_nps_drivers AS
WITH rows AS (
    SELECT f.feedback_id, f.nps, f.rating, n.topics,
           [x.topic FOR x IN n.topic_sentiments IF x.sentiment = 'neg'] AS neg_topics
    FROM feedback f JOIN feedback_nlp n USING (feedback_id)
    WHERE f.nps IS NOT NULL OR f.rating IS NOT NULL
),
overall AS (
    SELECT count(nps) AS nps_n,
           100.0 * (count(*) FILTER (WHERE nps >= 9) - count(*) FILTER (WHERE nps <= 6)) / nullif(count(nps), 0)
               AS nps,
           count(rating) AS rated_n,
           100.0 * count(*) FILTER (WHERE rating >= 4) / nullif(count(rating), 0) AS csat
    FROM rows
),
pairs AS (
    SELECT t.topic, r.nps, r.rating, list_contains(r.topics, t.topic) AS mentions,
           list_contains(r.neg_topics, t.topic) AS neg_here
    FROM topics t CROSS JOIN rows r
),
per_topic AS (
    SELECT topic,
           count(nps) FILTER (WHERE mentions) AS nps_responses,
           100.0 * (count(*) FILTER (WHERE mentions AND nps >= 9) - count(*) FILTER (WHERE mentions AND nps <= 6))
               / nullif(count(nps) FILTER (WHERE mentions), 0) AS topic_nps,
           100.0 * (count(*) FILTER (WHERE NOT neg_here AND nps >= 9) - count(*) FILTER (WHERE NOT neg_here AND nps <= 6))
               / nullif(count(nps) FILTER (WHERE NOT neg_here), 0) AS nps_without_negative,
           count(rating) FILTER (WHERE mentions) AS ratings,
           100.0 * count(*) FILTER (WHERE mentions AND rating >= 4)
               / nullif(count(rating) FILTER (WHERE mentions), 0) AS topic_csat,
           100.0 * count(*) FILTER (WHERE NOT neg_here AND rating >= 4)
               / nullif(count(rating) FILTER (WHERE NOT neg_here), 0) AS csat_without_negative
    FROM pairs GROUP BY topic
)
SELECT p.topic, t.name AS topic_name, t.stage, t.team AS owner_team,
       p.nps_responses, round(p.topic_nps, 1) AS nps, round(o.nps, 1) AS overall_nps,
       round(p.nps_without_negative, 1) AS nps_without_negative,
       round(p.nps_without_negative - o.nps, 1) AS nps_impact,
       p.ratings, round(p.topic_csat, 1) AS csat, round(o.csat, 1) AS overall_csat,
       round(p.csat_without_negative, 1) AS csat_without_negative,
       round(p.csat_without_negative - o.csat, 1) AS csat_impact
FROM per_topic p CROSS JOIN overall o JOIN topics t USING (topic);
