"""Emerging topics: suggest new taxonomy topics from the complaints no topic covers, and let a CX lead
accept (into their taxonomy file) or dismiss each suggestion.

``suggest_topics`` reads the negative feedback (``feedback_nlp.sentiment = 'neg'``) of a window
(default the 90 days up to the newest feedback) whose ``topics`` are empty and that no topic added to
the taxonomy since the last enrich matches by its keywords (an accepted topic counts at once), clusters
it with :func:`models.emerging.discover_topics`, and upserts the clusters into ``topic_candidates``
in one transaction:

* a candidate whose id exists gets its evidence refreshed (keywords, quotes, size, members, dates)
  and keeps its status, so an accepted or dismissed theme stays decided;
* a cluster with another id whose members overlap a stored candidate's (Jaccard ≥ 0.3) is that
  theme with its top keywords moved: an open candidate keeps its id (and gets the new evidence), an
  accepted or dismissed one is not suggested again;
* ``new`` candidates that this run did not find any more are removed (suggestions follow the data;
  decisions stay).

The same data gives the same candidates, so a re-run adds nothing. ``accept_candidate`` writes a
topic into the user's taxonomy file (``--taxonomy``/``CXLOOP_TAXONOMY``, else
``CXLOOP_HOME/taxonomy.yaml``, created from the shipped default the first time) and marks the
candidate ``accepted``; ``dismiss_candidate`` marks it ``dismissed``.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path

import yaml
from prefect import flow, task

from models.emerging import CANDIDATE_PREFIX, discover_topics, theme_words
from nlp import Taxonomy, TaxonomyError, load_taxonomy, split_words
from nlp.taxonomy import DEFAULT_TAXONOMY_PATH, JOURNEY_STAGES
from pipelines.backlog import actor_name
from pipelines.config import Settings
from pipelines.records import NEWEST_SQL
from pipelines.runs import input_state, logger, recorded_run, unchanged_result
from pipelines.warehouse import Warehouse, WarehouseError, cap_memory

DEFAULT_SINCE_DAYS = 90
DEFAULT_MIN_SIZE = 3
DEFAULT_STAGE = "usage"
DEFAULT_TEAM = "待分配"
STATUSES = ("new", "accepted", "dismissed")
SAME_THEME = 0.3  # Jaccard of the members above which a cluster is a stored candidate's theme
KEY_RE = re.compile(r"[a-z][a-z0-9_]*")
UNCOVERED_BATCH = 50_000
SCAN_MEMORY = "256MB"  # DuckDB's cache while the uncovered complaints are read: 1M rows of feedback cost
                       # 418 MB above the process's base with it, 661 MB with CXLOOP_DB_MEMORY=512MB alone

# in no particular order: discover_topics sorts by id itself
UNCOVERED_SQL = """
SELECT f.feedback_id, f.text, n.tokens
FROM feedback f JOIN feedback_nlp n USING (feedback_id)
WHERE n.sentiment = 'neg' AND len(n.topics) = 0 AND f.created_at >= ?
"""
# first and last customer time of each candidate's members, for all candidates in one scan of feedback
SPANS_SQL = """
SELECT m.i, min(f.created_at), max(f.created_at)
FROM (SELECT unnest($i) AS i, unnest($ids) AS feedback_id) m JOIN feedback f USING (feedback_id)
GROUP BY m.i
"""

# MERGE rather than ON CONFLICT: the same statement works where tables have no keys (DuckLake)
UPSERT_SQL = """
MERGE INTO topic_candidates AS t
USING (SELECT ?::VARCHAR AS candidate_id, ?::VARCHAR[] AS keywords, ?::VARCHAR[] AS match_keywords,
              ?::VARCHAR[] AS quotes, ?::INTEGER AS size, ?::VARCHAR[] AS feedback_ids, ?::TIMESTAMP AS first_seen,
              ?::TIMESTAMP AS last_seen, ?::DOUBLE AS coherence, ?::TIMESTAMP AS suggested_at, ?::VARCHAR AS run_id,
              ?::TIMESTAMP AS computed_at) AS c
ON t.candidate_id = c.candidate_id
WHEN MATCHED THEN UPDATE SET
    keywords = c.keywords, match_keywords = c.match_keywords, quotes = c.quotes, size = c.size,
    feedback_ids = c.feedback_ids, first_seen = c.first_seen, last_seen = c.last_seen, coherence = c.coherence,
    run_id = c.run_id, computed_at = c.computed_at
WHEN NOT MATCHED THEN INSERT (candidate_id, keywords, match_keywords, quotes, size, feedback_ids, first_seen,
                              last_seen, coherence, status, suggested_at, run_id, computed_at)
    VALUES (c.candidate_id, c.keywords, c.match_keywords, c.quotes, c.size, c.feedback_ids, c.first_seen,
            c.last_seen, c.coherence, 'new', c.suggested_at, c.run_id, c.computed_at)
"""


class CandidateError(ValueError):
    """Something a user asked of a candidate or of the taxonomy that cannot be done; one line."""


# -- suggest ----------------------------------------------------------------------------------------
def _window_start(wh: Warehouse, since_days: int | None) -> datetime | None:
    if not since_days or since_days <= 0:
        return None
    # rows whose time was missing or unreadable carry their ingest time: not the newest feedback
    newest = wh.scalar(NEWEST_SQL)
    return newest - timedelta(days=since_days) if newest else None


def suggest_topics(wh: Warehouse, settings: Settings, since_days: int | None = DEFAULT_SINCE_DAYS,
                   min_size: int = DEFAULT_MIN_SIZE, run_id: str = "manual",
                   taxonomy: Taxonomy | None = None) -> dict:
    """Cluster the window's uncovered negative feedback and upsert ``topic_candidates`` (see the
    module's docstring). ``since_days`` of 0 or None: all feedback. Returns the run's counts."""
    if min_size < 2:
        raise CandidateError(f"--min-size must be at least 2, not {min_size}")
    log = logger()
    tax = taxonomy or settings.load_taxonomy()
    state = input_state(wh, since_days=since_days, min_size=min_size, taxonomy=tax.fingerprint)
    prior = unchanged_result(wh, "suggest_topics", state)
    if prior is not None:  # the same data and taxonomy cluster into the same candidates: nothing to write
        log.info("suggest topics: no feedback, scores or topics changed since the last run; its candidates stand")
        return {**prior, "new": 0, "updated": prior["new"] + prior["updated"], "removed": 0, "unchanged": True}
    since = _window_start(wh, since_days)
    enriched_with = set(wh.query("SELECT topic FROM topics").column("topic").to_pylist())
    added = Taxonomy([t for t in tax if t.key not in enriched_with], tax.source)  # since the last enrich
    # read a batch at a time, keeping only each text's theme words (not its tokens), each distinct word
    # stored once: a million rows of feedback do not pass through Python memory at once
    ids: list[str] = []
    texts: list[str] = []
    words: list[list[str]] = []
    vocabulary: dict[str, str] = {}
    read = 0
    with wh.connect(read_only=True) as con:
        cap_memory(con, SCAN_MEMORY)
        batches = con.execute(UNCOVERED_SQL, [since or datetime(1, 1, 1)]).to_arrow_reader(UNCOVERED_BATCH)
        for batch in batches:
            cols = batch.to_pydict()
            read += batch.num_rows
            covered = added.match_many(cols["text"])
            for fid, text, tokens, topics in zip(cols["feedback_id"], cols["text"], cols["tokens"], covered,
                                                 strict=True):
                if topics:
                    continue
                ids.append(fid)
                texts.append(text)
                words.append([vocabulary.setdefault(w, w) for w in theme_words(split_words(tokens))])
    found = discover_topics(ids, texts, words, min_size=min_size)
    uncovered = len(ids)
    del ids, texts, words, vocabulary
    now = datetime.now()
    counts = {"window_from": str(since) if since else None, "uncovered": uncovered,
              "matched_since_enrich": read - uncovered, "candidates": len(found), "new": 0,
              "updated": 0, "already_decided": 0, "removed": 0, "inputs": state, "unchanged": False}
    with wh.transaction() as con:
        existing = {cid: (status, set(ids)) for cid, status, ids in con.execute(
            "SELECT candidate_id, status, feedback_ids FROM topic_candidates").fetchall()}
        kept: set[str] = set()
        spans = {i: (first, last) for i, first, last in con.execute(SPANS_SQL, {
            "i": [i for i, c in enumerate(found) for _ in c.feedback_ids],
            "ids": [f for c in found for f in c.feedback_ids]}).fetchall()}
        for i, c in enumerate(found):
            cid = c.candidate_id if c.candidate_id in existing else _same_theme(set(c.feedback_ids), existing, kept)
            if cid and existing[cid][0] != "new" and cid != c.candidate_id:
                counts["already_decided"] += 1  # a decided theme, told with other top words
                continue
            cid = cid or c.candidate_id
            if cid in kept:
                continue
            con.execute(UPSERT_SQL, [cid, list(c.keywords), list(c.match_keywords), list(c.quotes), c.size,
                                     list(c.feedback_ids), *spans[i], c.coherence, now, run_id, now])
            counts["updated" if cid in existing else "new"] += 1
            kept.add(cid)
        stale = [cid for cid, (status, _) in existing.items() if status == "new" and cid not in kept]
        for cid in stale:
            con.execute("DELETE FROM topic_candidates WHERE candidate_id = ?", [cid])
        counts["removed"] = len(stale)
    log.info("suggest topics: %(uncovered)d uncovered negative feedback → %(candidates)d candidates "
             "(%(new)d new, %(updated)d updated, %(already_decided)d like a decided one, %(removed)d no longer "
             "found)", counts)
    return counts


def _same_theme(members: set[str], existing: dict[str, tuple[str, set[str]]], taken: set[str]) -> str | None:
    """The stored candidate that shares the most members with a cluster (Jaccard ≥ SAME_THEME), if
    any: the same theme whose top keywords moved (its id stays) or one already decided."""
    best, best_j = None, SAME_THEME
    for cid in sorted(existing):
        ids = existing[cid][1]
        j = len(members & ids) / max(len(members | ids), 1)
        if cid not in taken and j >= best_j and (best is None or j > best_j):
            best, best_j = cid, j
    return best


@task(name="suggest-topics")
def suggest_topics_task(db: str, home: str, run_id: str, since_days: int | None, min_size: int) -> dict:
    """Cluster uncovered negative feedback into topic candidates."""
    settings = Settings.resolve(home, db)
    return suggest_topics(Warehouse(settings.db_path), settings, since_days, min_size, run_id)


@flow(name="suggest_topics")
def suggest_topics_flow(db: str | None = None, home: str | None = None,
                        since_days: int | None = DEFAULT_SINCE_DAYS, min_size: int = DEFAULT_MIN_SIZE) -> dict:
    """Suggest new taxonomy topics from the negative feedback no topic covers (the main job's last step)."""
    settings = Settings.resolve(home, db)
    wh = Warehouse(settings.db_path)
    with recorded_run(wh, "suggest_topics", {"since_days": since_days, "min_size": min_size}) as run:
        run.counts = suggest_topics_task(str(settings.db_path), str(settings.home), run.run_id, since_days, min_size)
    return run.counts


def run_suggestions(settings: Settings, since_days: int | None = DEFAULT_SINCE_DAYS,
                    min_size: int = DEFAULT_MIN_SIZE) -> dict:
    """``suggest_topics`` recorded in ``runs`` without a Prefect run (``cxloop taxonomy suggest``:
    interactive, so it does not start Prefect's temporary server)."""
    wh = _existing(Warehouse(settings.db_path))
    with recorded_run(wh, "suggest_topics", {"since_days": since_days, "min_size": min_size}) as run:
        run.counts = suggest_topics(wh, settings, since_days, min_size, run.run_id)
    return run.counts


def list_candidates(wh: Warehouse, status: str | None = "new") -> list[dict]:
    """Candidates, largest first (``status`` None: all)."""
    sql = "SELECT * FROM v_topic_candidates" + (" WHERE status = ?" if status else "") + \
          " ORDER BY status = 'new' DESC, size DESC, candidate_id"
    with _existing(wh).connect() as con:  # writable: an older warehouse gets migration 005 first
        return con.execute(sql, [status] if status else []).to_arrow_table().to_pylist()


# -- decide -----------------------------------------------------------------------------------------
def _normalise_id(candidate: str) -> str:
    c = candidate.strip()
    if c.upper().startswith(CANDIDATE_PREFIX):
        return CANDIDATE_PREFIX + c[len(CANDIDATE_PREFIX):].lower()
    return CANDIDATE_PREFIX + c.lower()


def _existing(wh: Warehouse) -> Warehouse:
    if not wh.exists():
        raise WarehouseError(f"warehouse {wh} does not exist yet: run `cxloop run` or `cxloop ingest`")
    return wh


def _candidate(con, candidate: str) -> dict:  # noqa: ANN001 - a DuckDB connection
    cid = _normalise_id(candidate)
    rows = con.execute("SELECT * FROM topic_candidates WHERE candidate_id = ?", [cid]).to_arrow_table().to_pylist()
    if not rows:
        raise CandidateError(f"unknown candidate {candidate!r} (see `cxloop taxonomy suggest`)")
    return rows[0]


def user_taxonomy_path(settings: Settings) -> Path:
    """The taxonomy file ``accept`` writes: ``--taxonomy``/``CXLOOP_TAXONOMY``, else ``HOME/taxonomy.yaml``."""
    return settings.taxonomy_path or settings.home_taxonomy_path


def parse_keywords(raw: str | None) -> list[str] | None:
    """``k1,k2`` (also ``，`` ``、`` ``;``) → a list without blanks or repeats; None when not given."""
    if raw is None:
        return None
    out: list[str] = []
    for k in re.split(r"[,，、;；]", raw):
        k = k.strip()
        if k and k not in out:
            out.append(k)
    return out


def accept_candidate(wh: Warehouse, settings: Settings, candidate: str, key: str, name: str | None = None,
                     stage: str | None = None, team: str | None = None, keywords: list[str] | None = None,
                     by: str | None = None) -> dict:
    """Add the candidate as topic ``key`` to the user's taxonomy file and mark it accepted. The file
    is written atomically and only after every check passed; the candidate is marked in the same
    warehouse transaction, so a failure leaves both as they were."""
    key = key.strip()
    if not KEY_RE.fullmatch(key):
        raise CandidateError(f"topic key {key!r} must be lower_snake_case (a-z, 0-9, _; starting with a letter)")
    stage = (stage or DEFAULT_STAGE).strip()
    if stage not in JOURNEY_STAGES:
        raise CandidateError(f"stage {stage!r} is not a journey stage: expected one of {', '.join(JOURNEY_STAGES)}")
    path = user_taxonomy_path(settings)
    if path.exists():
        base_text = path.read_text(encoding="utf-8")
        current = load_taxonomy(path)
    else:
        base_text = DEFAULT_TAXONOMY_PATH.read_text(encoding="utf-8")
        with resources.as_file(DEFAULT_TAXONOMY_PATH) as p:
            current = load_taxonomy(p)
    if key in current:
        raise CandidateError(f"topic {key!r} is already in {current.source}: choose another --key")
    with _existing(wh).transaction() as con:
        cand = _candidate(con, candidate)
        if cand["status"] == "accepted":
            raise CandidateError(f"candidate {cand['candidate_id']} was already accepted as topic "
                                 f"{cand['accepted_key']!r}")
        kws = keywords if keywords is not None else list(cand["match_keywords"] or cand["keywords"][:3])
        if not kws:
            raise CandidateError("--keywords is empty: give at least one keyword")
        spec = {"name": (name or "、".join(cand["keywords"][:2])).strip(), "stage": stage,
                "team": (team or DEFAULT_TEAM).strip(), "keywords": kws}
        text, kept = add_topic_text(base_text, key, spec)
        created = not path.exists()
        write_taxonomy(path, text, key)
        who = actor_name(by)
        con.execute("UPDATE topic_candidates SET status = 'accepted', accepted_key = ?, decided_by = ?, "
                    "decided_at = ? WHERE candidate_id = ?", [key, who, datetime.now(), cand["candidate_id"]])
    logger().info("candidate %s accepted as topic %s in %s by %s", cand["candidate_id"], key, path, who)
    return {"candidate_id": cand["candidate_id"], "key": key, **spec, "path": str(path), "created": created,
            "comments_kept": kept}


def dismiss_candidate(wh: Warehouse, candidate: str, by: str | None = None) -> dict:
    """Mark a candidate dismissed: it stays in ``topic_candidates`` and is not suggested again."""
    with _existing(wh).transaction() as con:
        cand = _candidate(con, candidate)
        if cand["status"] == "accepted":
            raise CandidateError(f"candidate {cand['candidate_id']} was accepted as topic {cand['accepted_key']!r}: "
                                 f"remove the topic from the taxonomy file instead")
        if cand["status"] != "dismissed":
            con.execute("UPDATE topic_candidates SET status = 'dismissed', decided_by = ?, decided_at = ? "
                        "WHERE candidate_id = ?", [actor_name(by), datetime.now(), cand["candidate_id"]])
    return {"candidate_id": cand["candidate_id"], "was": cand["status"]}


# -- the taxonomy file ------------------------------------------------------------------------------
def _scalar(value: str) -> str:
    """One YAML scalar on one line, quoted only when YAML needs it."""
    return yaml.safe_dump(value, allow_unicode=True, width=10**6).removesuffix("\n...\n").strip()


def topic_block(key: str, spec: dict, indent: str = "  ", step: str = "  ") -> str:
    """The YAML lines of one topic, as the shipped file writes them (keywords as a flow list)."""
    kws = yaml.safe_dump(list(spec["keywords"]), allow_unicode=True, default_flow_style=True, width=10**6).strip()
    return (f"{indent}{key}:\n{indent}{step}name: {_scalar(spec['name'])}\n{indent}{step}stage: {spec['stage']}\n"
            f"{indent}{step}team: {_scalar(spec['team'])}\n{indent}{step}keywords: {kws}\n")


def add_topic_text(text: str, key: str, spec: dict) -> tuple[str, bool]:
    """``text`` with topic ``key`` added at the end of its ``topics:`` block. Inserted as text, so
    comments and layout stay (second value True); when the file's shape does not allow it (a flow
    mapping, odd indentation), the whole file is re-dumped from its data and its comments are lost
    (False)."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    start = next((i for i, ln in enumerate(lines) if re.match(r"topics:\s*(#.*)?$", ln.rstrip("\n"))), None)
    if start is not None:
        last, indent, step = None, None, None
        for i in range(start + 1, len(lines)):
            ln = lines[i]
            if not ln.strip() or ln.lstrip().startswith("#"):
                continue
            if not ln[0].isspace():
                break
            lead = ln[:len(ln) - len(ln.lstrip())]
            if indent is None:
                indent = lead
            elif step is None and len(lead) > len(indent):
                step = lead[len(indent):]
            last = i
        if last is not None and indent and "\t" not in indent:
            new = lines[:last + 1] + [topic_block(key, spec, indent, step or "  ")] + lines[last + 1:]
            out = "".join(new)
            if _topics_of(out) == {**(_topics_of(text) or {}), key: spec}:
                return out, True
    raw = yaml.safe_load(text) if text.strip() else None
    if not isinstance(raw, dict) or not isinstance(raw.get("topics") or {}, dict):
        raise CandidateError("the taxonomy file has no 'topics:' mapping to add a topic to")
    raw.setdefault("topics", {})
    raw["topics"] = {**(raw["topics"] or {}), key: spec}
    return yaml.safe_dump(raw, allow_unicode=True, sort_keys=False, default_flow_style=None, width=120), False


def _topics_of(text: str) -> dict | None:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return raw.get("topics") if isinstance(raw, dict) else None


def write_taxonomy(path: Path, text: str, key: str) -> None:
    """Write ``text`` to ``path`` atomically (a temporary file, checked with ``load_taxonomy``,
    then renamed over the old one): a reader never sees half a file, a bad file never lands."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            if key not in load_taxonomy(tmp):
                raise CandidateError(f"topic {key!r} did not land in {path}")
        except TaxonomyError as e:
            raise CandidateError(f"the new taxonomy would not load ({e}); {path} is unchanged") from None
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
