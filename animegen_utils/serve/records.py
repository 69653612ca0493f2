"""Generation records in a real database: SQLite by default, PostgreSQL by URL.

One row per image the service made: who asked (the API key's id, never the key),
what they asked for, the exact prompt and parameters, and where the image is.

>>> from animegen_utils.serve.records import RecordStore, check
>>> records = RecordStore("sqlite:///outputs/serve/generations.sqlite3")   # no set-up
>>> records = RecordStore("postgresql+psycopg://user:pw@host/animegen")    # same code
>>> page = records.list(limit=20, emotion="happy")
>>> more = records.list(limit=20, cursor=page.next_cursor)
>>> check(storage, records)            # orphans on either side; fix=True repairs them

The schema is created and upgraded by the Alembic migrations in ``migrations/``
(``python -m animegen_utils.serve db upgrade``). An empty database is migrated on
first use, so the default SQLite file needs nothing; a database at any other
revision than this code's makes ``RecordStore`` refuse with ``SchemaError``,
which names the upgrade command.

Consistency: an image is always written before its record and deleted after it,
so a record never points at a missing image unless someone deleted the file
behind the service's back; ``check`` finds those, and the images whose record
never arrived (a crash between the two writes).
"""

from __future__ import annotations

import base64
import binascii
import re
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    inspect,
    or_,
    select,
    text,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DatabaseError, DBAPIError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.types import TypeDecorator

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Always used with fullmatch: a pattern ending in "$" also matches before a final newline.
ID_RE = re.compile(r"[0-9a-f]{32}")  # uuid4().hex
KEY_RE = re.compile(r"([0-9a-f]{32})\.png")
CURSOR_YEARS = (2000, 9999)  # a cursor's time must be in this range (we made it, so it is)
TEMP_MAX_AGE_S = 60.0  # ``check`` lists temp files older than this (a crash's leftovers)
MAX_LIMIT = 100
UPGRADE_HINT = "python -m animegen_utils.serve db upgrade --database-url '{url}'"

REQUIRED = (
    "id", "created_at", "request", "prompt", "negative_prompt", "seed", "steps",
    "guidance", "scheduler", "model", "storage_key", "duration_s",
)


class SchemaError(RuntimeError):
    """The database's schema is not the one this version of animegen uses."""


class CorruptDatabaseError(SchemaError):
    """The database file is not a database, or its pages fail SQLite's integrity check."""


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in Python, naive UTC in the database (SQLite has no zones)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"created_at must carry a time zone (UTC), got naive {value!r}")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        return None if value is None else value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    pass


class Generation(Base):
    """One generated image. Mirrors migration 0001; a test compares the two."""

    __tablename__ = "generations"
    __table_args__ = (
        UniqueConstraint("storage_key", name="uq_generations_storage_key"),
        Index("ix_generations_created_at_id", "created_at", "id"),
        Index("ix_generations_emotion", "emotion", "created_at", "id"),
        Index("ix_generations_style", "style", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    emotion: Mapped[str | None] = mapped_column(String(32))
    style: Mapped[str | None] = mapped_column(String(32))
    request: Mapped[dict] = mapped_column(JSON)
    prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str] = mapped_column(Text)
    seed: Mapped[int] = mapped_column(BigInteger)
    steps: Mapped[int] = mapped_column(Integer)
    guidance: Mapped[float] = mapped_column(Float)
    scheduler: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(512))
    storage_key: Mapped[str] = mapped_column(String(255))
    duration_s: Mapped[float] = mapped_column(Float)
    api_key_id: Mapped[str | None] = mapped_column(String(64))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at.isoformat(),
            "request": self.request,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "seed": self.seed,
            "steps": self.steps,
            "guidance": self.guidance,
            "scheduler": self.scheduler,
            "model": self.model,
            "storage_key": self.storage_key,
            "duration_s": self.duration_s,
            "api_key_id": self.api_key_id,
        }


class Page(NamedTuple):
    items: list[dict[str, Any]]
    next_cursor: str | None  # None on the last page


# --------------------------------------------------------------------------- engine


def default_database_url(storage_root: str | Path) -> str:
    """The embedded default: ``<storage_root>.sqlite3``, a file beside the image folder."""
    root = Path(storage_root).expanduser().resolve()
    return f"sqlite:///{root.parent / (root.name + '.sqlite3')}"


def database_url_for(settings: Any) -> str:
    """A ``ServeSettings``' database: its ``database_url``, else the SQLite file beside its image folder."""
    return settings.database_url or default_database_url(settings.storage.local_root())


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with the settings a multi-threaded service needs on either backend."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # Several worker threads write; wait for the lock rather than fail at once.
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            # Python's sqlite3 opens transactions itself, and only before INSERT/UPDATE/DELETE, so
            # a migration's CREATE TABLEs would each commit alone. Take that job over (SQLAlchemy's
            # documented recipe): every transaction, DDL included, is then all or nothing.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            # Readers don't block the writer. Switching a new file to WAL can answer "database is
            # locked" without waiting while another process switches it too, so retry briefly.
            for attempt in range(50):
                try:
                    cur.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError as err:
                    if "locked" not in str(err) or attempt == 49:
                        raise
                    time.sleep(0.1)
            cur.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; WAL keeps it consistent
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn):
            # upgrade() asks for BEGIN IMMEDIATE: the write lock up front, so that a second process
            # migrating at the same moment waits for the first instead of failing midway.
            conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get('sqlite_begin', '')}".strip())

        return engine
    # pre_ping: a connection idle across a frozen Lambda or a server restart is replaced, not failed.
    return create_engine(url, pool_pre_ping=True, **kwargs)


# AWS Lambda: one connection per container. The RecordStore (its engine and pool) lives in a
# module global, created at cold start and reused by every warm invocation; a container runs
# one event at a time, so one pooled connection is all it needs. pre_ping (see make_engine)
# replaces a connection that died while the container was frozen, and recycling bounds its
# age below the server's idle timeout. N concurrent containers hold N connections: put RDS
# Proxy (or PgBouncer) in front of PostgreSQL when concurrency may exceed max_connections.
# Lambda never migrates (many cold starts at once would race): run `db upgrade` on deploy.
LAMBDA_ENGINE_OPTIONS: dict[str, Any] = {"pool_size": 1, "max_overflow": 0, "pool_recycle": 300}


def _display(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


# ----------------------------------------------------------------------- migrations


# Alembic's `context` and `op` are module globals: one migration at a time per process.
_MIGRATE_LOCK = threading.Lock()
# Across processes: PostgreSQL runs concurrent CREATE TABLEs side by side and fails all but one,
# so a migration first takes this transaction-scoped advisory lock; the next process then finds
# the schema at head. (SQLite gets the same effect from BEGIN IMMEDIATE.)
PG_MIGRATION_LOCK_KEY = 0x616E696D  # "anim"


def alembic_config(url: str):
    """Alembic's Config, built in code from the migrations shipped in the package."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["url"] = url
    return cfg


def head_revision() -> str:
    """The schema revision this version of animegen expects."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The database's revision, or None when it was never migrated."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url: str | Engine, revision: str = "head", sql: bool = False) -> None:
    """Migrate the database at ``url`` to ``revision`` (``sql=True`` prints the SQL instead)."""
    from alembic import command

    if sql:
        command.upgrade(alembic_config(str(url) if isinstance(url, str) else url.url), revision, sql=True)
        return
    engine = make_engine(url) if isinstance(url, str) else url
    try:
        with _MIGRATE_LOCK, engine.connect() as conn:
            conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK_KEY})
                cfg = alembic_config(str(engine.url))
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
    finally:
        if isinstance(url, str):
            engine.dispose()


# --------------------------------------------------------------------------- cursor


def encode_cursor(created_at: datetime, id: str) -> str:
    raw = f"{created_at.astimezone(timezone.utc).isoformat()}|{id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Raises ValueError("invalid cursor") for anything ``encode_cursor`` didn't make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, id = raw.split("|")
        created_at = datetime.fromisoformat(stamp)
        if created_at.tzinfo is None or not ID_RE.fullmatch(id):
            raise ValueError("invalid cursor")
        # By range: year 1 at +14:00 parses, then overflows in astimezone (and in the database).
        created_at = created_at.astimezone(timezone.utc)
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError) as err:
        raise ValueError("invalid cursor") from err
    if not CURSOR_YEARS[0] <= created_at.year <= CURSOR_YEARS[1]:
        raise ValueError("invalid cursor")
    return created_at, id


# ---------------------------------------------------------------------------- store


def _parse_time(value: str | datetime) -> datetime:
    stamp = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    if stamp.tzinfo is None:
        raise ValueError(f"created_at must be UTC with its offset (e.g. '...+00:00'), got {value!r}")
    return stamp


class RecordStore:
    """Generation records behind a SQLAlchemy URL.

    ``create=True`` (the default) migrates an empty database to the current schema,
    so the embedded SQLite file needs no set-up. Any database at another revision
    raises ``SchemaError`` naming the command that upgrades it.
    """

    def __init__(self, url: str, *, create: bool = True, engine_options: dict[str, Any] | None = None,
                 verify: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url, **(engine_options or {}))
        try:
            self._ensure_schema(create)
            if verify:
                self.verify()
        except DatabaseError as err:
            self.engine.dispose()
            if isinstance(err, OperationalError) or self.engine.dialect.name != "sqlite":
                raise  # locked, unreachable, refused: not corruption
            # "file is not a database", "database disk image is malformed": one line, no traceback
            raise CorruptDatabaseError(self._corrupt(str(err.orig).splitlines()[0])) from None
        except CorruptDatabaseError:
            self.engine.dispose()
            raise

    def _corrupt(self, reason: str) -> str:
        return (f"{_display(self.url)} is not a usable animegen database ({reason[:200]}). Move it aside or "
                "restore a backup, then start again; `python -m animegen_utils.serve check` verifies it.")

    def verify(self) -> None:
        """SQLite: ``PRAGMA quick_check`` (every page readable); raises ``CorruptDatabaseError``.

        PostgreSQL checks its own pages; nothing is done there.
        """
        if self.engine.dialect.name != "sqlite":
            return
        with self.engine.connect() as conn:
            rows = [r[0] for r in conn.exec_driver_sql("PRAGMA quick_check").fetchall()]
        if rows != ["ok"]:
            raise CorruptDatabaseError(self._corrupt(f"integrity check: {'; '.join(rows[:3])}"))

    def ping(self) -> None:
        """One cheap read (for ``/healthz``); raises the database's error when it can't answer."""
        with Session(self.engine) as session:
            session.execute(select(Generation.id).order_by(Generation.created_at.desc()).limit(1)).all()

    def __repr__(self) -> str:
        return f"RecordStore({_display(self.url)!r})"

    def _ensure_schema(self, create: bool) -> None:
        head = head_revision()
        current = current_revision(self.engine)
        if current == head:
            return
        hint = UPGRADE_HINT.format(url=_display(self.url))
        if current is None:
            tables = set(inspect(self.engine).get_table_names())
            # Read again after the tables: another process migrating right now may have committed
            # between the two reads, and its tables must not be taken for someone else's.
            current = current_revision(self.engine)
            if current == head:
                return
        if current is None:
            if tables and tables != {"alembic_version"}:
                raise SchemaError(
                    f"{_display(self.url)} has tables ({', '.join(sorted(tables))}) but no animegen schema "
                    "revision. Point --database-url at an empty database, or at one made by animegen."
                )
            if create:
                try:
                    upgrade(self.engine)
                except DBAPIError:
                    # Another process creating the same schema at the same moment wins the race;
                    # the database must now be at head, or the error was something else.
                    if current_revision(self.engine) != head:
                        raise
                return
            raise SchemaError(f"{_display(self.url)} has no animegen schema yet. Create it with: {hint}")
        from alembic.script import ScriptDirectory
        from alembic.util import CommandError

        try:
            ScriptDirectory.from_config(alembic_config(self.url)).get_revision(current)
        except CommandError:
            raise SchemaError(
                f"{_display(self.url)} is at schema revision {current!r}, which this version of animegen "
                f"does not know (it knows up to {head!r}): it was made by a newer animegen. Upgrade animegen."
            ) from None
        raise SchemaError(
            f"{_display(self.url)} is at schema revision {current!r}; this version of animegen needs "
            f"{head!r}. Upgrade it with: {hint}"
        )

    def close(self) -> None:
        self.engine.dispose()

    def add(self, record: dict[str, Any]) -> dict[str, Any]:
        """Insert one record (the keys of ``Generation.to_dict``); returns it as stored."""
        missing = [k for k in REQUIRED if k not in record]
        if missing:
            raise ValueError(f"record is missing {missing}; a record needs {list(REQUIRED)}")
        unknown = sorted(set(record) - set(REQUIRED) - {"api_key_id"})
        if unknown:
            raise ValueError(f"record has unknown fields {unknown}; valid: {list(REQUIRED) + ['api_key_id']}")
        if not ID_RE.fullmatch(str(record["id"])):
            raise ValueError(f"record id must be 32 lowercase hex characters (uuid4().hex), got {record['id']!r}")
        request = dict(record["request"])
        row = Generation(
            **{k: record[k] for k in REQUIRED if k not in ("created_at", "request")},
            created_at=_parse_time(record["created_at"]),
            request=request,
            emotion=request.get("emotion"),
            style=request.get("style"),
            api_key_id=record.get("api_key_id"),
        )
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            session.add(row)
        return row.to_dict()

    def get(self, id: str) -> dict[str, Any] | None:
        """The record with this id, or None (also for ids that can't be ours)."""
        if not isinstance(id, str) or not ID_RE.fullmatch(id):
            return None
        with Session(self.engine) as session:
            row = session.get(Generation, id)
            return None if row is None else row.to_dict()

    def list(
        self,
        limit: int = 20,
        cursor: str | None = None,
        emotion: str | None = None,
        style: str | None = None,
    ) -> Page:
        """Newest first, ``limit`` (1..MAX_LIMIT) at a time.

        Keyset pagination on (created_at, id): pass ``page.next_cursor`` back for
        the next page. Rows inserted meanwhile never shift a page, so paging shows
        each row that existed when it began exactly once.
        """
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
        query = select(Generation).order_by(Generation.created_at.desc(), Generation.id.desc())
        if cursor is not None:
            created_at, id = decode_cursor(cursor)
            query = query.where(
                or_(
                    Generation.created_at < created_at,
                    (Generation.created_at == created_at) & (Generation.id < id),
                )
            )
        if emotion is not None:
            query = query.where(Generation.emotion == emotion)
        if style is not None:
            query = query.where(Generation.style == style)
        with Session(self.engine) as session:
            rows = session.scalars(query.limit(limit + 1)).all()
            items = [row.to_dict() for row in rows[:limit]]
        more = len(rows) > limit
        next_cursor = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if more else None
        return Page(items, next_cursor)

    def delete(self, id: str) -> bool:
        """Delete one record; True when there was one."""
        if not isinstance(id, str) or not ID_RE.fullmatch(id):
            return False
        with self.engine.begin() as conn:
            return conn.execute(delete(Generation).where(Generation.id == id)).rowcount == 1

    def ids(self) -> list[str]:
        """Every record's id, sorted."""
        with Session(self.engine) as session:
            return sorted(session.scalars(select(Generation.id)))

    def storage_keys(self) -> dict[str, str]:
        """``{id: storage_key}`` for every record (for the consistency check)."""
        with Session(self.engine) as session:
            return {id: key for id, key in session.execute(select(Generation.id, Generation.storage_key))}

    def count(self) -> int:
        with Session(self.engine) as session:
            return session.scalar(select(func.count()).select_from(Generation))


# ---------------------------------------------------------------------- consistency


@dataclass
class CheckReport:
    """What ``check`` found; ``fixed`` says whether it repaired it."""

    records_without_image: list[str] = field(default_factory=list)  # record ids
    images_without_record: list[str] = field(default_factory=list)  # storage keys
    temp_files: list[str] = field(default_factory=list)  # a crashed write's leftovers (local storage)
    fixed: bool = False

    @property
    def ok(self) -> bool:
        return not (self.records_without_image or self.images_without_record or self.temp_files)

    def __str__(self) -> str:
        lines = [
            f"records without image: {len(self.records_without_image)}",
            *(f"  record {i}" for i in self.records_without_image),
            f"images without record: {len(self.images_without_record)}",
            *(f"  image {k}" for k in self.images_without_record),
            f"temp files older than {TEMP_MAX_AGE_S:g} s: {len(self.temp_files)}",
            *(f"  temp {k}" for k in self.temp_files),
        ]
        if not self.ok:
            lines.append("repaired: deleted the records, images and temp files above" if self.fixed
                         else "run with --fix to delete them")
        return "\n".join(lines)


def check(storage, records: RecordStore, fix: bool = False) -> CheckReport:
    """List, and with ``fix=True`` delete, records without an image and images without a record.

    Only keys of the service's own form (``<uuid4 hex>.png``) are considered, so
    nothing else in a shared bucket is ever touched. Without ``fix`` nothing changes.

    Safe beside a running service: an image is written before its record, so
    record ids are listed before the storage keys (a record seen then has its
    image) and again after them (an image seen may have just got its record);
    each orphan image is looked up once more right before it is deleted.
    """
    before = records.storage_keys()
    images = {key for key in storage.keys() if KEY_RE.fullmatch(key)}
    after = set(records.storage_keys().values())
    # Local storage writes "<root>/.tmp-*" and renames it; one left for a minute is a crash's.
    temp_files = getattr(storage, "temp_files", None)
    report = CheckReport(
        records_without_image=sorted(id for id, key in before.items() if key not in images),
        images_without_record=sorted(images - after),
        temp_files=temp_files(TEMP_MAX_AGE_S) if temp_files else [],
    )
    if fix:
        for id in report.records_without_image:
            records.delete(id)
        for key in report.images_without_record:
            if records.get(KEY_RE.fullmatch(key).group(1)) is None:
                storage.delete(key)
        for name in report.temp_files:
            storage.delete_temp(name)
        report.fixed = True
    return report
