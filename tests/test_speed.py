"""The fast paths give exactly what the plain paths give: the segmenter's cache of jieba's words,
the vectorised TF-IDF against scikit-learn's, and ``enrich`` with worker processes against a serial
run on the sample data (every ``feedback_nlp`` column, value for value, in a real DuckDB file)."""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import jieba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stored_rows import ingest_sample, nlp_rows

from models.parallel import AnalyzerPool
from models.predict import Analyzer
from models.registry import load_sentiment_model, load_topic_model, resolve_model
from nlp import Segmenter, normalize_text
from nlp.clauses import split_clauses
from nlp.codepoints import PackedWords
from nlp.segment import _PLACEHOLDER_RE, WORD_SEP, join_words, split_words
from nlp.word_column import join_words_utf8
from pipelines.config import Settings, worker_count
from pipelines.enrich import enrich_pending, sync_topics
from pipelines.ingest import ingest_file
from pipelines.records import ColumnMap
from pipelines.sources import iter_files, read_file
from pipelines.warehouse import Warehouse

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
ODD = ["", " ", "a  b\n\nc\td  ", "ABC Def İstanbul ẞ", "😀😀 表情", "x", "好", "全角ＡＢＣ１２３",
       "<PHONE>请回电<EMAIL>", "快递很快但是质量太差，客服态度也不好！！", "iPhone 15 Pro Max 屏幕 发黄",
       "C++ 和 .NET 工程师", "\ud800孤立"]


@pytest.fixture(scope="module")
def sample_texts() -> list[str]:
    texts = [normalize_text(v) for f in iter_files([SAMPLE]) for r in read_file(f).rows if r.fields
             for v in r.fields.values() if isinstance(v, str) and len(v) > 1]
    assert len(texts) > 500
    return texts + ODD


def test_the_segmenter_cache_returns_jiebas_words(sample_texts: list[str]) -> None:
    reference = jieba.Tokenizer()
    seg = Segmenter(cache_size=50, engine="jieba")  # a small cache, so that it is also emptied on the way
    seg.initialize()
    reference.initialize()
    for d in seg._dicts:
        reference.load_userdict(d)
    clauses = [c for t in sample_texts for c in split_clauses(t)]
    def words(text: str) -> list[str]:  # what Segmenter.cut returned before it had a cache
        out, pos = [], 0
        for m in _PLACEHOLDER_RE.finditer(text):
            out += [w for w in reference.lcut(text[pos:m.start()]) if not w.isspace()] + [m.group(0)]
            pos = m.end()
        return out + [w for w in reference.lcut(text[pos:]) if not w.isspace()]

    for texts in (sample_texts, clauses, sample_texts):  # cold, new pieces, warm
        for t in texts:
            assert seg.cut(t) == words(t), t
    assert 0 < len(seg._cache) <= 50


@pytest.mark.parametrize("which", ["baseline", "topics"])
def test_fast_tfidf_is_scikit_learns_matrix(sample_texts: list[str], which: str) -> None:
    features = (load_sentiment_model(resolve_model("baseline")).text_features if which == "baseline"
                else load_topic_model(resolve_model(None, task="topics")).features)
    texts = sample_texts + [t.upper() for t in sample_texts[:50]]
    tokens = [list(t) for t in texts]                 # any token lists: the word block is a look-up
    tokens[0] = tokens[0] + [" ", "", "\n"]          # whitespace tokens are dropped as scikit-learn drops them
    fast, slow = features.transform(texts, tokens), features.transform_slow(texts, tokens)
    assert fast.shape == slow.shape and fast.dtype == slow.dtype
    assert np.array_equal(fast.indptr, slow.indptr) and np.array_equal(fast.indices, slow.indices)
    assert np.array_equal(fast.data, slow.data)       # bit for bit, not approximately
    empty = features.transform([], [])
    assert empty.shape == (0, slow.shape[1])


def test_serving_and_the_main_jobs_flows_import_no_scikit_learn() -> None:
    """scikit-learn (with the SciPy modules it pulls in) costs about a second of every process's start:
    the flows and scoring with saved models never import it; fitting and topic discovery do. The
    command line and the flows' modules import neither numba (until a model or the keywords first
    compute) nor Prefect's server package (``pipelines.temporary_api`` launches the server without it)."""
    import subprocess
    import sys

    heavy = "sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in ('sklearn', 'pandas', 'numba')} | " \
            "({'prefect.server'} & {m[:14] for m in sys.modules}))"
    code = (f"import sys; import pipelines.cli, pipelines.flows; print({heavy}); "
            "from models.predict import Analyzer; "
            "a = Analyzer.load('baseline'); a.analyze(['快递很快，但是客服态度太差了', '好评']); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'pandas')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-2:] == ["[]", "[]"], r.stdout[-2000:]


def test_compiled_tfidf_of_a_freshly_fitted_vocabulary_is_scikit_learns(sample_texts: list[str]) -> None:
    """A vocabulary scikit-learn just fitted (ids in alphabetical order, not insertion order), texts
    with words and n-grams it never saw, astral and odd characters: the kernels' matrix and scores
    are scikit-learn's bit for bit, and the scores its matrix times the weights."""
    from models.features import FeatureConfig, TextFeatures

    features = TextFeatures(FeatureConfig(min_df=1))
    train, held_out = sample_texts[::2], sample_texts[1::2] + ODD + ["C++ C++ C++ 哈哈哈哈哈哈哈哈 " * 40]
    tokens = [t.split() + list(t) for t in held_out]      # whole "words" (spaces) and characters
    features.fit_transform(train, [t.split() + list(t) for t in train])
    fast, slow = features.transform(held_out, tokens), features.transform_slow(held_out, tokens)
    assert np.array_equal(fast.indptr, slow.indptr) and np.array_equal(fast.indices, slow.indices)
    assert np.array_equal(fast.data, slow.data)
    coef = np.random.default_rng(0).normal(size=(4, features.size)).astype(np.float32)
    scores = features.linear(held_out, tokens, coef)
    np.testing.assert_allclose(scores, np.asarray(slow @ coef.T), rtol=0, atol=1e-5)
    assert np.array_equal(features.linear(held_out, PackedWords(tokens), coef), scores)   # packed once, same words


@pytest.mark.parametrize("which", ["baseline", "topics"])
def test_linear_scores_are_the_stacked_matrix_times_the_weights(sample_texts: list[str], which: str) -> None:
    if which == "baseline":
        model = load_sentiment_model(resolve_model("baseline"))
        features, coef = model.text_features, model.coef
    else:
        model = load_topic_model(resolve_model(None, task="topics"))
        features, coef = model.features, model.coef
    tokens = [list(t) for t in sample_texts]
    stacked = np.asarray(features.transform(sample_texts, tokens) @ coef.T)
    fused = features.linear(sample_texts, tokens, coef)
    assert fused.shape == stacked.shape == (len(sample_texts), coef.shape[0])
    np.testing.assert_allclose(fused, stacked, rtol=0, atol=1e-5)   # the sums are grouped by block
    assert features.linear([], [], coef).shape == (0, coef.shape[0])
    with pytest.raises(ValueError, match="features"):
        features.linear(sample_texts, tokens, coef[:, 1:].copy())


@pytest.fixture(scope="module")
def two_vocabularies(sample_texts: list[str]) -> tuple:
    """Two feature sets fitted on different halves of the texts (each has terms the other lacks)."""
    from models.features import FeatureConfig, TextFeatures

    first, second = TextFeatures(FeatureConfig(min_df=1)), TextFeatures(FeatureConfig(min_df=1))
    for features, part in ((first, sample_texts[::2]), (second, sample_texts[1::2] + ["C++ 客服 😀"])):
        features.fit_transform(part, [t.split() + list(t) for t in part])
    return first, second


_TEXT = st.text(alphabet=st.sampled_from(list("快递很慢客服态度差好评 C+😀é\u3000Ａ，!")), max_size=30)


@settings(deadline=None)   # the first example builds the indexes
@given(st.lists(_TEXT, max_size=12))
def test_a_joint_index_finds_what_each_vocabularys_own_finds(two_vocabularies: tuple, texts: list[str]) -> None:
    # one probe per n-gram or word for two vocabularies: each gets exactly the ids, in the order,
    # that its own index gives (words only in one vocabulary, in both, in neither; astral characters)
    from models.features import char_docs
    from models.tfidf_kernel import CharIndex, WordIndex

    first, second = two_vocabularies
    docs, tokens = char_docs(texts), [t.split() + list(t) for t in texts]
    chars, words = [f._fitted("char")[0] for f in (first, second)], [f._fitted("word")[0] for f in (first, second)]
    for joint, own, arg in ((CharIndex(*chars[:1], 1, 3, second=chars[1]), [CharIndex(v, 1, 3) for v in chars], docs),
                            (WordIndex(words[0], second=words[1]), [WordIndex(v) for v in words], tokens)):
        for k, (ptr, ids) in enumerate(joint.ids_both(arg)):
            ptr_own, ids_own = own[k].ids(arg)
            assert np.array_equal(ptr, ptr_own) and np.array_equal(ids, ids_own)


def test_shared_lookups_change_no_score(sample_texts: list[str], two_vocabularies: tuple) -> None:
    from models.features import SharedLookups

    first, second = two_vocabularies
    shared = SharedLookups.of(first, second)
    assert shared is not None
    texts = sample_texts + ODD
    tokens = PackedWords([t.split() + list(t) for t in texts])
    coefs = [np.random.default_rng(k).normal(size=(3, f.size)).astype(np.float32)
             for k, f in enumerate((first, second))]
    alone = [f.linear(texts, tokens, c) for f, c in zip((first, second), coefs, strict=True)]
    with shared.primed(texts, tokens):
        together = [f.linear(texts, tokens, c) for f, c in zip((first, second), coefs, strict=True)]
        other = first.linear(texts[:5], tokens[:5], coefs[0])   # other texts: looked up as before
    assert all(np.array_equal(a, b) for a, b in zip(alone, together, strict=True))   # bit for bit
    assert np.array_equal(other, alone[0][:5])
    assert first._primed.char is None and second._primed.word is None   # nothing left primed
    # the shipped baseline and topic model share theirs; feature sets that cannot share do not
    analyzer = Analyzer.load("baseline")
    assert analyzer.shared is not None and analyzer.shared.second is analyzer.topic_model.features
    assert SharedLookups.of(first, first) is None


def _worker_pid(analyzer: Analyzer, item: int) -> tuple[int, int]:
    return item, os.getpid()


def test_the_pool_runs_in_workers_and_keeps_the_order() -> None:
    analyzer = Analyzer.load("baseline")
    with AnalyzerPool(analyzer, 2) as pool:
        assert pool.workers == 2
        out = list(pool.imap(_worker_pid, range(12)))
    assert [i for i, _ in out] == list(range(12))
    assert os.getpid() not in {pid for _, pid in out}
    with AnalyzerPool(analyzer, 1) as pool:
        assert {pid for _, pid in pool.imap(_worker_pid, range(3))} == {os.getpid()}


def test_workers_come_from_cxloop_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXLOOP_WORKERS", "3")
    assert worker_count() == 3
    monkeypatch.delenv("CXLOOP_WORKERS")
    assert worker_count() >= 1
    for bad in ("0", "two", "-1", "1.5"):
        monkeypatch.setenv("CXLOOP_WORKERS", bad)
        with pytest.raises(ValueError, match="CXLOOP_WORKERS"):
            worker_count()


def test_parallel_enrich_stores_exactly_the_serial_rows(tmp_path: Path, home: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    serial, parallel = tmp_path / "serial.duckdb", tmp_path / "parallel.duckdb"
    ingest_sample(serial)
    shutil.copy(serial, parallel)
    for db in (serial, parallel):
        sync_topics(Warehouse(db), Settings.resolve(home, db))
    one = enrich_pending.fn(str(serial), str(home), "baseline", "serial", workers=1)
    # small chunks and batches: both workers busy, several write transactions, order kept across them
    two = enrich_pending.fn(str(parallel), str(home), "baseline", "parallel", workers=2, chunk_rows=100,
                            batch_rows=250)
    assert one == two and one["scored"] > 800
    rows = nlp_rows(serial)
    assert len(rows) == one["scored"] and rows == nlp_rows(parallel)
    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded with nothing to score")

    monkeypatch.setattr(Analyzer, "load", no_model)   # nothing new: the rows are read, no model is loaded
    again = enrich_pending.fn(str(parallel), str(home), "baseline", "again", workers=2, chunk_rows=100)
    assert again == {"scored": 0, "model_version": one["model_version"]}


def test_enrich_scores_with_the_model_preloaded_while_ingest_stored(tmp_path: Path, home: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # the main job loads the model on a thread while ingest's last transaction runs: enrich waits for
    # it, loads none itself, and stores exactly what a run that loaded it itself stores
    import pipelines.enrich as enrich

    plain, pre = tmp_path / "plain.duckdb", tmp_path / "pre.duckdb"
    ingest_sample(plain)
    sync_topics(Warehouse(plain), Settings.resolve(home, plain))
    one = enrich_pending.fn(str(plain), str(home), "baseline", "plain", workers=1)
    started: list[str] = []

    def on_prepared(f: Path) -> None:
        started.append(f.name)
        enrich.preload("baseline", str(home), str(pre))

    wh = Warehouse(pre)
    for f in iter_files([SAMPLE]):
        ingest_file(wh, f, source=None, columns=ColumnMap(), channel=None, run_id="ingest", salt=b"salt",
                    on_prepared=lambda f=f: on_prepared(f))
    assert len(started) == 6 and enrich._PRELOAD is not None   # one preload, however many calls
    enrich._PRELOAD.thread.join()
    sync_topics(Warehouse(pre), Settings.resolve(home, pre))

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("enrich loaded a model although one was preloaded")

    monkeypatch.setattr(Analyzer, "load", no_model)
    two = enrich_pending.fn(str(pre), str(home), "baseline", "pre", workers=2, chunk_rows=200)
    assert one == two and one["scored"] > 800 and enrich._PRELOAD is None
    assert nlp_rows(plain) == nlp_rows(pre)


def test_a_preload_enrich_cannot_use_is_dropped(tmp_path: Path, home: Path) -> None:
    # a preload for another warehouse (or model) is waited for and dropped: enrich loads its own, and
    # no loading thread is left when it forks its workers or returns
    import pipelines.enrich as enrich

    db = tmp_path / "cx.duckdb"
    ingest_sample(db)
    sync_topics(Warehouse(db), Settings.resolve(home, db))
    enrich.preload("baseline", str(home), str(tmp_path / "other.duckdb"))
    thread = enrich._PRELOAD.thread
    out = enrich_pending.fn(str(db), str(home), "baseline", "r", workers=2, chunk_rows=200)
    assert out["scored"] > 800 and enrich._PRELOAD is None and not thread.is_alive()
    enrich.preload("baseline", str(home), str(db))   # nothing left to score: dropped all the same
    thread = enrich._PRELOAD.thread
    assert enrich_pending.fn(str(db), str(home), "baseline", "again")["scored"] == 0
    assert enrich._PRELOAD is None and not thread.is_alive()


_WORD = st.one_of(st.sampled_from(["快递", "a", "😀", "é", "<PHONE>", "12315", "\t", "\u3000"]),
                  st.text(min_size=1, max_size=4).filter(lambda w: WORD_SEP not in w))
_WORDS = st.lists(st.lists(_WORD, max_size=6), max_size=8)


@given(_WORDS)
def test_stored_words_give_back_the_words(docs: list[list[str]]) -> None:
    # feedback_nlp.tokens holds each text's words space-separated: split, they are the words again
    assert [split_words(s) for s in join_words(docs)] == docs


@given(_WORDS, st.booleans())
def test_the_compiled_stored_words_are_join_words_in_utf8(docs: list[list[str]], packed: bool) -> None:
    # enrich builds feedback_nlp.tokens from these two buffers: the same strings as join_words gives
    at, data = join_words_utf8(PackedWords(docs) if packed else docs)
    joined = [s.encode("utf-8") for s in join_words(docs)]
    assert at.tolist() == [0, *itertools.accumulate(map(len, joined))]
    assert data.tobytes() == b"".join(joined)


def test_the_collector_restarts_after_a_batch_is_arrow(sample_texts: list[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # enrich_batch keeps the cyclic collector paused until the analysis's lists are Arrow columns and
    # gone, so its first pass has not every one of them to walk: few young objects are left when it
    # restarts (it was over 10 per text when it restarted after the analysis)
    import gc

    from pipelines.enrich import NLP_SCHEMA, enrich_batch

    analyzer = Analyzer.load("baseline")
    enrich_batch(analyzer, ["0"], sample_texts[:1], "r")   # what a first batch loads (kernels, tables)
    young: list[int] = []
    enable = gc.enable

    def restart() -> None:
        young.append(len(gc.get_objects(generation=0)))
        enable()

    monkeypatch.setattr(gc, "enable", restart)
    gc.collect()
    table = enrich_batch(analyzer, [str(i) for i in range(300)], sample_texts[:300], "r")
    assert table.schema == NLP_SCHEMA and table.num_rows == 300
    assert len(young) == 1 and young[0] < 300 and gc.isenabled()


@pytest.mark.parametrize("bad", [["快递", ""], ["快 递"], [""], ["a", " "]])
def test_a_word_that_would_not_come_back_is_refused(bad: list[str]) -> None:
    with pytest.raises(ValueError, match="empty or holds a space"):
        join_words([["好"], bad])
    with pytest.raises(ValueError, match="empty or holds a space"):
        join_words_utf8([["好"], bad])


def test_a_lone_surrogate_in_a_word_is_refused_as_arrow_refuses_it() -> None:
    with pytest.raises(UnicodeEncodeError):
        join_words_utf8([["好"], ["a\ud800"]])


def test_the_clis_warm_up_loads_the_kernels_a_model_then_uses() -> None:
    # pipelines.cli warms the kernels while Prefect's API starts: with the argument types a fitted
    # model scores with, so that scoring afterwards loads no further machine code
    import subprocess
    import sys

    code = ("from pipelines.cli import warm_up_flows; warm_up_flows(); "
            "from models import tfidf_kernel as k; "
            "from nlp import clause_words as cw, int_table as t, keyword_rank as r, word_column as c, word_scan as w; "
            "kernels = (k._char_ids, k._word_ids, k._scores, t.build_table, t.word_keys, k._add_second, r.top_words, "
            "r.known_weights, w._scan, c._join_utf8, cw._spans, cw._copied); "
            "before = [len(f.signatures) for f in kernels]; "
            "from models.predict import Analyzer; from pipelines.enrich import enrich_batch; "
            "enrich_batch(Analyzer.load('baseline'), ['1', '2'], ['快递很快，但是客服态度太差了', '好评'], 'r'); "
            "print(before, [len(f.signatures) for f in kernels])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    before, after = r.stdout.strip().splitlines()[-1].split("] [")
    assert "0" not in before.strip("[").split(", ") and before.strip("[") == after.strip("]"), r.stdout


def test_char_docs_of_a_batch_are_each_texts_own() -> None:
    """The char analyzer's input made for a joined batch equals it made text by text, with the
    characters whose lower case depends on their neighbours (final sigma, case-ignorables)."""
    import random
    import re

    from models.features import char_docs

    rng = random.Random(3)
    alphabet = list("ΣσςAaİIıΑΒ  \t\n\u3000快递好ǅǈ") + ["\u0345", "\u00ad", "'"]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(20000)]
    texts[5] = "a\x00b"   # the separator itself: text by text
    ref = [re.sub(r"\s\s+", " ", t.lower()) for t in texts]
    assert char_docs(texts) == ref
    assert [d for i in range(0, len(texts), 7) for d in char_docs(texts[i:i + 7])] == ref
    assert char_docs([]) == [] and char_docs(("ΑΣ",)) == ["ας"]


def test_chunk_bounds_cover_the_rows_in_order_large_first_small_last() -> None:
    from pipelines.enrich import CHUNK_ROWS, MIN_CHUNK_ROWS, chunk_bounds

    for rows, workers in ((100_000, 2), (1_000_000, 4), (12_345, 2), (1_500, 2), (999, 8), (0, 2)):
        bounds = chunk_bounds(rows, workers)
        assert [a for a, _ in bounds] == [sum(k for _, k in bounds[:i]) for i in range(len(bounds))]
        assert sum(k for _, k in bounds) == rows
        sizes = [k for _, k in bounds]
        assert all(MIN_CHUNK_ROWS <= k <= CHUNK_ROWS for k in sizes[:-1]) and sizes == sorted(sizes, reverse=True)
    assert chunk_bounds(100_000, 2)[0][1] == CHUNK_ROWS and chunk_bounds(100_000, 2)[-2][1] == MIN_CHUNK_ROWS
    assert chunk_bounds(250, 2, chunk_rows=100) == [(0, 100), (100, 100), (200, 50)]
