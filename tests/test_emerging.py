"""Emerging topics: clustering uncovered complaints (models.emerging), candidates in the warehouse
(pipelines.emerging), accepting them into a taxonomy file, and `cxloop taxonomy` (CliRunner)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from models.emerging import _ctfidf, candidate_id, discover_topics
from nlp import default_segmenter, default_taxonomy, join_words, load_taxonomy
from pipelines.config import Settings
from pipelines.emerging import (
    CandidateError,
    accept_candidate,
    add_topic_text,
    dismiss_candidate,
    list_candidates,
    suggest_topics,
)
from pipelines.records import text_key
from pipelines.warehouse import Warehouse

# Complaints about things the shipped taxonomy has no topic for (checked below).
THEMES = {
    "points": ["我的会员积分突然清零了，攒了两年的积分全没了", "积分莫名其妙被清零，之前攒的积分一分都不剩",
               "会员积分到期清零也不提前通知，太坑了", "好不容易攒够积分想兑换，结果积分被清零了",
               "积分清零前没有任何提醒，会员权益形同虚设", "刚升级的会员等级掉了，积分也清零了",
               "积分兑换的礼品一直缺货，积分马上要清零了", "会员积分清零规则不透明，问了也说不清"],
    "lift": ["小区电梯又停运了，老人只能爬十几层楼", "电梯经常卡在半层，困在里面吓死人了",
             "电梯门关不上，上下楼特别不方便", "电梯停了一整周，物业一直没有修好", "电梯按钮失灵，按了楼层也不停",
             "电梯运行时晃得厉害，还有异响", "物业说电梯检修，结果停运三天还没恢复",
             "电梯超载报警一直响，根本上不去楼"],
    "invoice": ["发票一直开不出来，报销都耽误了", "申请电子发票提交了好多次还是开不出来",
                "下单时选了开发票，到现在也没收到发票", "发票抬头填错了想重开，没人能改",
                "开具增值税专用发票一直失败，公司没法报销", "电子发票迟迟开不出来，财务催了好几回",
                "要发票说要等月底统一开，太不合理", "发票金额和实际付款对不上，开出来的发票没法用"],
}
NOISE = ["真是太让人失望了", "这也太离谱了吧", "天气预报一点都不准", "小区绿化带被人占了种菜"]
THEME_WORD = {"points": "积分", "lift": "电梯", "invoice": "发票"}


def corpus() -> tuple[list[str], list[str], dict[str, str]]:
    """ids, texts and id → theme ('noise' for the noise)."""
    ids, texts, theme = [], [], {}
    for name, sents in [*THEMES.items(), ("noise", NOISE)]:
        for i, s in enumerate(sents):
            fid = f"{name[:2]}{i:02d}"
            ids.append(fid)
            texts.append(s)
            theme[fid] = name
    return ids, texts, theme


def test_the_themes_are_not_covered_by_the_shipped_taxonomy() -> None:
    tax = default_taxonomy()
    covered = {s: tax.match(s) for sents in [*THEMES.values(), NOISE] for s in sents if tax.match(s)}
    assert covered == {}


# -- the algorithm ----------------------------------------------------------------------------------
def test_three_themes_become_three_candidates_named_by_their_words() -> None:
    ids, texts, theme = corpus()
    found = discover_topics(ids, texts)
    assert len(found) == 3
    by_theme = {}
    for c in found:
        themes = {theme[f] for f in c.feedback_ids}
        assert len(themes) == 1, (c.keywords, themes)  # pure: no other theme, no noise
        name = themes.pop()
        by_theme[name] = c
        assert c.size == len(c.feedback_ids) >= 6  # most of the theme's 8 complaints
        assert THEME_WORD[name] in c.keywords[:2]  # c-TF-IDF names the theme
        assert c.match_keywords[0] == THEME_WORD[name]
        assert len(c.quotes) == 3 and len(set(c.quotes)) == 3
        assert set(c.quotes) <= {texts[ids.index(f)] for f in c.feedback_ids}
        assert c.candidate_id == candidate_id(c.keywords) and c.candidate_id.startswith("TC-")
        assert 0 < c.coherence <= 1
    assert set(by_theme) == set(THEMES)
    assert found == sorted(found, key=lambda c: (-c.size, c.candidate_id))


def test_same_clusters_and_ids_in_any_order() -> None:
    ids, texts, _ = corpus()
    tokens = default_segmenter().cut_many(texts)
    expected = discover_topics(ids, texts, tokens)
    rows = list(zip(ids, texts, tokens, strict=True))
    for seed in (1, 2, 3):
        random.Random(seed).shuffle(rows)
        got = discover_topics([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
        assert got == expected


def test_too_little_or_featureless_input_gives_no_candidates() -> None:
    assert discover_topics([], []) == []
    assert discover_topics(["a", "b"], THEMES["lift"][:2]) == []
    assert discover_topics(["a", "b", "c", "d"], ["!!!", "？？", "……", "的的的"]) == []
    with pytest.raises(ValueError, match="same length"):
        discover_topics(["a"], ["x", "y"])


def test_ctfidf_is_class_tf_times_log_of_average_over_frequency() -> None:
    import scipy.sparse as sp

    counts = sp.csr_matrix(np.array([[2, 0, 1], [1, 0, 1], [0, 3, 1]], dtype=float))
    w = _ctfidf(counts, np.array([0, 0, 1]), 2)
    t = np.array([[3, 0, 2], [0, 3, 1]], dtype=float)  # words per class
    avg = t.sum() / 2
    expected = t / t.sum(axis=1, keepdims=True) * np.log1p(avg / t.sum(axis=0))
    np.testing.assert_allclose(w, expected)
    assert w[0].argmax() == 0 and w[1].argmax() == 1  # each class's own word, not the shared one


# -- the warehouse ----------------------------------------------------------------------------------
NEWEST = datetime(2026, 11, 1, 12, 0)


def build_warehouse(db: Path, extra: list[tuple[str, str, str, int]] | None = None) -> Warehouse:
    """feedback + feedback_nlp rows: the themes and the noise (negative, no topics, the last weeks),
    plus ``extra`` (id, text, sentiment, days before NEWEST) and a few rows that must stay out."""
    ids, texts, _ = corpus()
    rows = [(f, t, "neg", i % 20) for i, (f, t) in enumerate(zip(ids, texts, strict=True))]
    rows += [("pos01", "积分清零后客服马上帮我恢复了，点赞", "pos", 1),          # positive
             ("pos02", "电梯很新，很喜欢", "pos", 2), ("pos03", "发票开得很快", "pos", 3),
             ("cov01", "物流太慢了，快递三天还没到", "neg", 1),                 # covered by a topic
             ("old01", "会员积分清零太坑，攒了一年全没了", "neg", 200)]         # outside 90 days
    rows += extra or []
    wh = Warehouse(db, lock_timeout=5)
    seg = default_segmenter()
    tax = default_taxonomy()
    now = datetime.now()
    with wh.transaction() as con:
        for fid, text, sentiment, days in rows:
            created = NEWEST - timedelta(days=days, hours=len(fid))
            con.execute("INSERT INTO feedback (feedback_id, source, created_at, channel, text, text_key, ingested_at, "
                        "run_id) VALUES (?, 'test', ?, 'app', ?, ?, ?, 'r0')", [fid, created, text, text_key(fid), now])
            con.execute("INSERT INTO feedback_nlp (feedback_id, tokens, keywords, sentiment, sentiment_score, p_neg, "
                        "p_neu, p_pos, topics, model_version, enriched_at, run_id) "
                        "VALUES (?, ?, [], ?, 0, 0, 0, 0, ?, 'test', ?, 'r0')",
                        [fid, join_words([seg.cut(text)])[0], sentiment, tax.match(text), now])
        for t in tax:  # as enrich's sync_topics leaves it
            con.execute("INSERT INTO topics VALUES (?, ?, ?, ?, ?)", [t.key, t.name, t.stage, t.team, list(t.keywords)])
    return wh


@pytest.fixture()
def wh(home: Path) -> Warehouse:
    return build_warehouse(home / "cx.duckdb")


def _table(wh: Warehouse) -> list[dict]:
    return wh.query("SELECT * FROM topic_candidates ORDER BY candidate_id").to_pylist()


def test_suggest_stores_candidates_once_and_reruns_add_nothing(wh: Warehouse, home: Path) -> None:
    settings = Settings.resolve(home)
    c = suggest_topics(wh, settings, run_id="r1")
    assert c["uncovered"] == 28 and c["candidates"] == 3 and c["new"] == 3  # not pos, covered or old rows
    first = _table(wh)
    assert len(first) == 3 and {r["status"] for r in first} == {"new"}
    assert not {"pos01", "cov01", "old01"} & {f for r in first for f in r["feedback_ids"]}
    for r in first:
        assert r["first_seen"] <= r["last_seen"] <= NEWEST and r["run_id"] == "r1"
    again = suggest_topics(wh, settings, run_id="r2")
    assert again["new"] == 0 and again["updated"] == 3 and again["removed"] == 0
    second = _table(wh)
    same = ("candidate_id", "keywords", "match_keywords", "quotes", "size", "feedback_ids", "first_seen", "last_seen",
            "status", "suggested_at")
    assert [{k: r[k] for k in same} for r in second] == [{k: r[k] for k in same} for r in first]
    assert {r["run_id"] for r in second} == {"r2"}
    view = wh.query("SELECT * FROM v_topic_candidates").to_pylist()
    assert len(view) == 3 and {"accepted_name", "quotes", "keywords"} <= set(view[0])
    everything = suggest_topics(wh, settings, since_days=0, run_id="r3")  # all time: the old row joins
    assert everything["uncovered"] == 29


def test_decisions_survive_reruns_and_accepted_topics_cover_their_rows(wh: Warehouse, home: Path) -> None:
    settings = Settings.resolve(home)
    suggest_topics(wh, settings)
    by_word = {next(w for w in THEME_WORD.values() if w in r["keywords"][:2]): r for r in list_candidates(wh)}
    dismiss_candidate(wh, by_word["电梯"]["candidate_id"], by="lead")
    accepted = accept_candidate(wh, settings, by_word["发票"]["candidate_id"], "invoice", name="发票开具",
                                stage="after_sales", team="财务共享中心", by="lead")
    assert accepted["keywords"] == ["发票"] and accepted["created"]
    c = suggest_topics(wh, settings)
    # the invoice rows now match the accepted topic (before any enrich): not suggested again
    assert c["uncovered"] == 28 - 8 and c["new"] == 0 and c["removed"] == 0
    rows = {r["candidate_id"]: r for r in _table(wh)}
    assert rows[by_word["电梯"]["candidate_id"]]["status"] == "dismissed"
    acc = rows[by_word["发票"]["candidate_id"]]
    assert (acc["status"], acc["accepted_key"], acc["decided_by"]) == ("accepted", "invoice", "lead")
    assert rows[by_word["积分"]["candidate_id"]]["status"] == "new"
    assert list_candidates(wh) == [r for r in list_candidates(wh, None) if r["status"] == "new"]
    dismiss_candidate(wh, by_word["电梯"]["candidate_id"])  # again: no change, no error
    with pytest.raises(CandidateError, match="accepted as topic 'invoice'"):
        dismiss_candidate(wh, by_word["发票"]["candidate_id"])


def test_a_theme_like_a_dismissed_one_is_not_suggested_again(wh: Warehouse, home: Path) -> None:
    settings = Settings.resolve(home)
    suggest_topics(wh, settings)
    lift = next(r for r in list_candidates(wh) if "电梯" in r["keywords"][:2])
    dismiss_candidate(wh, lift["candidate_id"])
    with wh.transaction() as con:  # as if the same theme had come out with other top words
        con.execute("UPDATE topic_candidates SET candidate_id = 'TC-0000000000' WHERE candidate_id = ?",
                    [lift["candidate_id"]])
    c = suggest_topics(wh, settings)
    assert c["already_decided"] == 1 and c["new"] == 0
    assert lift["candidate_id"] not in {r["candidate_id"] for r in _table(wh)}


def test_an_open_theme_keeps_its_id_when_its_top_keywords_move(wh: Warehouse, home: Path) -> None:
    settings = Settings.resolve(home)
    suggest_topics(wh, settings)
    points = next(r for r in list_candidates(wh) if "积分" in r["keywords"][:2])
    with wh.transaction() as con:  # as if it had been suggested with other top words
        con.execute("UPDATE topic_candidates SET candidate_id = 'TC-0000000001', keywords = ['旧'] "
                    "WHERE candidate_id = ?", [points["candidate_id"]])
    c = suggest_topics(wh, settings)
    assert c["new"] == 0 and c["updated"] == 3 and c["removed"] == 0
    kept = {r["candidate_id"]: r for r in _table(wh)}["TC-0000000001"]
    assert kept["keywords"] == points["keywords"] and kept["feedback_ids"] == points["feedback_ids"]


# -- accepting into the taxonomy file ---------------------------------------------------------------
def test_accept_writes_a_taxonomy_that_loads_and_matches_the_theme(wh: Warehouse, home: Path) -> None:
    settings = Settings.resolve(home)
    suggest_topics(wh, settings)
    points = next(r for r in list_candidates(wh) if "积分" in r["keywords"][:2])
    r = accept_candidate(wh, settings, points["candidate_id"].lower().removeprefix("tc-"), "member_points",
                         stage="after_sales")
    path = home / "taxonomy.yaml"
    assert r["path"] == str(path) and r["created"] and r["comments_kept"]
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# cxloop default taxonomy")  # a copy of the shipped file, comments and all
    tax = load_taxonomy(path)
    assert tax.keys == [*default_taxonomy().keys, "member_points"]
    topic = tax.topics["member_points"]
    assert topic.stage == "after_sales" and topic.team == "待分配" and topic.keywords == ("积分",)
    assert all(tax.match(s) == ["member_points"] for s in THEMES["points"])  # all 8, also those outside the cluster
    assert not any("member_points" in tax.match(s) for s in THEMES["lift"] + THEMES["invoice"])
    # HOME/taxonomy.yaml is now the taxonomy in use, without --taxonomy
    assert Settings.resolve(home).taxonomy_file() == path and "member_points" in Settings.resolve(home).load_taxonomy()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"key": "Member-Points"}, "must be lower_snake_case"),
    ({"key": "logistics"}, "already in"),
    ({"key": "ok_key", "stage": "checkout"}, "not a journey stage"),
    ({"key": "ok_key", "keywords": []}, "at least one keyword"),
    ({"key": "ok_key", "candidate": "TC-ffffffffff"}, "unknown candidate"),
])
def test_accept_refuses_with_one_line_naming_the_problem(wh: Warehouse, home: Path, kwargs: dict,
                                                         message: str) -> None:
    settings = Settings.resolve(home)
    suggest_topics(wh, settings)
    candidate = kwargs.pop("candidate", list_candidates(wh)[0]["candidate_id"])
    with pytest.raises(CandidateError, match=message) as e:
        accept_candidate(wh, settings, candidate, **kwargs)
    assert "\n" not in str(e.value)
    assert not (home / "taxonomy.yaml").exists()
    assert {r["status"] for r in _table(wh)} == {"new"}


def test_accept_into_an_existing_file_keeps_its_comments(wh: Warehouse, home: Path, tmp_path: Path) -> None:
    own = tmp_path / "mine.yaml"
    own.write_text("# our topics\nversion: 1\ntopics:\n    delivery:   # the couriers\n        name: 配送\n"
                   "        stage: after_sales\n        team: 物流\n        keywords: [快递, 配送]\n\n"
                   "# trailing notes\n", encoding="utf-8")
    settings = Settings.resolve(home, taxonomy=own)
    suggest_topics(wh, settings)
    lift = next(r for r in list_candidates(wh) if "电梯" in r["keywords"][:2])
    r = accept_candidate(wh, settings, lift["candidate_id"], "elevator", name="电梯", keywords=["电梯", "物业"])
    assert r["path"] == str(own) and not r["created"] and r["comments_kept"]
    text = own.read_text(encoding="utf-8")
    assert "# our topics" in text and "# the couriers" in text and text.rstrip().endswith("# trailing notes")
    assert "    elevator:\n        name: 电梯\n" in text  # the file's own indentation
    tax = load_taxonomy(own)
    assert tax.keys == ["delivery", "elevator"] and tax.topics["elevator"].keywords == ("电梯", "物业")
    with pytest.raises(CandidateError, match="already accepted"):
        accept_candidate(wh, settings, lift["candidate_id"], "elevator_again")
    assert not list(own.parent.glob(".mine.yaml.*"))  # no temporary file left


def test_a_flow_style_file_is_rewritten_from_its_data() -> None:
    text = "# flow style\ntopics: {a: {name: A, stage: usage, team: T, keywords: [x]}}\n"
    spec = {"name": "新: 主题", "stage": "usage", "team": "团队", "keywords": ["发票", "yes", "a,b"]}
    out, kept = add_topic_text(text, "b_topic", spec)
    assert not kept
    assert yaml.safe_load(out)["topics"]["b_topic"] == spec  # quoting survives: 'yes', '新: 主题', 'a,b'
    out, kept = add_topic_text("topics:\n  a: {name: A, stage: usage, team: T, keywords: [x]}\n", "b_topic", spec)
    assert kept and yaml.safe_load(out)["topics"]["b_topic"] == spec


# -- the CLI ----------------------------------------------------------------------------------------
@pytest.fixture()
def cli(home: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201 - a function running `cxloop …`
    from pipelines.cli import app

    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()

    def invoke(*args: str):  # noqa: ANN202 - click's Result
        return runner.invoke(app, [*args, "--home", str(home)])

    return invoke


def test_cli_suggest_accept_dismiss_show(wh: Warehouse, home: Path, cli) -> None:  # noqa: ANN001
    r = cli("taxonomy", "suggest", "--since-days", "30")
    assert r.exit_code == 0, r.output
    assert "3 new" in r.stdout and "Candidate topics" in r.stdout
    ids = {c["candidate_id"]: c for c in list_candidates(wh)}
    assert len(ids) == 3 and all(cid in r.stdout for cid in ids)
    points = next(cid for cid, c in ids.items() if "积分" in c["keywords"][:2])
    lift = next(cid for cid, c in ids.items() if "电梯" in c["keywords"][:2])

    r = cli("taxonomy", "accept", points, "--key", "member_points", "--name", "会员积分", "--team", "会员运营",
            "--keywords", "积分清零，积分")
    assert r.exit_code == 0, r.output
    assert "member_points" in r.stdout and "created from the shipped default" in r.stdout
    assert load_taxonomy(home / "taxonomy.yaml").topics["member_points"].keywords == ("积分清零", "积分")

    r = cli("taxonomy", "dismiss", lift)
    assert r.exit_code == 0 and f"{lift}: dismissed" in r.stdout

    r = cli("taxonomy", "show")
    assert r.exit_code == 0 and "member_points" in r.stdout and "HOME/taxonomy.yaml" in r.stdout

    r = cli("taxonomy", "suggest")
    assert r.exit_code == 0 and "0 new" in r.stdout
    assert lift not in r.stdout and points not in r.stdout  # decided: not offered again


@pytest.mark.parametrize(("args", "message"), [
    (["taxonomy", "accept", "TC-ffffffffff", "--key", "x_topic"], "unknown candidate 'TC-ffffffffff'"),
    (["taxonomy", "accept", "{id}", "--key", "Bad Key"], "must be lower_snake_case"),
    (["taxonomy", "accept", "{id}", "--key", "x_topic", "--stage", "later"], "not a journey stage"),
    (["taxonomy", "dismiss", "nope"], "unknown candidate 'nope'"),
])
def test_cli_user_errors_are_one_line(wh: Warehouse, home: Path, cli, args: list[str],  # noqa: ANN001
                                      message: str) -> None:
    suggest_topics(wh, Settings.resolve(home))
    cid = list_candidates(wh)[0]["candidate_id"]
    r = cli(*[a.format(id=cid) for a in args])
    assert r.exit_code == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], r.stderr


def test_cli_suggest_without_a_warehouse_says_so(home: Path, cli) -> None:  # noqa: ANN001
    r = cli("taxonomy", "suggest")
    assert r.exit_code == 1 and "does not exist yet" in r.stderr
    assert not (home / "cx.duckdb").exists()


def test_a_broken_home_taxonomy_stops_commands_before_they_write(home: Path, cli,  # noqa: ANN001
                                                                 sample_copy: Path) -> None:
    (home / "taxonomy.yaml").write_text("topics: [", encoding="utf-8")
    for args in (["ingest", str(sample_copy / "app_reviews.csv")], ["taxonomy", "show"]):
        r = cli(*args)
        assert r.exit_code == 1 and "not valid YAML" in r.stderr and str(home / "taxonomy.yaml") in r.stderr
    assert not (home / "cx.duckdb").exists()
