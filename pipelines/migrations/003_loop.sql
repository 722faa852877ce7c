-- 003: close the loop. Pain points become a cube (day/week/month × topic × channel × product, with
-- '*' roll-ups), spikes become alerts, the backlog gets a lifecycle with history, and resolved
-- items are verified by measuring the same topic after the fix. Columns of the views are
-- documented in README.md; the columns of 002's views keep their place and meaning.

-- pain_points is derived data (recomputed on every run): recreate it with the wider key.
DROP VIEW IF EXISTS v_pain_points;
DROP TABLE pain_points;
CREATE TABLE pain_points (
    period            VARCHAR NOT NULL,    -- day | week | month
    period_start      DATE NOT NULL,       -- first day of the period (Monday for weeks)
    topic             VARCHAR NOT NULL,
    channel           VARCHAR NOT NULL,    -- '*' = all channels
    product           VARCHAR NOT NULL,    -- '*' = all products, 'unknown' when the row has none
    volume            INTEGER NOT NULL,    -- feedback mentioning the topic
    neg_count         INTEGER NOT NULL,
    pos_count         INTEGER NOT NULL,
    neg_rate          DOUBLE NOT NULL,     -- neg_count / volume
    net_sentiment     DOUBLE NOT NULL,     -- (pos_count - neg_count) / volume
    prev_neg_count    INTEGER NOT NULL,    -- same cell, previous period
    prev_neg_rate     DOUBLE,
    growth            DOUBLE NOT NULL,     -- (neg_count - prev) / max(prev, 1), clipped to [0, 2]
    trailing_neg_avg  DOUBLE NOT NULL,     -- mean neg_count of the trailing periods (7 days, 4 weeks, 3 months)
    trend             DOUBLE NOT NULL,     -- (neg_count - trailing) / (trailing + 3), clipped to [-1, 2]
    urgent_count      INTEGER NOT NULL,    -- negative feedback with urgent wording (fraud, regulator, safety…)
    customers         INTEGER NOT NULL,    -- distinct customer_key among the volume
    neg_rate_smoothed DOUBLE NOT NULL,     -- (neg_count + m·p0) / (volume + m): shrunk towards the overall rate
    growth_factor     DOUBLE NOT NULL,     -- 1 + max(trend, 0) / 2
    urgency_factor    DOUBLE NOT NULL,     -- 1 + urgent_count / max(neg_count, 1), at most 2
    priority          DOUBLE NOT NULL,     -- neg_count × neg_rate_smoothed × growth_factor × urgency_factor
    keywords          VARCHAR[],
    quotes            VARCHAR[],
    model_version     VARCHAR NOT NULL,
    run_id            VARCHAR NOT NULL,
    computed_at       TIMESTAMP NOT NULL,
    PRIMARY KEY (period, period_start, topic, channel, product)
);

CREATE TABLE alerts (
    alert_id          VARCHAR PRIMARY KEY, -- hash of (kind, period, period_start, topic, channel): raised once
    kind              VARCHAR NOT NULL,    -- volume_spike | rate_spike | urgent
    period            VARCHAR NOT NULL,    -- week
    period_start      DATE NOT NULL,
    topic             VARCHAR NOT NULL,
    channel           VARCHAR NOT NULL,    -- '*' = all channels
    observed          DOUBLE NOT NULL,     -- negative count (volume_spike, urgent) or negative rate (rate_spike)
    expected          DOUBLE,              -- the baseline's value
    p_value           DOUBLE,              -- one-sided test against the baseline (NULL for urgent)
    message           VARCHAR NOT NULL,
    evidence          JSON NOT NULL,       -- baseline periods and counts, quotes, thresholds used
    created_at        TIMESTAMP NOT NULL,
    run_id            VARCHAR NOT NULL,
    delivered_at      TIMESTAMP,           -- NULL until the webhook accepted it (retried on later runs)
    delivery_attempts INTEGER NOT NULL DEFAULT 0,
    delivery_error    VARCHAR
);

ALTER TABLE backlog ADD COLUMN due_date DATE;
ALTER TABLE backlog ADD COLUMN owner_source VARCHAR;        -- taxonomy | person
ALTER TABLE backlog ADD COLUMN resolved_at TIMESTAMP;       -- when the fix shipped (T of verification)
ALTER TABLE backlog ADD COLUMN verified_at TIMESTAMP;
ALTER TABLE backlog ADD COLUMN status_changed_at TIMESTAMP;

CREATE TABLE backlog_history (
    item_id    VARCHAR NOT NULL,
    changed_at TIMESTAMP NOT NULL,
    actor      VARCHAR NOT NULL,           -- a person ($CXLOOP_USER / --by) or cxloop (pain_points, verify)
    action     VARCHAR NOT NULL,           -- created | status | assign | due | note
    old_value  VARCHAR,
    new_value  VARCHAR,
    note       VARCHAR,
    run_id     VARCHAR
);

CREATE TABLE verifications (
    verification_id VARCHAR PRIMARY KEY,
    item_id         VARCHAR NOT NULL,
    checked_at      TIMESTAMP NOT NULL,
    topic           VARCHAR NOT NULL,
    channel         VARCHAR NOT NULL,
    resolved_at     TIMESTAMP NOT NULL,
    baseline_from   TIMESTAMP NOT NULL,
    baseline_to     TIMESTAMP NOT NULL,
    baseline_n      INTEGER NOT NULL,      -- feedback in the item's channel (all channels for '*')
    baseline_mentions INTEGER NOT NULL,    -- of which mention the topic
    baseline_neg    INTEGER NOT NULL,      -- of which mention it negatively
    baseline_rate   DOUBLE,                -- baseline_neg / baseline_n
    after_from      TIMESTAMP NOT NULL,
    after_to        TIMESTAMP NOT NULL,
    after_n         INTEGER NOT NULL,
    after_mentions  INTEGER NOT NULL,
    after_neg       INTEGER NOT NULL,
    after_rate      DOUBLE,                -- after_neg / after_n
    z               DOUBLE,                -- two-proportion z (negative: the rate fell)
    p_value         DOUBLE,                -- one-sided Fisher exact test that the rate fell
    decision        VARCHAR NOT NULL,      -- verified | reopened | waiting
    reason          VARCHAR NOT NULL,
    run_id          VARCHAR NOT NULL
);

-- v_pain_points: the weekly ranking, one row per week × topic × channel (all products), as in 002,
-- with the new factors appended.
CREATE OR REPLACE VIEW v_pain_points AS
SELECT p.period, p.period_start, p.topic, t.name AS topic_name, t.stage, t.team AS owner_team,
       p.channel, p.volume, p.neg_count, p.neg_rate, p.prev_neg_count, p.growth, p.priority,
       p.keywords, p.quotes, p.model_version, p.computed_at,
       p.pos_count, p.net_sentiment, p.trailing_neg_avg, p.trend, p.urgent_count, p.customers,
       p.neg_rate_smoothed, p.growth_factor, p.urgency_factor
FROM pain_points p LEFT JOIN topics t USING (topic)
WHERE p.period = 'week' AND p.product = '*' AND p.channel <> '*';

-- v_topic_trend: the whole cube, every period kind, with '*' roll-ups over channels and products.
CREATE OR REPLACE VIEW v_topic_trend AS
SELECT p.period, p.period_start, p.topic, t.name AS topic_name, t.stage, t.team AS owner_team,
       p.channel, p.product, p.volume, p.neg_count, p.pos_count, p.neg_rate, p.net_sentiment,
       p.prev_neg_count, p.trailing_neg_avg, p.trend, p.urgent_count, p.customers, p.priority,
       p.keywords, p.quotes
FROM pain_points p LEFT JOIN topics t USING (topic);

-- v_journey_stages: feedback per journey stage × touchpoint (channel, '*' = all), each feedback
-- counted once per stage however many of the stage's topics it mentions.
CREATE OR REPLACE VIEW v_journey_stages AS
WITH base AS (
    SELECT DISTINCT f.feedback_id, f.created_at, f.channel, f.customer_key, n.sentiment, t.stage
    FROM feedback f JOIN feedback_nlp n USING (feedback_id),
         unnest(n.topics) AS u(topic) JOIN topics t ON t.topic = u.topic
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

-- v_alerts: every alert raised, with its delivery state.
CREATE OR REPLACE VIEW v_alerts AS
SELECT a.alert_id, a.kind, a.period, a.period_start, a.topic, t.name AS topic_name, t.team AS owner_team,
       a.channel, a.observed, a.expected, a.p_value, a.message, a.evidence, a.created_at,
       a.delivered_at, a.delivery_attempts, a.delivery_error
FROM alerts a LEFT JOIN topics t USING (topic);

-- v_backlog: 002's columns, then the lifecycle and the latest verification.
CREATE OR REPLACE VIEW v_backlog AS
SELECT b.item_id, b.title, b.topic, t.name AS topic_name, b.channel, b.owner_team, b.status,
       b.priority, b.neg_count, b.neg_rate, b.first_seen_period, b.last_seen_period,
       b.keywords, b.quotes, b.created_at, b.updated_at,
       b.due_date, b.resolved_at, b.verified_at, b.status_changed_at,
       v.decision AS last_check, v.reason AS last_check_reason, v.baseline_rate, v.after_rate, v.p_value,
       v.checked_at AS last_checked_at
FROM backlog b LEFT JOIN topics t USING (topic)
LEFT JOIN (SELECT * FROM verifications QUALIFY row_number() OVER (PARTITION BY item_id ORDER BY checked_at DESC,
                                                                               verification_id) = 1) v
       USING (item_id);

-- v_nps_drivers: per topic, NPS (0–10 answers) and CSAT (1–5 ratings) of the feedback mentioning it,
-- and how much the overall score would move without that topic's negative mentions.
CREATE OR REPLACE VIEW v_nps_drivers AS
WITH rows AS (
    SELECT f.feedback_id, f.nps, f.rating, n.sentiment, n.topics
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
           (r.sentiment = 'neg' AND list_contains(r.topics, t.topic)) AS neg_here
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
