"""The loop's commands of the ``cxloop`` CLI (registered by ``pipelines.cli``):

    cxloop backlog [list] [--status S]           the improvement backlog
    cxloop backlog show ITEM                     one item: evidence, history, verification checks
    cxloop backlog assign ITEM [TEAM] [--due D]  set the owner team and/or the due date
    cxloop backlog set-status ITEM STATUS        move it (--at: when the fix shipped, for resolved)
    cxloop backlog note ITEM TEXT                add a note to its history
    cxloop alerts [--limit N]                    alerts raised, newest first, with delivery state
    cxloop verify                                verify resolved items now (also part of `cxloop run`)
    cxloop drivers                               NPS / CSAT per topic and each topic's impact

Who acts is ``--by``, else ``$CXLOOP_USER``, else the login name.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from pipelines.config import Settings

console = Console()
err = Console(stderr=True)

HomeOpt = Annotated[Path | None, typer.Option("--home", help="Run-time folder (default $CXLOOP_HOME or ./data).")]
DbOpt = Annotated[str | None, typer.Option("--db", help="DuckDB file, or ducklake:CATALOG for a DuckLake "
                                                   "(default $CXLOOP_DB or HOME/cx.duckdb).")]
ByOpt = Annotated[str | None, typer.Option("--by", help="Who acts (default $CXLOOP_USER or the login name).")]
ItemArg = Annotated[str, typer.Argument(help="Backlog item id, e.g. BL-1a2b3c4d.")]
NoteOpt = Annotated[str | None, typer.Option("--note", help="Why: kept in the item's history.")]

STATUS_STYLE = {"new": "cyan", "triaged": "blue", "in_progress": "yellow", "resolved": "magenta",
                "verified": "bold green", "reopened": "bold red"}


def _parse_when(value: str | None, what: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError:
        from pipelines.backlog import BacklogError

        raise BacklogError(f"{what} {value!r} is not a date (YYYY-MM-DD or 'YYYY-MM-DD HH:MM')") from None


def register(app: typer.Typer, run: Callable[[Callable[[], Any]], Any], settings_for: Callable[..., Settings],
             flows: Callable[[Callable[[], Any]], Any]) -> None:
    """Add the loop's commands to ``app``. ``run`` turns user errors into one ``error:`` line;
    ``settings_for(home, db, flows=False)`` prepares settings (and Prefect's environment) from
    ``--home``/``--db`` (``flows=True``: for a command that runs flows, see ``pipelines.cli._settings``);
    ``flows`` is ``run`` for a function that runs flows."""

    def guarded(fn: Callable[[], Any]) -> Any:
        from pipelines.backlog import BacklogError

        try:
            return run(fn)
        except BacklogError as e:
            err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    def wh(home: Path | None, db: str | None):  # noqa: ANN202 - a Warehouse, imported lazily
        from pipelines.warehouse import Warehouse

        return Warehouse(Settings.resolve(home, db).db_path)

    backlog_app = typer.Typer(invoke_without_command=True, no_args_is_help=False,
                              help="The improvement backlog: list, show, assign, set-status, note.")
    app.add_typer(backlog_app, name="backlog")

    @backlog_app.callback()
    def backlog_default(ctx: typer.Context, home: HomeOpt = None, db: DbOpt = None,
                        status: Annotated[str | None, typer.Option(help="Only items with this status.")] = None
                        ) -> None:
        """The improvement backlog (`cxloop backlog` = `cxloop backlog list`)."""
        if ctx.invoked_subcommand is None:
            show_backlog(guarded, wh(home, db), status)

    @backlog_app.command("list")
    def backlog_list(home: HomeOpt = None, db: DbOpt = None,
                     status: Annotated[str | None, typer.Option(help="Only items with this status.")] = None) -> None:
        """List the backlog, highest priority first."""
        show_backlog(guarded, wh(home, db), status)

    @backlog_app.command("show")
    def backlog_show(item: ItemArg, home: HomeOpt = None, db: DbOpt = None) -> None:
        """One item: evidence, owner, due date, history of every change, verification checks."""
        from pipelines import backlog

        it = guarded(lambda: backlog.show(wh(home, db), item))
        console.print(f"[bold]{it['item_id']}[/] {it['title']}  [{STATUS_STYLE.get(it['status'], '')}]"
                      f"{it['status']}[/]")
        console.print(f"owner {it['owner_team'] or '—'} · due {it['due_date'] or '—'} · priority {it['priority']:.1f} "
                      f"· {it['neg_count']} negative ({it['neg_rate']:.0%}) · seen {it['first_seen_period']} … "
                      f"{it['last_seen_period']}" + (f" · resolved {it['resolved_at']}" if it["resolved_at"] else ""))
        if it["keywords"]:
            console.print("keywords: " + "、".join(it["keywords"]))
        for q in it["quotes"] or []:
            console.print(f"  “{q}”", highlight=False)
        if it["checks"]:
            t = Table(title="verification checks")
            for col in ("checked", "decision", "before", "after", "p", "reason"):
                t.add_column(col)
            for c in it["checks"]:
                t.add_row(f"{c['checked_at']:%Y-%m-%d %H:%M}", c["decision"], f"{c['baseline_rate'] or 0:.1%}",
                          f"{c['after_rate'] or 0:.1%}", "" if c["p_value"] is None else f"{c['p_value']:.2g}",
                          c["reason"])
            console.print(t)
        t = Table(title="history")
        for col in ("when", "who", "what", "from", "to", "note"):
            t.add_column(col)
        for h in it["history"]:
            t.add_row(f"{h['changed_at']:%Y-%m-%d %H:%M}", h["actor"], h["action"], h["old_value"] or "",
                      h["new_value"] or "", h["note"] or "")
        console.print(t)

    @backlog_app.command("assign")
    def backlog_assign(item: ItemArg,
                       team: Annotated[str | None, typer.Argument(help="Owner team (overrides the taxonomy's).")]
                       = None,
                       due: Annotated[str | None, typer.Option(help="Due date, YYYY-MM-DD.")] = None,
                       by: ByOpt = None, note: NoteOpt = None, home: HomeOpt = None, db: DbOpt = None) -> None:
        """Set an item's owner team and/or due date."""
        from pipelines import backlog

        def go() -> dict:
            when = _parse_when(due, "--due")
            return backlog.assign(wh(home, db), item, team, when.date() if when else None, by, note)

        it = guarded(go)
        console.print(f"{it['item_id']}: owner {it['owner_team']}, due {it['due_date'] or '—'}")

    @backlog_app.command("set-status")
    def backlog_set_status(item: ItemArg,
                           status: Annotated[str, typer.Argument(help="new, triaged, in_progress, resolved, "
                                                                      "reopened (verified comes from verification)")],
                           at: Annotated[str | None, typer.Option(help="When it happened (for resolved: when the "
                                                                       "fix shipped), default now.")] = None,
                           by: ByOpt = None, note: NoteOpt = None, home: HomeOpt = None, db: DbOpt = None) -> None:
        """Move an item along its lifecycle."""
        from pipelines import backlog

        it = guarded(lambda: backlog.set_status(wh(home, db), item, status, by, note, _parse_when(at, "--at")))
        console.print(f"{it['item_id']}: {it['status']}" + (
            " — verification compares the topic after this date with the weeks before" if status == "resolved" else ""))

    @backlog_app.command("note")
    def backlog_note(item: ItemArg, text: Annotated[str, typer.Argument(help="The note.")], by: ByOpt = None,
                     home: HomeOpt = None, db: DbOpt = None) -> None:
        """Add a note to an item's history."""
        from pipelines import backlog

        guarded(lambda: backlog.add_note(wh(home, db), item, text, by))
        console.print(f"{item}: note added")

    @app.command()
    def alerts(home: HomeOpt = None, db: DbOpt = None,
               limit: Annotated[int, typer.Option(help="How many to show.")] = 20) -> None:
        """Alerts raised (spikes and urgent feedback), newest first, with their delivery state."""
        show_alerts(guarded, wh(home, db), limit)

    @app.command()
    def verify(home: HomeOpt = None, db: DbOpt = None) -> None:
        """Verify resolved backlog items now: verified, reopened or still waiting for data."""
        settings = settings_for(home, db, flows=True)
        from pipelines.verify import verify_flow

        r = guarded(lambda: flows(lambda: verify_flow(db=str(settings.db_path), home=str(settings.home))))
        console.print(f"verify: {r['checked']} checked: {r['verified']} verified, {r['reopened']} reopened, "
                      f"{r['waiting']} waiting, {r['still_verified']} still verified")
        show_backlog(guarded, wh(home, db), None, only_checked=True)

    @app.command()
    def drivers(home: HomeOpt = None, db: DbOpt = None) -> None:
        """NPS and CSAT per topic, and how far the overall score would move without its negative mentions."""
        rows = guarded(lambda: wh(home, db).query(
            "SELECT * FROM v_nps_drivers ORDER BY nps_impact DESC NULLS LAST, csat_impact DESC NULLS LAST"
        ).to_pylist())
        if not rows:
            console.print("no scores yet: run `cxloop run` first")
            return
        r0 = rows[0]
        t = Table(title=f"Score drivers — overall NPS {_num(r0['overall_nps'])}, CSAT {_num(r0['overall_csat'])}%",
                  caption="impact = overall score without the topic's negative mentions − overall score")
        for col in ("topic", "NPS answers", "NPS", "NPS impact", "ratings", "CSAT %", "CSAT impact"):
            t.add_column(col, no_wrap=True)
        for r in rows:
            t.add_row(r["topic_name"], str(r["nps_responses"]), _num(r["nps"]), _num(r["nps_impact"], "+"),
                      str(r["ratings"]), _num(r["csat"]), _num(r["csat_impact"], "+"))
        console.print(t)


def _num(v: float | None, sign: str = "") -> str:
    return "—" if v is None else f"{v:{sign}.1f}"


def show_backlog(guarded: Callable[[Callable[[], Any]], Any], wh: Any, status: str | None,
                 only_checked: bool = False) -> None:
    """The backlog table (also printed at the end of `cxloop run`)."""
    sql = ("SELECT item_id, title, owner_team, status, priority, neg_count, last_seen_period, due_date, "
           "last_check, last_check_reason FROM v_backlog")
    where, params = [], []
    if status:
        where.append("status = ?")
        params.append(status)
    if only_checked:
        where.append("last_check IS NOT NULL")
    sql += (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY priority DESC, item_id"
    rows = guarded(lambda: wh.query(sql, params).to_pylist())
    t = Table(title="Improvement backlog")
    for col in ("item", "title", "owner", "status", "priority", "neg", "last seen", "due"):
        t.add_column(col, no_wrap=True)
    t.add_column("verification", overflow="fold", max_width=70)
    for r in rows:
        style = STATUS_STYLE.get(r["status"], "")
        t.add_row(r["item_id"], r["title"], r["owner_team"] or "", f"[{style}]{r['status']}[/]",
                  f"{r['priority']:.1f}", str(r["neg_count"]), str(r["last_seen_period"]), str(r["due_date"] or ""),
                  f"{r['last_check']}: {r['last_check_reason']}" if r["last_check"] else "")
    console.print(t)


def show_alerts(guarded: Callable[[Callable[[], Any]], Any], wh: Any, limit: int) -> None:
    """The latest alerts (also printed at the end of `cxloop run`)."""
    rows = guarded(lambda: wh.query(
        "SELECT alert_id, kind, period_start, message, delivered_at, delivery_attempts, delivery_error FROM v_alerts "
        "ORDER BY period_start DESC, kind = 'urgent', observed DESC, alert_id LIMIT ?", [limit]).to_pylist())
    if not rows:
        console.print("no alerts")
        return
    t = Table(title="Alerts (spikes against each topic's own history; urgent feedback)")
    for col in ("alert", "kind", "week", "delivery"):
        t.add_column(col, no_wrap=True)
    t.add_column("message", overflow="fold", max_width=80)
    for r in rows:
        state = ("delivered" if r["delivered_at"] else
                 f"pending ({r['delivery_attempts']} tries)" if r["delivery_attempts"] else "pending")
        t.add_row(r["alert_id"], r["kind"], str(r["period_start"]), state, r["message"])
    console.print(t)


def show_loop(guarded: Callable[[Callable[[], Any]], Any], settings: Settings, result: dict) -> None:
    """What `cxloop run` adds after the pain points: alerts, then the backlog with verification."""
    from pipelines.warehouse import Warehouse

    wh = Warehouse(settings.db_path)
    p, v = result["pain_points"], result.get("verify", {})
    console.print(f"\nalerts: {p.get('alerts_new', 0)} new this run, {p.get('alerts_delivered', 0)} delivered, "
                  f"{p.get('alerts_pending', 0)} pending (webhook: CXLOOP_WEBHOOK_URL)")
    show_alerts(guarded, wh, 8)
    if v:
        console.print(f"verify: {v['checked']} resolved item(s) checked: {v['verified']} verified, "
                      f"{v['reopened']} reopened, {v['waiting']} waiting")
    show_backlog(guarded, wh, None)
