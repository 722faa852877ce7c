-- 007: feedback.text_key, the dedup key of a text (nlp.dedup_key: the normalised text without
-- punctuation, spaces or case), becomes the first 16 hex digits of the key's MD5, which ingest
-- computes the same way in Python (pipelines.records.text_key), like the other keys of the table
-- (feedback_id, customer_key). As the key itself it was the text a second time, about 45 % of the
-- table's bytes: staged, inserted and checkpointed on one core at the end of every ingest (README.md,
-- Speed, has the figures). Pain points read it to keep quotes distinct, which the hash does as well;
-- feedback_id, derived from the key in Python, does not change. (An UPDATE, not a change of type:
-- DuckLake can neither retype a column by expression nor give a new column NOT NULL.)

UPDATE feedback SET text_key = left(md5(text_key), 16);
