-- 006: feedback_nlp.tokens becomes one string per text, the jieba words separated by single spaces
-- ("快递 很快 但是 质量 太差"; string_split(tokens, ' ') gives the list back), the form most segmented
-- Chinese corpora and DuckDB's full-text search take. As VARCHAR[] the column held 35 strings per
-- review, and writing them was most of enrich's storage work: 60 % of the checkpoint (0.58 of
-- 0.8 s per 100,000 rows, on one core after the scoring) and the list building, insert and WAL
-- per batch. As text the column's checkpoint is 0.19 s (the table's 0.36-0.47 s instead of 0.75-0.8)
-- and the file 5 % smaller (README.md, Speed).
-- A word never holds a space (nlp.segment.join_words), so nothing is lost; [] becomes ''.

ALTER TABLE feedback_nlp ALTER tokens TYPE VARCHAR USING array_to_string(tokens, ' ');
