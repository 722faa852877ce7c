-- 002: stable views for CX leads. Columns are documented in README.md and never change meaning;
-- a new column may be added at the end.

CREATE OR REPLACE VIEW v_feedback AS
SELECT f.feedback_id, f.created_at, f.channel, f.product, f.source, f.source_id,
       f.rating, f.nps, f.text,
       n.sentiment, n.sentiment_score, n.topics, n.keywords, n.model_version,
       f.customer_key, f.flags, f.ingested_at
FROM feedback f LEFT JOIN feedback_nlp n USING (feedback_id);

CREATE OR REPLACE VIEW v_pain_points AS
SELECT p.period, p.period_start, p.topic, t.name AS topic_name, t.stage, t.team AS owner_team,
       p.channel, p.volume, p.neg_count, p.neg_rate, p.prev_neg_count, p.growth, p.priority,
       p.keywords, p.quotes, p.model_version, p.computed_at
FROM pain_points p LEFT JOIN topics t USING (topic);

CREATE OR REPLACE VIEW v_backlog AS
SELECT b.item_id, b.title, b.topic, t.name AS topic_name, b.channel, b.owner_team, b.status,
       b.priority, b.neg_count, b.neg_rate, b.first_seen_period, b.last_seen_period,
       b.keywords, b.quotes, b.created_at, b.updated_at
FROM backlog b LEFT JOIN topics t USING (topic);
