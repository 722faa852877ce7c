"""The taxonomy commands of the ``cxloop`` CLI (registered by ``pipelines.cli``):

    cxloop taxonomy show                              the topics in use and the file they come from
    cxloop taxonomy suggest [--since-days N] [--min-size N]   cluster complaints no topic covers
    cxloop taxonomy accept ID --key KEY [--name N] [--stage S] [--team T] [--keywords k1,k2]
    cxloop taxonomy dismiss ID

``accept`` writes the user's taxonomy file: ``--taxonomy``/``CXLOOP_TAXONOMY``, else
``HOME/taxonomy.yaml`` (created from the shipped default the first time), which every command then
uses. Feedback is matched against the new topic on the next ``cxloop enrich`` / ``cxloop run``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from pipelines.config import Settings, prepare_prefect_env

console = Console()
err = Console(stderr=True)

HomeOpt = Annotated[Path | None, typer.Option("--home", help="Run-time folder (default $CXLOOP_HOME or ./data).")]
DbOpt = Annotated[str | None, typer.Option("--db", help="DuckDB file, or ducklake:CATALOG for a DuckLake "
                                                   "(default $CXLOOP_DB or HOME/cx.duckdb).")]
TaxOpt = Annotated[Path | None, typer.Option("--taxonomy", help="taxonomy.yaml to use and to write "
                                             "(default $CXLOOP_TAXONOMY, else HOME/taxonomy.yaml).")]
ByOpt = Annotated[str | None, typer.Option("--by", help="Who decides (default $CXLOOP_USER or the login name).")]
IdArg = Annotated[str, typer.Argument(help="Candidate id, e.g. TC-1a2b3c4d5e (from `cxloop taxonomy suggest`).")]


def register(app: typer.Typer, run: Callable[[Callable[[], Any]], Any]) -> None:
    """Add ``cxloop taxonomy …`` to ``app``. ``run`` turns user errors into one ``error:`` line."""

    def guarded(fn: Callable[[], Any]) -> Any:
        from pipelines.emerging import CandidateError

        try:
            return run(fn)
        except CandidateError as e:
            err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    def settings_for(home: Path | None, db: str | None, taxonomy: Path | None) -> Settings:
        settings = Settings.resolve(home, db, taxonomy)
        prepare_prefect_env(settings)  # before pipelines.emerging imports Prefect
        return settings

    tax_app = typer.Typer(no_args_is_help=True, help="The topic taxonomy: show it, suggest new topics from "
                                                     "complaints no topic covers, accept or dismiss them.")
    app.add_typer(tax_app, name="taxonomy")

    @tax_app.command("show")
    def show(home: HomeOpt = None, taxonomy: TaxOpt = None) -> None:
        """The topics in use and the file they come from."""
        settings = settings_for(home, None, taxonomy)
        tax = run(settings.load_taxonomy)
        path = settings.taxonomy_file()
        origin = ("shipped default" if path is None else "--taxonomy / CXLOOP_TAXONOMY" if settings.taxonomy_path
                  else "HOME/taxonomy.yaml")
        t = Table(title=f"{len(tax)} topics from {tax.source} ({origin})")
        for col in ("key", "name", "stage", "team"):
            t.add_column(col, no_wrap=True)
        t.add_column("keywords", overflow="fold", max_width=70)
        for topic in tax:
            t.add_row(topic.key, topic.name, topic.stage, topic.team, "、".join(topic.keywords))
        console.print(t)

    @tax_app.command("suggest")
    def suggest(since_days: Annotated[int, typer.Option(min=0, help="Days up to the newest feedback to look at "
                                                                    "(0 = all).")] = 90,
                min_size: Annotated[int, typer.Option(min=2, help="Fewest complaints a candidate needs.")] = 3,
                home: HomeOpt = None, db: DbOpt = None, taxonomy: TaxOpt = None) -> None:
        """Cluster the negative feedback no topic covers into candidate topics (table topic_candidates)."""
        settings = settings_for(home, db, taxonomy)
        from pipelines import emerging
        from pipelines.warehouse import Warehouse

        c = guarded(lambda: emerging.run_suggestions(settings, since_days or None, min_size))
        window = f"since {c['window_from'][:10]}" if c["window_from"] else "all time"
        console.print(f"suggest: {c['uncovered']} negative feedback no topic covers ({window}) → "
                      f"{c['candidates']} candidates: {c['new']} new, {c['updated']} seen before, "
                      f"{c['already_decided']} like one already decided, {c['removed']} no longer found")
        rows = guarded(lambda: emerging.list_candidates(Warehouse(settings.db_path), "new"))
        if not rows:
            console.print("no open candidates")
            return
        t = Table(title="Candidate topics (complaints no taxonomy topic covers)",
                  caption="cxloop taxonomy accept ID --key KEY [--name …] [--stage …] [--team …] [--keywords k1,k2]"
                          "  ·  cxloop taxonomy dismiss ID")
        for col in ("id", "size", "seen"):
            t.add_column(col, no_wrap=True)
        t.add_column("keywords", overflow="fold", max_width=36)
        t.add_column("example", overflow="ellipsis", no_wrap=True, max_width=60)
        for r in rows:
            t.add_row(r["candidate_id"], str(r["size"]), f"{r['first_seen']:%m-%d}…{r['last_seen']:%m-%d}",
                      "、".join(r["keywords"][:5]), f"“{r['quotes'][0]}”" if r["quotes"] else "")
        console.print(t)

    @tax_app.command("accept")
    def accept(candidate: IdArg,
               key: Annotated[str, typer.Option("--key", help="The new topic's key, lower_snake_case.")],
               name: Annotated[str | None, typer.Option(help="Its name (default: the two top keywords).")] = None,
               stage: Annotated[str | None, typer.Option(help="Journey stage: awareness, consideration, purchase, "
                                                              "usage (default) or after_sales.")] = None,
               team: Annotated[str | None, typer.Option(help="Owning team (default 待分配).")] = None,
               keywords: Annotated[str | None, typer.Option(help="Comma-separated keywords (default: the "
                                                                 "candidate's matching keywords).")] = None,
               by: ByOpt = None, home: HomeOpt = None, db: DbOpt = None, taxonomy: TaxOpt = None) -> None:
        """Add a candidate to your taxonomy file as a new topic and mark it accepted."""
        settings = settings_for(home, db, taxonomy)
        from pipelines import emerging
        from pipelines.warehouse import Warehouse

        r = guarded(lambda: emerging.accept_candidate(
            Warehouse(settings.db_path), settings, candidate, key, name=name, stage=stage, team=team,
            keywords=emerging.parse_keywords(keywords), by=by))
        console.print(f"accepted {r['candidate_id']} as topic [bold]{r['key']}[/] ({r['name']}, {r['stage']}, "
                      f"{r['team']}; keywords {'、'.join(r['keywords'])})")
        console.print(f"taxonomy: {r['path']} ({'created from the shipped default' if r['created'] else 'updated'})"
                      + ("" if r["comments_kept"] else "; rewritten from its data: its comments were lost"))
        console.print("feedback is matched against the new topic on the next `cxloop enrich` or `cxloop run`")

    @tax_app.command("dismiss")
    def dismiss(candidate: IdArg, by: ByOpt = None, home: HomeOpt = None, db: DbOpt = None) -> None:
        """Mark a candidate dismissed: it is not suggested again."""
        settings = settings_for(home, db, None)
        from pipelines import emerging
        from pipelines.warehouse import Warehouse

        r = guarded(lambda: emerging.dismiss_candidate(Warehouse(settings.db_path), candidate, by))
        console.print(f"{r['candidate_id']}: dismissed" + (" (already)" if r["was"] == "dismissed" else ""))
