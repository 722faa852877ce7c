"""Emerging-topic discovery (models.emerging.discover_topics) on synthetic complaints.

    .venv/bin/python benchmarks/emerging_topics.py --rows 10000 100000

Each text is 2-3 words of one of ``--themes`` planted themes (5 words each) and 3-6 words drawn
from a shared pool of 3,000 everyday words; ``--noise`` of the texts have no theme. Tokens are
given, as in the warehouse (``feedback_nlp.tokens``), so jieba is not timed. Prints, per size,
the wall seconds, the candidates found and how many planted themes one of them recovers (its
top keyword is a theme word and at least 80 % of its members carry that theme).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from models.emerging import discover_topics

CJK = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]


def make(rows: int, themes: int, noise: float,
         seed: int = 7) -> tuple[list[str], list[str], list[list[str]], list[int]]:
    rng = np.random.default_rng(seed)

    def word() -> str:
        return "".join(rng.choice(CJK, 2))

    pool = list({word() for _ in range(3500)})[:3000]
    theme_words = [[word() for _ in range(5)] for _ in range(themes)]
    ids, texts, tokens, truth = [], [], [], []
    for i in range(rows):
        t = -1 if rng.random() < noise else int(rng.integers(themes))
        toks = list(rng.choice(pool, int(rng.integers(3, 7))))
        if t >= 0:
            toks += list(rng.choice(theme_words[t], int(rng.integers(2, 4)), replace=False))
        rng.shuffle(toks)
        ids.append(f"{i:08x}")
        texts.append("".join(toks))
        tokens.append([str(x) for x in toks])
        truth.append(t)
    return ids, texts, tokens, truth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--themes", type=int, default=20)
    ap.add_argument("--noise", type=float, default=0.3)
    args = ap.parse_args()
    for n in args.rows:
        ids, texts, tokens, truth = make(n, args.themes, args.noise)
        by_id = dict(zip(ids, truth, strict=True))
        t0 = time.perf_counter()
        found = discover_topics(ids, texts, tokens)
        secs = time.perf_counter() - t0
        recovered = set()
        for c in found:
            labels = np.array([by_id[f] for f in c.feedback_ids])
            top = np.bincount(labels[labels >= 0], minlength=args.themes)
            if top.max() >= 0.8 * len(labels):
                recovered.add(int(top.argmax()))
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{n:>7} texts: {secs:6.1f} s, {len(found)} candidates, {len(recovered)}/{args.themes} themes "
              f"recovered, largest {found[0].size if found else 0}, peak RSS {rss:.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
