"""Word segmentation with jieba and keywords per text.

One ``Segmenter`` holds its own ``jieba.Tokenizer`` with the shipped CX user dictionary loaded
before first use (``load_userdict`` after ``enable_parallel`` is silently ignored, so this module
never uses jieba's global parallel mode; callers that want processes create one Segmenter per
worker). ``default_segmenter()`` returns a process-wide instance, initialised once.

jieba cuts a text block by block: it splits the text into runs of 汉字/letters/digits and the
characters between them, and cuts each run on its own. A ``Segmenter`` therefore remembers the
words of each run it has cut (``cache_size`` runs, forgotten all at once when full): the words of
a text are the cached words of its runs, exactly what jieba returns for the whole text, and a run
met again (the clauses of a text that was just cut, "很好" in thousands of reviews) costs a dict
look-up instead of a DAG and an HMM pass.

Engines (``CXLOOP_SEGMENTER``): ``rjieba`` (the default), jieba's Rust port, 10–15 times faster, with
jieba's main dictionary and the CX user dictionary added word by word; or ``jieba`` itself, the
reference. rjieba's output differs from jieba's on about 1.4 % of texts (word-boundary F1 0.9995,
``benchmarks/pipeline_speed.py`` measures it) and the sentiment model scores the same on either's
words, so the faster one is the default; rows it segments carry ``+seg-rjieba`` in their analysis
version (``models.predict.analysis_version``), so switching engines re-scores them.
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import math
import os
import re
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache
from importlib import resources
from itertools import filterfalse
from pathlib import Path
from typing import TYPE_CHECKING

import jieba
import numpy as np

from nlp.codepoints import packed_words

if TYPE_CHECKING:   # numba is imported with it, when keywords are first ranked
    from nlp.keyword_rank import WeightTable

_RESOURCES = resources.files("nlp") / "resources"
_TOKEN_OK_RE = re.compile(r"[\u4e00-\u9fffA-Za-z]")
_PLACEHOLDER_RE = re.compile(r"<(?:URL|PHONE|ID|CARD|EMAIL)>")
_BLOCK_RE = jieba.re_han_default   # the runs jieba cuts one at a time (its own split of a text)
_SURROGATE_RE = re.compile("([\ud800-\udfff])")   # a lone surrogate: no UTF-8 for rjieba (normalised text has none)
CACHE_SIZE = 100_000               # cached runs per Segmenter (a few tens of MB at most)

ENGINES = ("jieba", "rjieba")
DEFAULT_ENGINE = "rjieba"
_SEP = "\x00"   # joins texts cut in one call (normalised text never holds control characters)

jieba.setLogLevel(60)  # jieba prints "Building prefix dict…" on stderr otherwise


class SegmenterError(ValueError):
    """A segmentation engine that is unknown or not installed."""


def segmenter_engine() -> str:
    """The engine ``CXLOOP_SEGMENTER`` names (default ``rjieba``); checked to be usable."""
    name = os.environ.get("CXLOOP_SEGMENTER", "").strip().lower() or DEFAULT_ENGINE
    if name not in ENGINES:
        raise SegmenterError(f"CXLOOP_SEGMENTER={name!r} is not a segmentation engine: use one of "
                             f"{', '.join(ENGINES)}")
    if name == "rjieba":
        try:
            import rjieba  # noqa: F401
        except ImportError:
            raise SegmenterError("the rjieba segmentation engine is not installed: reinstall cxloop "
                                 "(pip install -e .), or set CXLOOP_SEGMENTER=jieba") from None
    return name


def _dict_entries(path: str) -> Iterable[tuple[str, int | None, str | None]]:
    """(word, frequency, tag) of each line of a jieba user dictionary ("word [freq] [tag]")."""
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        parts = line.strip().split()
        if not parts:
            continue
        freq = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        tag = parts[-1] if len(parts) > 1 and not parts[-1].isdigit() else None
        yield parts[0], freq, tag


def _resource_path(name: str) -> str:
    with resources.as_file(_RESOURCES / name) as p:
        return str(p)


@lru_cache(maxsize=1)
def stopwords() -> frozenset[str]:
    """The shipped stopword list (one word per line)."""
    text = (_RESOURCES / "stopwords.txt").read_text(encoding="utf-8")
    return frozenset(w.strip() for w in text.splitlines() if w.strip())


def _cache_dir() -> str:
    """Where jieba's prefix dictionary and the IDF table are cached (``CXLOOP_JIEBA_CACHE``)."""
    return os.environ.get("CXLOOP_JIEBA_CACHE", tempfile.gettempdir())


@lru_cache(maxsize=1)
def _idf() -> tuple[dict[str, float], float]:
    """jieba's bundled IDF table; unseen words get the median IDF. Parsed once per file and Python
    version, then read from a marshal file in :func:`_cache_dir` (0.09 instead of 0.24 s, which every
    ``enrich`` run paid before it forked its workers); a cache that cannot be read is parsed again."""
    path = Path(jieba.__file__).parent / "analyse" / "idf.txt"
    stat = path.stat()
    key = hashlib.sha1(f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{sys.version_info[:2]}".encode()).hexdigest()[:16]
    cached = Path(_cache_dir()) / f"cxloop-jieba-idf-{key}.marshal"
    try:
        table, median = marshal.loads(cached.read_bytes())
        if isinstance(table, dict) and isinstance(median, float):
            return table, median
    except (OSError, EOFError, ValueError, TypeError):
        pass
    table, median = _parse_idf(path.read_text(encoding="utf-8"))
    with contextlib.suppress(OSError):   # a read-only cache folder: parsed again next time
        fd, tmp = tempfile.mkstemp(dir=cached.parent, prefix=cached.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(marshal.dumps((table, median)))
            os.replace(tmp, cached)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    return table, median


def _parse_idf(text: str) -> tuple[dict[str, float], float]:
    """An IDF table ("word value" per line) and the median of its values."""
    fields = text.split()
    lines = text.count("\n") + (not text.endswith("\n"))
    if len(fields) == 2 * lines:  # "word value" on every line (jieba's file): parsed in bulk
        table = dict(zip(fields[0::2], map(float, fields[1::2]), strict=True))
    else:
        table = {}
        for line in text.splitlines():
            word, _, value = line.partition(" ")
            if value:
                table[word] = float(value)
    values = np.fromiter(table.values(), np.float64, len(table))
    return table, float(np.partition(values, len(values) // 2)[len(values) // 2]) if len(values) else 0.0


class Segmenter:
    """jieba (or rjieba) segmentation with the CX user dictionary (and optional extra dictionaries)."""

    def __init__(self, extra_dicts: Iterable[str | os.PathLike[str]] = (), hmm: bool = True,
                 cache_size: int = CACHE_SIZE, engine: str | None = None) -> None:
        self.hmm = hmm
        self.cache_size = cache_size
        self.engine = engine or segmenter_engine()
        if self.engine not in ENGINES:
            raise SegmenterError(f"unknown segmentation engine {self.engine!r}: use one of {', '.join(ENGINES)}")
        self._cache: dict[str, tuple[str, ...]] = {}
        self._tok = jieba.Tokenizer()
        self._tok.tmp_dir = _cache_dir()
        self._rust = None
        self._dicts = [_resource_path("cx_userdict.txt"), *map(str, extra_dicts)]
        self._lock = threading.Lock()
        self._ready = False

    def initialize(self) -> None:
        """Load the main and user dictionaries (idempotent, thread-safe)."""
        if self._ready:
            return
        with self._lock:
            if not self._ready:
                if self.engine == "rjieba":
                    import rjieba

                    self._rust = rjieba.Jieba()  # jieba's main dictionary, built into jieba-rs
                    for d in self._dicts:
                        for word, freq, tag in _dict_entries(d):
                            self._rust.add_word(word, freq, tag)
                else:
                    self._tok.initialize()
                    for d in self._dicts:
                        self._tok.load_userdict(d)
                self._ready = True

    def cut(self, text: str) -> list[str]:
        """Words of ``text`` (whitespace dropped, placeholders such as ``<PHONE>`` kept whole)."""
        self.initialize()
        if "<" not in text:
            return self._words(text)
        out: list[str] = []
        pos = 0
        for m in _PLACEHOLDER_RE.finditer(text):
            out.extend(self._words(text[pos:m.start()]))
            out.append(m.group(0))
            pos = m.end()
        out.extend(self._words(text[pos:]))
        return out

    def _words(self, text: str) -> list[str]:
        if not text:
            return []
        if self._rust is not None:  # a whole text costs less than a Python split into runs
            # filterfalse keeps exactly the words ``not w.isspace()`` keeps, without a Python frame per word
            try:
                return list(filterfalse(str.isspace, self._rust.cut(text, self.hmm)))
            except UnicodeEncodeError:   # each lone surrogate a word of its own, as jieba cuts it
                parts = _SURROGATE_RE.split(text)
                return [w for i, part in enumerate(parts) for w in (self._words(part) if i % 2 == 0 else [part])]
        out: list[str] = []
        cache = self._cache
        for block in _BLOCK_RE.split(text):
            if not block:
                continue
            words = cache.get(block)
            if words is None:
                words = tuple(w for w in self._tok.lcut(block, HMM=self.hmm) if not w.isspace())
                if len(cache) >= self.cache_size:
                    cache.clear()
                cache[block] = words
            out.extend(words)
        return out

    def cut_many(self, texts: Iterable[str]) -> list[list[str]]:
        """:meth:`cut` of each text. The texts are cut as one string, joined by :data:`_SEP`: jieba
        cuts run by run and the separator is a run of its own, so each text's words are the words
        between two separators (one engine call instead of one per text; tests compare the two)."""
        texts = texts if isinstance(texts, list) else list(texts)
        if len(texts) < 2:
            return [self.cut(t) for t in texts]
        joined = _SEP.join(texts)
        if joined.count(_SEP) != len(texts) - 1:   # a text holds the separator itself
            return [self.cut(t) for t in texts]
        words = self.cut(joined)
        out: list[list[str]] = []
        start = 0
        index = words.index
        try:
            for _ in range(len(texts) - 1):
                end = index(_SEP, start)
                out.append(words[start:end])
                start = end + 1
        except ValueError:   # never seen: an engine that glued the separator to a neighbour
            return [self.cut(t) for t in texts]
        out.append(words[start:])
        return out


WORD_SEP = " "   # between the words of a text as stored (feedback_nlp.tokens)


def join_words(docs: Sequence[Sequence[str]]) -> list[str]:
    """Each text's words as one string, separated by :data:`WORD_SEP`: how ``feedback_nlp.tokens``
    stores them (``string_split(tokens, ' ')`` in SQL, :func:`split_words` here, give the words back).
    A :class:`Segmenter` never returns an empty word or one holding a space (jieba and rjieba cut
    runs without whitespace, and :meth:`Segmenter.cut` drops the whitespace between them), so
    nothing is lost; such a word anyway is a ``ValueError``, not a silent change of the words."""
    out = [WORD_SEP.join(words) for words in docs]
    for words, joined in zip(docs, out, strict=True):
        if words and (joined.count(WORD_SEP) != len(words) - 1 or "" in words):
            bad = next(w for w in words if not w or WORD_SEP in w)
            raise ValueError(f"word {bad!r} is empty or holds a space: it cannot be stored space-separated")
    return out


def split_words(stored: str | None) -> list[str]:
    """The words of a text as :func:`join_words` stored them ([] for none)."""
    return stored.split(WORD_SEP) if stored else []


def default_segmenter() -> Segmenter:
    """The process-wide segmenter with the shipped dictionary, for the engine ``CXLOOP_SEGMENTER`` names."""
    return _shared_segmenter(segmenter_engine())


@lru_cache(maxsize=len(ENGINES))
def _shared_segmenter(engine: str) -> Segmenter:
    return Segmenter(engine=engine)


def content_words(tokens: Iterable[str]) -> list[str]:
    """Tokens worth counting as keywords: not stopwords, not placeholders, contain a letter or 汉字."""
    sw = stopwords()
    return [t for t in tokens if len(t) >= 2 and t not in sw and _TOKEN_OK_RE.search(t)
            and not _PLACEHOLDER_RE.fullmatch(t)]


_KEYWORD_IDF: dict[str, float] = {}   # token → its IDF, 0.0 when it is no content word (bounded memo)
_KEYWORD_IDF_SIZE = 200_000


@lru_cache(maxsize=1)
def _keyword_table() -> WeightTable:
    """The compiled copy of ``_KEYWORD_IDF`` that :func:`keywords_many` reads first (a word's weight
    never changes, so a word the memo has since dropped keeps its weight in the copy)."""
    from nlp.keyword_rank import WeightTable

    return WeightTable()


def _keyword_idf(token: str) -> float:
    """IDF of ``token`` as a keyword, 0.0 when :func:`content_words` would drop it, remembered in
    ``_KEYWORD_IDF`` (the same few thousand words make up most feedback; :func:`keywords` reads the
    memo itself and calls this on a miss)."""
    if len(_KEYWORD_IDF) >= _KEYWORD_IDF_SIZE:
        _KEYWORD_IDF.clear()
    idf, median = _idf()
    w = _KEYWORD_IDF[token] = idf.get(token, median) if content_words((token,)) else 0.0
    return w


def keywords(tokens: Iterable[str], k: int = 5) -> list[str]:
    """Top ``k`` keywords of one tokenised text by TF × IDF (jieba's IDF table)."""
    return keywords_many([list(tokens)], k)[0]


def keywords_many(docs: Sequence[Sequence[str]], k: int = 5) -> list[list[str]]:
    """Top ``k`` keywords of each tokenised text by TF × IDF: its distinct content words ordered by
    ``(−count × idf, word)``. The words' weights come from the memo (one C-level look-up each, the
    rare new word through :func:`_keyword_idf`); counting and ranking run compiled, for the whole
    batch at once (:func:`nlp.keyword_rank.top_words`; numba is imported with it, here, so that a
    process that computes no keywords, such as a ``cxloop run`` with nothing new, does not load it)."""
    from nlp.keyword_rank import top_words

    words = packed_words(docs)
    flat = words.flat
    table, memo = _keyword_table(), _KEYWORD_IDF
    weights = table.of(words.cps, words.starts)
    for i in np.flatnonzero(np.isnan(weights)).tolist():   # words the compiled copy does not hold (yet)
        w = memo.get(flat[i])
        weights[i] = _keyword_idf(flat[i]) if w is None else w
    if len(memo) >= 2 * table.size + 1024:   # copied again as the memo doubles: ~2 copies' cost in all
        table.copy(memo)
    ptr, idx = top_words(words.cps, words.starts, words.docs, weights, np.int64(k))
    best = [flat[i] for i in idx.tolist()]
    return [best[a:b] for a, b in zip(ptr[:-1].tolist(), ptr[1:].tolist(), strict=True)]


def corpus_keywords(docs: Iterable[Iterable[str]], k: int = 8) -> list[str]:
    """Top ``k`` keywords of a group of tokenised texts: document frequency × IDF, so a word said
    by many customers outranks one said many times by one."""
    idf, median = _idf()
    df: Counter[str] = Counter()
    for tokens in docs:
        df.update(set(content_words(tokens)))
    scored = sorted(df.items(), key=lambda kv: (-math.log1p(kv[1]) * idf.get(kv[0], median), kv[0]))
    return [w for w, _ in scored[:k]]
