"""Emerging topics: cluster the complaints no taxonomy topic covers and describe each cluster.

Pure (no warehouse, no Prefect): ids, texts and jieba tokens in, candidate topics out.

1. **Features.** Content words (``nlp.segment.content_words``: no stopwords, placeholders or
   one-character tokens), minus :data:`NOISE_WORDS` and :data:`NOISE_PATTERN` (complaint and
   call-note words that name no theme: 投诉, 安抚, 已登记, 王先生…), plus the character bigrams of
   every word (so 电梯门 meets 电梯, 积分清零 meets 积分); TF-IDF with sublinear counts, at most
   ``max_features`` features, rows L2-normalised.
2. **Reduction.** LSA: a randomized truncated SVD (fixed seed) to at most 100 dimensions, rows
   normalised again, so that a Euclidean k-means is a cosine one and 100,000 texts stay cheap.
3. **k.** k-means (k-means++, fixed seed) for up to 8 values of k spaced geometrically between 2
   and ``min(max_clusters, n / min_size)``, on a fixed sample of at most ``silhouette_sample``
   texts; the k with the best silhouette wins and its centroids start one k-means over all texts.
4. **Merge and clean up.** The silhouette favours fine clusters, so one theme told in different
   words may be split: clusters whose TF-IDF centroids have a cosine of at least
   ``merge_similarity`` are merged (average linkage). Members whose cosine to their centroid is
   below ``min_similarity`` are dropped (noise, not part of any theme); a cluster is kept when it
   still has ``min_size`` members, a mean cosine to its centroid (``coherence``) of at least
   ``min_coherence``, two keywords or more, and at least ``min_support`` of its members saying one
   of its three top keywords.
5. **Description.** Keywords by class-based TF-IDF (c-TF-IDF, as in BERTopic): for word t and
   cluster c, ``tf(t, c) × log(1 + A / f(t))`` with tf the L1-normalised count of t in c, A the
   average number of words per class and f(t) the count of t over all classes (the unclustered
   texts form one more class, so words said everywhere rank low); a keyword must be said by two
   members or more. Quotes: the members closest to the centroid, skipping texts too similar to a
   quote already taken. ``match_keywords``: the few top keywords that find the members by
   substring, as the taxonomy matches, without finding many other texts. The candidate id hashes
   the sorted top five keywords.

Reproducible: the input is sorted by id first, so the same rows in any order give the same
clusters, keywords, quotes and ids.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from nlp import default_segmenter
from nlp.segment import content_words

# scikit-learn and SciPy's clustering are imported by the functions that cluster: every flow run imports
# this module, and they cost about a second of its start that a run with nothing new does not need

# Words of complaining and of agents' call notes: frequent in every kind of complaint, they name no theme.
_NOISE_WORDS = """
投诉 差评 垃圾 失望 太差 很差 体验 问题 不满 无语 服了 离谱 搞笑 心累 生气 愤怒 恶心 坑人 坑爹 上当
希望 建议 请问 您好 你好 谢谢 在线 在吗 麻烦 帮忙 帮我 处理 解决 尽快 马上 赶紧 到底 给个 说法
怎么办 为什么 这种 这次 上次 一次 两次 几次 多次 好几次 一天 两天 三天 几天 一周 一个月
安抚 升级 致歉 道歉 提交 工单 承诺 小时 回复 登记 记录 跟进 二线 专席 解答 告知 咨询 询问 来电 客户
先生 女士 情绪 激动 要求 给出 说明 诉求 异议 表示 称其 核实 反馈 转交 相关 部门 办理 渠道 指引 短信
再也 不会 不想 不敢 以后 下次 还要 还是 一样 根本 完全 简直 实在 居然 竟然 结果 东西 事情 情况
提个 小建议 无异议 处理结果 主要 出来 起来 下去 知道 告诉 发现 出现 需要 不能 不了 不行 只能 一下 多少
"""
NOISE_WORDS = frozenset(_NOISE_WORDS.split())
# call-note verbs (已登记, 已致歉…) and people (王先生, 李女士)
NOISE_PATTERN = re.compile(r"^(?:已.+|.(?:先生|女士|小姐|师傅))$")

CANDIDATE_PREFIX = "TC-"


@dataclass(frozen=True)
class EmergingOptions:
    """Knobs of :func:`discover_topics` (the defaults suit short Chinese complaints)."""

    min_size: int = 3             # fewer members: not a theme
    max_clusters: int = 80        # the largest k tried
    n_keywords: int = 8
    n_quotes: int = 3
    merge_similarity: float = 0.3  # clusters whose TF-IDF centroids are this alike are one theme
    min_similarity: float = 0.3   # a member's cosine to its centroid, below which it is noise
    min_coherence: float = 0.45   # mean cosine of the members to their centroid
    min_support: float = 0.6      # share of members that say one of the three top keywords
    max_features: int = 20_000
    lsa_dims: int = 100
    silhouette_sample: int = 3_000
    seed: int = 0


@dataclass(frozen=True)
class TopicCandidate:
    """One emerging theme: what its members say most distinctively, and who said it."""

    candidate_id: str
    keywords: tuple[str, ...]       # c-TF-IDF, most distinctive first
    match_keywords: tuple[str, ...]  # the few keywords that find the members: a taxonomy topic's default
    quotes: tuple[str, ...]         # representative and mutually different texts
    size: int
    feedback_ids: tuple[str, ...]   # sorted
    coherence: float                # mean cosine of the members to the centroid (LSA space)


def candidate_id(keywords: Iterable[str]) -> str:
    """Stable id of a theme: a hash of its top five keywords, in any order."""
    top = sorted(list(keywords)[:5])
    return CANDIDATE_PREFIX + hashlib.sha1("\x1f".join(top).encode("utf-8")).hexdigest()[:10]


def theme_words(tokens: Iterable[str]) -> list[str]:
    """The words of one text that may name a theme (content words without :data:`NOISE_WORDS`)."""
    return [w for w in content_words(tokens) if w not in NOISE_WORDS and not NOISE_PATTERN.match(w)]


def _features(words: list[str]) -> list[str]:
    """Words plus the character bigrams of every word (``#``-prefixed): 电梯门 meets 电梯 through #电梯."""
    out = list(words)
    for w in words:
        out.extend("#" + w[i:i + 2] for i in range(len(w) - 1))
    return out


def _identity(doc: list[str]) -> list[str]:
    return doc


def _lsa(x: sp.csr_matrix, dims: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import TruncatedSVD
    from sklearn.preprocessing import normalize

    d = min(dims, x.shape[1] - 1, x.shape[0] - 1)
    if d < 2:
        return normalize(x.toarray().astype(np.float64))
    z = TruncatedSVD(n_components=d, algorithm="randomized", n_iter=5, random_state=seed).fit_transform(x)
    z = z.astype(np.float64)  # float32 sends k-means++ through sklearn's slow upcasting path
    return normalize(z, copy=False)  # in place: at 150,000 texts a copy is 120 MB more at the peak


def _choose_labels(z: np.ndarray, opts: EmergingOptions) -> np.ndarray:
    """k-means labels for the k (of a geometric range) with the best silhouette. The k are compared
    on a fixed sample of at most ``silhouette_sample`` texts; the winner's centroids then start one
    k-means over all the texts."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    n = z.shape[0]
    k_max = min(opts.max_clusters, n // max(opts.min_size, 1), n - 1)
    if k_max < 2:
        return np.zeros(n, dtype=np.int64)
    ks = sorted({int(round(k)) for k in np.geomspace(2, k_max, num=min(8, k_max - 1))})
    if n > opts.silhouette_sample:
        sample = np.sort(np.random.default_rng(opts.seed).choice(n, size=opts.silhouette_sample, replace=False))
    else:
        sample = np.arange(n)
    zs = z[sample]
    best: tuple[float, KMeans] | None = None
    for k in ks:
        if k >= len(sample):
            break
        km = KMeans(n_clusters=k, random_state=opts.seed, n_init=2, max_iter=100).fit(zs)
        if len(np.unique(km.labels_)) < 2:
            continue
        score = float(silhouette_score(zs, km.labels_))
        if best is None or score > best[0] + 1e-9:
            best = (score, km)
    if best is None:
        return np.zeros(n, dtype=np.int64)
    km = best[1]
    if len(sample) == n:
        return km.labels_.astype(np.int64)
    # copy_x=False: k-means centres the data in place and restores it, instead of a copy of all of it
    return KMeans(n_clusters=km.n_clusters, init=km.cluster_centers_, n_init=1, max_iter=50,
                  random_state=opts.seed, copy_x=False).fit_predict(z).astype(np.int64)


def _merge_similar(x: sp.csr_matrix, labels: np.ndarray, min_similarity: float) -> np.ndarray:
    """Merge k-means clusters whose TF-IDF centroids are alike (average linkage on cosine): the
    silhouette favours fine clusters, and one theme told in different words ends up split."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from sklearn.preprocessing import normalize

    labels = np.unique(labels, return_inverse=True)[1].astype(np.int64)  # no empty cluster
    k = int(labels.max()) + 1
    if k < 2:
        return labels
    member = sp.csr_matrix((np.ones(len(labels)), (labels, np.arange(len(labels)))), shape=(k, x.shape[0]))
    centroids = normalize(member @ x).toarray()
    if not np.all(centroids.any(axis=1)):
        return labels
    groups = fcluster(linkage(centroids, method="average", metric="cosine"), t=1 - min_similarity,
                      criterion="distance")
    # renumber in order of first appearance so that labels do not depend on scipy's numbering
    first: dict[int, int] = {}
    for g in groups[labels]:
        first.setdefault(int(g), len(first))
    return np.array([first[int(g)] for g in groups[labels]], dtype=np.int64)


def _ctfidf(counts: sp.csr_matrix, classes: np.ndarray, n_classes: int) -> np.ndarray:
    """c-TF-IDF weights (classes × words) of a document-term count matrix and each row's class."""
    member = sp.csr_matrix((np.ones(len(classes)), (classes, np.arange(len(classes)))),
                           shape=(n_classes, counts.shape[0]))
    t = np.asarray((member @ counts).todense(), dtype=np.float64)
    f = t.sum(axis=0)
    avg = t.sum() / max(n_classes, 1)
    idf = np.log1p(avg / np.maximum(f, 1e-12))
    tf = t / np.maximum(t.sum(axis=1, keepdims=True), 1e-12)
    return tf * idf


def _quotes(members: np.ndarray, sims: np.ndarray, z: np.ndarray, texts: list[str], k: int) -> list[str]:
    """Up to ``k`` texts closest to the centroid, none a near-copy of another."""
    order = members[np.lexsort((members, -sims))]
    picked: list[int] = []
    seen: set[str] = set()
    for i in order:
        key = "".join(ch for ch in texts[i] if ch.isalnum())
        if key in seen or any(float(z[i] @ z[j]) > 0.9 for j in picked):
            continue
        picked.append(int(i))
        seen.add(key)
        if len(picked) == k:
            break
    for i in order:  # too few different ones: fill with the next closest distinct texts
        if len(picked) == k:
            break
        key = "".join(ch for ch in texts[i] if ch.isalnum())
        if int(i) not in picked and key not in seen:
            picked.append(int(i))
            seen.add(key)
    return [texts[i] for i in picked]


def _threads() -> int:
    env = os.environ.get("CXLOOP_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else 1


def discover_topics(ids: Sequence[str], texts: Sequence[str], tokens: Sequence[Sequence[str]] | None = None,
                    options: EmergingOptions | None = None, **overrides: object) -> list[TopicCandidate]:
    """Cluster ``texts`` (already uncovered by the taxonomy, usually negative) into candidate topics,
    largest first. ``tokens`` are their jieba tokens, or already their :func:`theme_words` (segmented
    here when None); ``overrides`` set fields of :class:`EmergingOptions` (e.g. ``min_size=5``).

    Runs on one thread unless ``CXLOOP_THREADS`` says more: on a busy machine, OpenMP and BLAS
    threads that wait for each other made k-means ten times slower than one thread (100,000 texts
    take seconds on one)."""
    opts = options or EmergingOptions()
    if overrides:
        opts = EmergingOptions(**{**opts.__dict__, **overrides})
    if len(ids) != len(texts) or (tokens is not None and len(tokens) != len(ids)):
        raise ValueError("ids, texts and tokens must have the same length")
    if tokens is None:
        tokens = default_segmenter().cut_many(texts)
    with threadpool_limits(limits=_threads()):
        return _discover(ids, texts, tokens, opts)


def _discover(ids: Sequence[str], texts: Sequence[str], tokens: Sequence[Sequence[str]],
              opts: EmergingOptions) -> list[TopicCandidate]:
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
    from sklearn.preprocessing import normalize

    rows: dict[str, tuple[str, list[str]]] = {}
    for i in sorted(range(len(ids)), key=lambda j: (str(ids[j]), str(texts[j]))):
        rows.setdefault(str(ids[i]), (str(texts[i]), theme_words(list(tokens[i]))))
    keep = [fid for fid, (_, w) in rows.items() if w]
    if len(keep) < opts.min_size:
        return []
    id_arr = np.array(keep, dtype=object)
    text_list = [rows[f][0] for f in keep]
    words = [rows[f][1] for f in keep]

    min_df = 2 if len(keep) >= 10 else 1
    try:
        x = TfidfVectorizer(analyzer=_identity, sublinear_tf=True, min_df=min_df, max_df=0.95,
                            max_features=opts.max_features, dtype=np.float32).fit_transform(
            _features(w) for w in words)  # a generator: the features of 100,000s of texts are never all held
    except ValueError:  # no feature left (every word said once)
        return []
    has = np.asarray(x.getnnz(axis=1) > 0)
    valid = np.flatnonzero(has)
    if len(valid) < opts.min_size:
        return []
    z = _lsa(x[valid], opts.lsa_dims, opts.seed)
    labels_valid = _merge_similar(x[valid], _choose_labels(z, opts), opts.merge_similarity)

    # members close enough to their centroid
    n_lab = int(labels_valid.max()) + 1
    clusters: list[tuple[np.ndarray, np.ndarray]] = []  # (indices into valid, cosines)
    for c in range(n_lab):
        m = np.flatnonzero(labels_valid == c)
        if len(m) < opts.min_size:
            continue
        centroid = normalize(z[m].mean(axis=0, keepdims=True))[0]
        sims = z[m] @ centroid
        core = sims >= opts.min_similarity
        m, sims = m[core], sims[core]
        if len(m) >= opts.min_size:
            centroid = normalize(z[m].mean(axis=0, keepdims=True))[0]
            clusters.append((m, z[m] @ centroid))
    if not clusters:
        return []
    clusters.sort(key=lambda c: (-len(c[0]), int(c[0].min())))

    # c-TF-IDF over the clusters and one class of everything else
    cv = CountVectorizer(analyzer=_identity, max_features=max(opts.max_features * 2, 1))
    counts = cv.fit_transform(words).tocsr()
    vocab = cv.get_feature_names_out()
    classes = np.full(len(keep), len(clusters), dtype=np.int64)
    for c, (m, _) in enumerate(clusters):
        classes[valid[m]] = c
    weights = _ctfidf(counts, classes, len(clusters) + 1)
    present = (counts > 0).astype(np.int64).tocsr()

    valid_texts = [text_list[v] for v in valid]
    everything = "\x00".join(t.lower() for t in text_list)
    out: dict[str, TopicCandidate] = {}
    for c, (m, sims) in enumerate(clusters):
        docs = valid[m]
        sub = present[docs]
        df = np.asarray(sub.sum(axis=0)).ravel()
        w = np.where(df >= max(2, math.ceil(0.1 * len(docs))), weights[c], 0.0)
        order = np.lexsort((vocab, -w))
        top_idx = [int(j) for j in order[:opts.n_keywords] if w[j] > 0]
        if len(top_idx) < 2:  # one shared word is not a theme
            continue
        support = float((sub[:, top_idx[:3]].sum(axis=1) > 0).mean())
        coherence = float(sims.mean())
        if coherence < opts.min_coherence or support < opts.min_support:
            continue
        top = [str(vocab[j]) for j in top_idx]
        cid = candidate_id(top)
        if cid in out:  # the same top keywords twice: keep the larger
            continue
        member_texts = [text_list[d].lower() for d in docs]
        out[cid] = TopicCandidate(cid, tuple(top), _match_keywords(member_texts, top, everything),
                                  tuple(_quotes(m, sims, z, valid_texts, opts.n_quotes)), len(docs),
                                  tuple(sorted(str(f) for f in id_arr[docs])), round(coherence, 4))
    return sorted(out.values(), key=lambda t: (-t.size, t.candidate_id))


def _match_keywords(members: list[str], top: list[str], everything: str, max_words: int = 3) -> tuple[str, ...]:
    """Greedy cover, with the taxonomy's own rule (a keyword matches as a substring of the text): in
    c-TF-IDF order, a keyword joins when at least half of its occurrences in all the texts are in the
    members (it would not drag other complaints in) and it finds members the chosen ones miss; stop at
    90 % of the members or ``max_words``. At least the top keyword."""
    n = len(members)
    covered = np.zeros(n, dtype=bool)
    chosen: list[str] = []
    for kw in (w.lower() for w in top):
        inside = sum(t.count(kw) for t in members)
        if inside < 0.5 * everything.count(kw):
            continue
        has = np.array([kw in t for t in members])
        if (has & ~covered).sum() < max(1, math.ceil(0.1 * n)):
            continue
        chosen.append(kw)
        covered |= has
        if covered.mean() >= 0.9 or len(chosen) == max_words:
            break
    return tuple(chosen or [top[0].lower()])
