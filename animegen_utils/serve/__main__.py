"""Command line: ``python -m animegen_utils.serve [serve] --model tiny --port 8000`` (or ``animegen serve``).

Subcommands live in ``COMMANDS`` (name -> (add_arguments, run, help)); ``serve`` is the default,
so ``python -m animegen_utils.serve --port 8000`` starts the service.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable

from .settings import (ALLOWED_HOSTS_ENV, API_KEY_ENV, API_KEY_FILE_ENV, DATABASE_URL_ENV, ServeSettings,
                       parse_hosts, read_api_key_file)
from .storage import StorageSettings


def add_storage_args(parser: argparse.ArgumentParser) -> None:
    """Where images (and records) live: shared by every subcommand."""
    group = parser.add_argument_group("storage")
    group.add_argument("--storage-dir", default=None,
                       help="local image folder (default: <project>/outputs/serve/images)")
    group.add_argument("--s3-bucket", default=os.environ.get("ANIMEGEN_S3_BUCKET"),
                       help="store images in this S3 bucket instead (env ANIMEGEN_S3_BUCKET)")
    group.add_argument("--s3-prefix", default=os.environ.get("ANIMEGEN_S3_PREFIX", "output/"))
    group.add_argument("--s3-endpoint-url", default=os.environ.get("ANIMEGEN_S3_ENDPOINT_URL"),
                       help="an S3-compatible server (MinIO, R2, moto, ...)")
    group.add_argument("--s3-region", default=os.environ.get("AWS_REGION"))
    group.add_argument("--database-url", default=os.environ.get(DATABASE_URL_ENV),
                       help=f"generation records database (env {DATABASE_URL_ENV}; default SQLite beside the images)")


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    storage = StorageSettings(root=args.storage_dir, s3_bucket=args.s3_bucket, s3_prefix=args.s3_prefix,
                              s3_endpoint_url=args.s3_endpoint_url, s3_region=args.s3_region)
    names = ("model", "host", "port", "insecure", "queue_size", "timeout_s", "device", "max_connections",
             "header_timeout_s", "body_timeout_s", "keep_alive_s", "config", "scheduler", "clip_skip",
             "safety_checker", "max_size")
    extra = {k: getattr(args, k) for k in names if hasattr(args, k)}
    if getattr(args, "allowed_hosts", None) is not None:
        extra["allowed_hosts"] = parse_hosts(args.allowed_hosts)
    key_file = getattr(args, "api_key_file", None)
    api_key = read_api_key_file(key_file) if key_file else os.environ.get(API_KEY_ENV) or None
    return ServeSettings(storage=storage, database_url=args.database_url, api_key=api_key, **extra)


class _NoKeyOnArgv(argparse.Action):
    """``--api-key KEY`` would show the key to every user of ``ps``: refuse it, naming the alternatives."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"--api-key is not accepted (argv is visible in `ps`): put the key in a file and pass "
                     f"--api-key-file PATH (or set {API_KEY_FILE_ENV}), or set {API_KEY_ENV}.")


def _serve_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tiny", help="'tiny' (built-in), a Hub id, a folder or a .safetensors file")
    parser.add_argument("--config", default=None,
                        help="for a single .safetensors/.ckpt file: a diffusers folder or Hub id with SD1.5's "
                             "configs (e.g. stable-diffusion-v1-5/stable-diffusion-v1-5, in the cache offline)")
    parser.add_argument("--scheduler", default="dpm++", help="dpm++ (default), dpm++_karras, euler_a, euler, ddim, "
                                                             "pndm, unipc, lcm")
    parser.add_argument("--clip-skip", type=int, default=None,
                        help="CLIP layers to skip (diffusers' count: 1 = A1111's 'Clip skip: 2')")
    parser.add_argument("--no-safety-checker", dest="safety_checker", action="store_false",
                        help="load SD1.5 without its NSFW filter (you take responsibility for the outputs)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    parser.add_argument("--api-key-file", default=os.environ.get(API_KEY_FILE_ENV),
                        help=f"a file holding the key required on /api/* (env {API_KEY_FILE_ENV}; or set {API_KEY_ENV})")
    parser.add_argument("--api-key", nargs="?", action=_NoKeyOnArgv, help=argparse.SUPPRESS)
    parser.add_argument("--insecure", action="store_true",
                        help="allow serving beyond loopback without an API key")
    parser.add_argument("--allowed-hosts", default=os.environ.get(ALLOWED_HOSTS_ENV),
                        help=f"comma-separated Host names answered, '*' for any (env {ALLOWED_HOSTS_ENV}; "
                             "default: localhost, 127.0.0.1, [::1] and the bind address)")
    parser.add_argument("--queue-size", type=int, default=8, help="requests admitted at once; more get 503")
    parser.add_argument("--max-size", type=int, default=None,
                        help="largest image side served, a multiple of 64 up to 768 (default 768)")
    parser.add_argument("--timeout", dest="timeout_s", type=float, default=120.0,
                        help="seconds per request, admission to answer; the work stops there too")
    limits = parser.add_argument_group("connections (slow and idle clients)")
    limits.add_argument("--max-connections", type=int, default=None,
                        help="open sockets at most (default: half the file limit, at most 512)")
    limits.add_argument("--header-timeout", dest="header_timeout_s", type=float, default=10.0,
                        help="seconds a client has to send a request's headers")
    limits.add_argument("--body-timeout", dest="body_timeout_s", type=float, default=10.0,
                        help="seconds a client has to send a request's body")
    limits.add_argument("--keep-alive", dest="keep_alive_s", type=float, default=5.0,
                        help="seconds an idle kept-alive connection stays open")
    parser.add_argument("--log-level", default="info")
    add_storage_args(parser)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from animegen_utils.pipelines import SCHEDULERS

    from .app import create_app
    from .connections import uvicorn_config

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    try:
        if args.scheduler not in SCHEDULERS:
            raise ValueError(f"Unknown scheduler {args.scheduler!r}. Valid choices: {', '.join(SCHEDULERS)}.")
        settings = settings_from_args(args)
        settings.check_access()
    except ValueError as err:
        print(f"animegen serve: {err}", file=sys.stderr)
        return 2
    print(f"animegen: loading {settings.model!r}, then serving on http://{settings.host}:{settings.port}/",
          flush=True)
    from animegen_utils.pipelines import ModelNotFoundError

    from .core import load_model
    from .records import SchemaError

    try:
        # The model before the server starts, so a model that can't load (a single file without
        # --config offline, a bad --clip-skip) is one line and exit status 2, not a traceback.
        pipe = load_model(settings.model, settings.device, settings.scheduler, config=settings.config,
                          clip_skip=settings.clip_skip, safety_checker=settings.safety_checker)
        app = create_app(settings, pipe=pipe)
    except (SchemaError, ModelNotFoundError, ValueError) as err:  # say what to do; don't serve
        print(f"animegen serve: {err}", file=sys.stderr)
        return 2
    uvicorn.Server(uvicorn_config(app, settings, log_level=args.log_level)).run()
    return 0


COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]] = {
    "serve": (_serve_args, _serve, "run the HTTP service (the default)"),
}
# ---- more subcommands (issue 14 adds "check": list and repair orphans) ---------------------


def _db_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["upgrade", "current"],
                        help="upgrade: migrate the records database to this version's schema; current: show its revision")
    parser.add_argument("--sql", action="store_true", help="upgrade: print the SQL instead of running it")
    add_storage_args(parser)


def _db(args: argparse.Namespace) -> int:
    from . import records

    url = records.database_url_for(settings_from_args(args))
    if args.action == "upgrade":
        records.upgrade(url, sql=args.sql)
    if not args.sql:
        engine = records.make_engine(url)
        print(f"database: {engine.url.render_as_string(hide_password=True)}")
        print(f"current:  {records.current_revision(engine) or 'none (empty)'}")
        print(f"head:     {records.head_revision()}")
        engine.dispose()
    return 0


def _check_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fix", action="store_true",
                        help="delete records whose image is gone, images without a record and temp files "
                             "older than a minute (default: only list)")
    add_storage_args(parser)


def _check(args: argparse.Namespace) -> int:
    """Exit 0 when consistent (or repaired), 1 when orphans were found and left, 2 on a bad schema."""
    from . import records
    from .storage import make_storage

    settings = settings_from_args(args)
    try:
        store = records.RecordStore(records.database_url_for(settings), create=False)
    except records.SchemaError as err:
        print(f"animegen check: {err}", file=sys.stderr)
        return 2
    report = records.check(make_storage(settings.storage), store, fix=args.fix)
    store.close()
    print(report)
    return 0 if report.ok or report.fixed else 1


COMMANDS["db"] = (_db_args, _db, "migrate the generation records database (db upgrade | db current)")
COMMANDS["check"] = (_check_args, _check, "list (and with --fix repair) images without records and records without images")


def cli(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m animegen_utils.serve`` and the ``animegen`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv.insert(0, "serve")
    parser = argparse.ArgumentParser(prog="animegen", description="Serve the animegen generator.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_arguments, _, help_text) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text))
    args = parser.parse_args(argv)
    return COMMANDS[args.command][1](args)


if __name__ == "__main__":
    sys.exit(cli())
