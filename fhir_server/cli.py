"""``fhir-server serve | es start|stop|status | load PATH... | reindex | validate PATH... | index-errors``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .api.transport import uvicorn_options
from .observability.logs import configure_logging
from .settings import Settings, get_settings

console = Console(stderr=True)


@contextmanager
def elasticsearch(settings: Settings) -> Iterator[str]:
    """The configured cluster, or the managed local node (started here, stopped on exit if we started it)."""
    if settings.es_url:
        yield settings.es_url
        return
    from fhir_devtools import es_node  # development tooling: a production server is given FHIR_ES_URL

    cfg = es_node.NodeConfig.from_settings(settings)
    was_running = bool(es_node.status(cfg).get("running"))
    if not was_running:
        console.print(f"[bold]Starting the local Elasticsearch node[/] (port {cfg.port}, data {cfg.data_dir})")
    url = es_node.start(cfg)
    try:
        yield url
    finally:
        if not was_running:
            console.print("Stopping the local Elasticsearch node")
            es_node.stop(cfg)


def _serve(settings: Settings, _args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app
    from .context import ServerContext

    with elasticsearch(settings) as es_url:
        app = create_app(lambda: ServerContext.build(settings, es_url), settings)
        console.print(f"[bold green]FHIR server[/] on {settings.public_base}")
        # log_config=None: uvicorn's loggers go through ours (JSON, request ids); the access line is ours too
        uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
                    log_config=None, access_log=False, **uvicorn_options())
    return 0


def _es(settings: Settings, args: argparse.Namespace) -> int:
    if settings.es_url:
        console.print(f"FHIR_ES_URL is set ({settings.es_url}): no managed node to {args.action}")
        return 0 if args.action == "status" else 1
    from fhir_devtools import es_node

    cfg = es_node.NodeConfig.from_settings(settings)
    if args.action == "start":
        console.print(f"Elasticsearch running at {es_node.start(cfg)}")
    elif args.action == "stop":
        es_node.stop(cfg)
        console.print("Elasticsearch stopped")
    else:
        sys.stdout.write(orjson.dumps(es_node.status(cfg), option=orjson.OPT_INDENT_2, default=str).decode() + "\n")
    return 0


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console)


def _count_hint(paths: list[Path]) -> int:
    """Roughly how many resources (ndjson lines, other files count 1): a progress total without parsing."""
    from .loader import resource_files

    total = 0
    for f, _name in resource_files(paths):
        if f.suffix == ".ndjson":
            with f.open("rb") as fh:
                total += sum(1 for line in fh if line.strip())
        else:
            total += 1
    return total


def _existing_paths(raw: list[str]) -> list[Path] | None:
    """The given paths, or None (after saying which) when any of them does not exist."""
    paths = [Path(p) for p in raw]
    missing = [p for p in paths if not p.exists()]
    if missing:
        console.print(f"[red]No such file or directory:[/] {', '.join(map(str, missing))}")
        return None
    return paths


def _load(settings: Settings, args: argparse.Namespace) -> int:
    from .context import ServerContext
    from .loader import BulkStats, bulk_load, load

    paths = _existing_paths(args.paths)
    if paths is None:
        return 2
    if not args.bulk and (args.no_validate or args.workers is not None):
        console.print("[red]--no-validate and --workers need --bulk[/]")
        return 2
    total = _count_hint(paths)  # parsing every file for an exact count would read the inputs twice
    stats = BulkStats()
    with elasticsearch(settings) as es_url:
        ctx = ServerContext.build(settings, es_url, start_indexer=not args.bulk)
        try:
            with _progress() as bar:
                task = bar.add_task("loading", total=total)
                if args.bulk:
                    report = bulk_load(ctx, paths, validate=not args.no_validate, workers=args.workers,
                                       batch=args.batch, on_progress=lambda n: bar.advance(task, n), stats=stats)
                else:
                    report = load(ctx, paths, on_progress=lambda _src: bar.advance(task))
            if not args.bulk:
                console.print("Waiting for the index to catch up...")
                ctx.indexer.wait_until_indexed(timeout=600)
        finally:
            ctx.close()
    table = Table(title="Load summary")
    table.add_column("outcome")
    table.add_column("count", justify="right")
    table.add_row("loaded", str(report.loaded))
    table.add_row("rejected", str(len(report.rejected)))
    for type_, n in sorted(report.skipped.items()):
        table.add_row(f"skipped ({type_}: type not served)", str(n))
    for (source, reason), n in sorted(report.not_fhir.items()):
        table.add_row(f"skipped ({source}: {reason})", str(n))
    if args.bulk:
        table.add_row("  in store batches / one by one", f"{stats.fast} / {stats.slow}")
        table.add_row("  resources/s (validation " + ("off" if args.no_validate else "on") + ")",
                      f"{report.loaded / stats.seconds:.0f}" if stats.seconds else "-")
    console.print(table)
    if stats.es_error:
        console.print(f"[yellow]Elasticsearch failed during the load ({stats.es_error}):[/] everything is in the "
                      f"store; {stats.left_to_indexer} resources wait in the outbox for the indexer (next "
                      "`fhir-server serve`), or run `fhir-server reindex`")
    for source, reason in report.rejected[: args.show_rejects]:
        console.print(f"[red]rejected[/] {source}: {reason}")
    if len(report.rejected) > args.show_rejects:
        console.print(f"... and {len(report.rejected) - args.show_rejects} more rejects")
    return 1 if report.rejected and args.strict else 0


def _reindex(settings: Settings, args: argparse.Namespace) -> int:
    from .context import ServerContext
    from .index.reindex import ReindexError, reindex_types
    from .registry import RESOURCE_TYPES

    types = args.type or [rt.name for rt in RESOURCE_TYPES.values() if rt.searchable]
    with elasticsearch(settings) as es_url:
        ctx = ServerContext.build(settings, es_url, start_indexer=False)
        try:
            with _progress() as bar:
                tasks = {t: bar.add_task(f"reindex {t}", total=ctx.store.count_current(t)) for t in types}
                results = reindex_types(ctx.store, ctx.es, ctx.indices, ctx.indexer.builder, types,
                                        workers=args.workers, progress=lambda t, n: bar.advance(tasks[t], n))
        except ReindexError as exc:
            console.print(f"[red]{exc}[/]")
            return 1
        finally:
            ctx.close()
    for result in results:
        console.print(result)
    _warn_index_errors(settings)
    return 0


def _warn_index_errors(settings: Settings) -> None:
    """Say when documents failed to index (``index-errors`` shows which)."""
    from .storage import open_store

    store = open_store(settings.db_url, busy_timeout_s=settings.db_busy_timeout_s)
    try:
        if n := len(store.outbox.errors()):
            console.print(f"[yellow]{n} resources failed to index:[/] see `fhir-server index-errors`")
    finally:
        store.dispose()


def _index_errors(settings: Settings, args: argparse.Namespace) -> int:
    """The resources the indexer gave up on (outbox entries parked in ``index_error``), with the reason; with
    ``--retry``, queue them for the indexer again (the next ``serve`` or a running one picks them up)."""
    from .storage import open_store

    store = open_store(settings.db_url, busy_timeout_s=settings.db_busy_timeout_s)
    try:
        failures = store.outbox.errors(args.limit)
        if args.json:
            sys.stdout.write(orjson.dumps([{"seq": f.seq, "type": f.type, "id": f.id, "error": f.error}
                                           for f in failures], option=orjson.OPT_INDENT_2).decode() + "\n")
        elif failures:
            table = Table(title="Resources that failed to index")
            for column in ("seq", "resource", "error"):
                table.add_column(column)
            for f in failures:
                table.add_row(str(f.seq), f"{f.type}/{f.id}", f.error)
            Console().print(table)
        else:
            console.print("No resource failed to index")
        if args.retry:
            console.print(f"Queued {store.outbox.retry_errors()} for the indexer again")
    finally:
        store.dispose()
    return 0


def _iter_documents(paths: list[Path]) -> Iterator[tuple[str, object]]:
    """(source, parsed JSON) for each file; ndjson files give one per line; directories are walked."""
    from .loader import resource_files

    for path, _name in resource_files(paths):
        text = path.read_text(encoding="utf-8")
        chunks = [(f"{path}:{n}", line) for n, line in enumerate(text.splitlines(), 1) if line.strip()] \
            if path.suffix == ".ndjson" else [(str(path), text)]
        for source, chunk in chunks:
            try:
                yield source, orjson.loads(chunk)
            except orjson.JSONDecodeError as exc:
                yield source, exc


def _validate_files(settings: Settings, args: argparse.Namespace) -> int:
    """Offline validation with the server's engine and policy; exit 1 when any error is found."""
    from profiles import validate

    paths = _existing_paths(args.paths)
    if paths is None:
        return 2
    counts = {"error": 0, "warning": 0, "information": 0}
    invalid = 0
    out = sys.stdout
    for source, doc in _iter_documents(paths):
        if isinstance(doc, Exception):
            out.write(f"{source}: invalid\n  error: malformed JSON: {doc}\n")
            invalid += 1
            continue
        issues = validate(doc, profiles=args.profile or (), required=settings.validation_required_profiles,
                          unknown_profile=settings.validation_unknown_profile)
        errors = [i for i in issues if i.severity in ("error", "fatal")]
        invalid += bool(errors)
        shown = [i for i in issues if args.verbose or i.severity != "information"]
        out.write(f"{source}: {'invalid' if errors else 'valid'}\n")
        for i in shown:
            counts[i.severity if i.severity in counts else "error"] += 1
            out.write(f"  {i.severity} {', '.join(i.expression) or '-'}: {i.diagnostics}\n")
    out.write(f"{invalid} invalid; {counts['error']} errors, {counts['warning']} warnings\n")
    return 1 if invalid else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fhir-server", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the HTTP server (and the local Elasticsearch if FHIR_ES_URL is unset)")
    es = sub.add_parser("es", help="manage the local Elasticsearch node")
    es.add_argument("action", choices=["start", "stop", "status"])
    ld = sub.add_parser("load", help="load ndjson files, Bundles or directories through the write path")
    ld.add_argument("paths", nargs="+")
    ld.add_argument("--show-rejects", type=int, default=50)
    ld.add_argument("--strict", action="store_true", help="exit 1 when anything was rejected")
    ld.add_argument("--bulk", action="store_true",
                    help="large data sets: store batches + ES bulk requests, worker processes (same checks)")
    ld.add_argument("--no-validate", action="store_true",
                    help="with --bulk: skip profile validation, for trusted data only (e.g. an export of this server)")
    ld.add_argument("--workers", type=int, default=None,
                    help="with --bulk: worker processes for parsing/validation/extraction (default: CPU count)")
    ld.add_argument("--batch", type=int, default=2000, help="with --bulk: resources per store transaction")
    va = sub.add_parser("validate", help="validate FHIR JSON files (resources, Bundles, ndjson) offline")
    va.add_argument("paths", nargs="+")
    va.add_argument("--profile", action="append", help="also check against this profile canonical (repeatable)")
    rx = sub.add_parser("reindex", help="rebuild the search index from the store, behind the alias")
    rx.add_argument("--type", action="append", help="resource type (repeatable); default all")
    rx.add_argument("--workers", type=int, default=None,
                    help="worker processes building the documents (default: CPU count from 5,000 resources of a "
                         "type; 0 = in this process)")
    ie = sub.add_parser("index-errors", help="list the resources the indexer gave up on, with the reason")
    ie.add_argument("--json", action="store_true", help="JSON on stdout: [{seq, type, id, error}]")
    ie.add_argument("--limit", type=int, default=None, help="at most this many (oldest first)")
    ie.add_argument("--retry", action="store_true", help="then queue them for the indexer again")
    return parser


COMMANDS = {"serve": _serve, "es": _es, "load": _load, "reindex": _reindex, "validate": _validate_files,
            "index-errors": _index_errors}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_format or ("json" if args.command == "serve" else "text"),
                      logging.DEBUG if args.verbose else settings.log_level.upper())
    return COMMANDS[args.command](settings, args)


if __name__ == "__main__":
    sys.exit(main())
