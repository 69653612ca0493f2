"""Generation records: every test runs against SQLite and against a real PostgreSQL.

The PostgreSQL server is Debian's (``postgresql`` in .ci/apt-packages.txt), started
once per session on 127.0.0.1 in a temporary data directory and stopped at the end;
each test gets a fresh database in it.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

sqlalchemy = pytest.importorskip("sqlalchemy")  # the serve extra

from animegen_utils.prompts import EMOTIONS  # noqa: E402
from animegen_utils.serve import records as rec  # noqa: E402
from animegen_utils.serve.records import RecordStore, SchemaError, check  # noqa: E402
from animegen_utils.serve.storage import LocalStorage  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


# ------------------------------------------------------------------- PostgreSQL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server():
    """``(host, port)`` of a throw-away PostgreSQL cluster on loopback."""
    if not PG_BIN:
        pytest.fail("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: "
                    "apt-get install postgresql (listed in .ci/apt-packages.txt)")
    bin_dir = Path(PG_BIN[-1])
    base = Path(tempfile.mkdtemp(prefix="animegen-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        pw = pwd.getpwnam("postgres")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, log = base / "data", base / "server.log"
    subprocess.run([*as_user, bin_dir / "initdb", "-D", data, "-U", "animegen", "--auth=trust",
                    "-E", "UTF8", "--no-sync", "--no-instructions"], check=True, capture_output=True)
    port = _free_port()
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off -c max_connections=60"
    started = subprocess.run([*as_user, bin_dir / "pg_ctl", "-D", data, "-l", log, "-o", opts, "-w", "-t", "60",
                              "start"], capture_output=True, text=True)
    try:
        if started.returncode != 0:
            pytest.fail(f"pg_ctl start failed: {started.stderr}\n{log.read_text() if log.exists() else ''}")
        yield "127.0.0.1", port
    finally:
        subprocess.run([*as_user, bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A URL to an empty database: a fresh SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'records.sqlite3'}"
        return
    import psycopg

    host, port = request.getfixturevalue("postgres_server")
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(host=host, port=port, user="animegen", dbname="postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"postgresql+psycopg://animegen@{host}:{port}/{name}"
    with psycopg.connect(host=host, port=port, user="animegen", dbname="postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture()
def store(db_url):
    records = RecordStore(db_url)
    yield records
    records.close()


# ------------------------------------------------------------------------ helpers

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def make_record(seed: int = 0, emotion: str = "happy", style: str = "casual",
                created_at: datetime | None = None, id: str | None = None) -> dict:
    id = id or uuid.uuid4().hex
    return {
        "id": id,
        "created_at": (created_at or datetime.now(timezone.utc)).isoformat(),
        "request": {"emotion": emotion, "style": style, "seed": seed, "steps": 4, "character": None},
        "prompt": f"masterpiece, 1girl, {emotion}, {style}",
        "negative_prompt": "lowres, bad anatomy",
        "seed": seed,
        "steps": 4,
        "guidance": 7.5,
        "scheduler": "dpm++",
        "model": "tiny",
        "storage_key": f"{id}.png",
        "duration_s": 0.25,
        "api_key_id": None,
    }


def page_all(records: RecordStore, limit: int, **filters) -> list[dict]:
    seen, cursor = [], None
    for _ in range(1000):  # bounded: a cursor loop must end
        page = records.list(limit=limit, cursor=cursor, **filters)
        seen += page.items
        cursor = page.next_cursor
        if cursor is None:
            return seen
    raise AssertionError("pagination did not end")


# ----------------------------------------------------------------------- schema


def test_migrations_up_from_empty_match_the_models(db_url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = rec.make_engine(db_url)
    assert rec.current_revision(engine) is None
    assert sqlalchemy.inspect(engine).get_table_names() == []
    rec.upgrade(db_url)
    assert rec.current_revision(engine) == rec.head_revision() == "0001"
    assert set(sqlalchemy.inspect(engine).get_table_names()) == {"alembic_version", "generations"}
    with engine.connect() as conn:  # the migration builds exactly what the models describe
        assert compare_metadata(MigrationContext.configure(conn), rec.Base.metadata) == []
    rec.upgrade(db_url)  # idempotent
    assert rec.current_revision(engine) == "0001"
    engine.dispose()


def test_empty_database_is_created_on_first_use_unless_told_not_to(db_url):
    with pytest.raises(SchemaError, match=r"db upgrade --database-url"):
        RecordStore(db_url, create=False)
    records = RecordStore(db_url)  # the newcomer's path: no set-up
    assert rec.current_revision(records.engine) == "0001"
    records.close()
    RecordStore(db_url, create=False).close()  # now at head: accepted


def test_services_starting_together_on_an_empty_database(db_url):
    """Four processes open the same empty database at once: one migrates, all start."""
    go_r, go_w = os.pipe()
    pids = []
    for _ in range(4):
        pid = os.fork()  # separate processes, as separate service instances would be
        if pid == 0:
            code = 1
            try:
                os.close(go_w)
                os.read(go_r, 1)  # all wait here, then race
                store = RecordStore(db_url)
                code = 0 if rec.current_revision(store.engine) == "0001" else 2
            except BaseException:  # shown in the test's output, then the child exits 1
                import traceback

                traceback.print_exc()
            finally:
                os._exit(code)
        pids.append(pid)
    os.close(go_r)
    os.write(go_w, b"xxxx")
    os.close(go_w)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    assert codes == [0, 0, 0, 0]
    assert rec.current_revision(rec.make_engine(db_url)) == "0001"


def test_refuses_a_schema_it_does_not_know(db_url):
    engine = rec.make_engine(db_url)
    rec.upgrade(engine)
    with engine.begin() as conn:  # a database migrated by a newer animegen
        conn.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = '0099'"))
    with pytest.raises(SchemaError, match=r"'0099'.*newer animegen"):
        RecordStore(db_url)
    with engine.begin() as conn:  # someone else's tables, no revision
        conn.execute(sqlalchemy.text("DROP TABLE alembic_version"))
    with pytest.raises(SchemaError, match=r"no animegen schema revision"):
        RecordStore(db_url)
    engine.dispose()


def test_db_commands_and_the_service_refusing_an_unknown_schema(db_url, tmp_path, capsys):
    from animegen_utils.serve.__main__ import cli

    storage = ["--storage-dir", str(tmp_path / "images"), "--database-url", db_url]
    assert cli(["db", "current", *storage]) == 0
    assert "current:  none (empty)" in capsys.readouterr().out
    assert cli(["db", "upgrade", *storage]) == 0
    assert "current:  0001" in capsys.readouterr().out
    RecordStore(db_url, create=False).close()
    assert cli(["check", *storage]) == 0
    assert "records without image: 0" in capsys.readouterr().out

    engine = rec.make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    # The service refuses before loading any model, and says why.
    assert cli(["serve", "--port", "1", *storage]) == 2
    err = capsys.readouterr().err
    assert "'0099'" in err and "newer animegen" in err
    assert cli(["check", *storage]) == 2


def test_an_old_schema_names_the_upgrade_command(db_url, tmp_path, capsys, monkeypatch):
    from animegen_utils.serve.__main__ import cli

    storage = ["--storage-dir", str(tmp_path / "images"), "--database-url", db_url]
    engine = rec.make_engine(db_url)
    with engine.begin() as conn:  # a database stamped at an older revision of ours
        conn.execute(sqlalchemy.text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"))
        conn.execute(sqlalchemy.text("INSERT INTO alembic_version VALUES ('0001')"))
    engine.dispose()
    # There is one revision so far; stand in for the next release, whose head is 0002.
    monkeypatch.setattr(rec, "head_revision", lambda: "0002")
    with pytest.raises(SchemaError, match=r"at schema revision '0001'; .* needs '0002'.*db upgrade"):
        RecordStore(db_url)
    assert cli(["serve", "--port", "1", *storage]) == 2
    assert "python -m animegen_utils.serve db upgrade --database-url" in capsys.readouterr().err


# ------------------------------------------------------------------------ store


def test_add_get_roundtrip(store):
    record = make_record(seed=1234567890123, emotion="sad", style="formal")
    record["request"]["character"] = {"hair_color": "blue hair", "eye_color": "red eyes", "accessories": []}
    record["api_key_id"] = "a1b2c3d4e5f6"
    stored = store.add(record)
    got = store.get(record["id"])
    assert got == stored
    assert got == {**record, "created_at": datetime.fromisoformat(record["created_at"]).isoformat()}
    assert datetime.fromisoformat(got["created_at"]).utcoffset() == timedelta(0)
    assert store.get(uuid.uuid4().hex) is None
    assert store.get("../../etc/passwd") is None
    assert store.count() == 1 and store.ids() == [record["id"]]


def test_add_validates(store):
    with pytest.raises(ValueError, match="missing.*seed"):
        store.add({k: v for k, v in make_record().items() if k != "seed"})
    with pytest.raises(ValueError, match="unknown fields.*api_key'"):
        store.add({**make_record(), "api_key": "secret"})
    with pytest.raises(ValueError, match="32 lowercase hex"):
        store.add(make_record(id="not-an-id"))
    with pytest.raises(ValueError, match="UTC"):
        store.add({**make_record(), "created_at": "2026-01-01T00:00:00"})
    record = make_record()
    store.add(record)
    with pytest.raises(sqlalchemy.exc.IntegrityError):
        store.add(record)
    assert store.count() == 1


def test_created_at_offsets_are_normalised_to_utc(store):
    later = make_record(seed=1, created_at=datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc))
    # 11:30 UTC written as 13:30+02:00: older than `later` despite the bigger wall-clock time.
    earlier = make_record(seed=2)
    earlier["created_at"] = "2026-01-01T13:30:00+02:00"
    store.add(later)
    store.add(earlier)
    items = store.list(limit=10).items
    assert [r["seed"] for r in items] == [1, 2]
    assert items[1]["created_at"] == "2026-01-01T11:30:00+00:00"


def test_pagination_no_duplicates_no_gaps_while_rows_arrive(store):
    # 30 rows; several share a timestamp, so the id breaks ties.
    original = [make_record(seed=i, created_at=T0 + timedelta(seconds=i // 3)) for i in range(30)]
    for r in original:
        store.add(r)
    expected = sorted(original, key=lambda r: (r["created_at"], r["id"]), reverse=True)

    seen, cursor, arrived = [], None, []
    for step in range(100):
        page = store.list(limit=7, cursor=cursor)
        seen += page.items
        # Two newer rows arrive between pages (the service stamps rows when it writes them).
        for k in range(2):
            fresh = make_record(seed=1000 + 2 * step + k, created_at=T0 + timedelta(seconds=60 + step))
            store.add(fresh)
            arrived.append(fresh)
        cursor = page.next_cursor
        if cursor is None:
            break
    ids = [r["id"] for r in seen]
    assert len(ids) == len(set(ids)), "duplicates"
    assert ids == [r["id"] for r in expected], "gaps or wrong order"
    # A fresh walk sees the newcomers too, newest first, still once each.
    again = page_all(store, limit=8)
    newcomers = sorted(arrived, key=lambda r: (r["created_at"], r["id"]), reverse=True)
    assert [r["id"] for r in again] == [r["id"] for r in newcomers] + ids


def test_pagination_with_a_concurrent_writer(store):
    import threading

    for i in range(40):
        store.add(make_record(seed=i, created_at=T0 + timedelta(milliseconds=i)))
    before = {r["id"] for r in page_all(store, limit=100)}
    stop = threading.Event()

    def writer():
        n = 0
        while not stop.is_set() and n < 200:  # bounded
            store.add(make_record(seed=10_000 + n))  # created now: newer than everything before
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen = page_all(store, limit=3)
    finally:
        stop.set()
        thread.join(timeout=30)
    ids = [r["id"] for r in seen]
    assert len(ids) == len(set(ids))
    assert before <= set(ids)  # nothing that existed is skipped
    stamps = [(r["created_at"], r["id"]) for r in seen]
    assert stamps == sorted(stamps, reverse=True)


def test_filters(store):
    combos = [("happy", "casual"), ("happy", "formal"), ("sad", "casual"), ("angry", "school_uniform")]
    for i in range(24):
        emotion, style = combos[i % 4]
        store.add(make_record(seed=i, emotion=emotion, style=style, created_at=T0 + timedelta(seconds=i)))

    def seeds(**f):
        return [r["seed"] for r in page_all(store, limit=4, **f)]

    assert seeds(emotion="happy") == [i for i in reversed(range(24)) if i % 4 in (0, 1)]
    assert seeds(style="casual") == [i for i in reversed(range(24)) if i % 4 in (0, 2)]
    assert seeds(emotion="happy", style="formal") == [i for i in reversed(range(24)) if i % 4 == 1]
    assert seeds(emotion="surprised") == []
    assert seeds() == list(reversed(range(24)))
    assert all(r["request"]["emotion"] == "sad" for r in page_all(store, limit=5, emotion="sad"))


def test_limits_and_bad_cursors(store):
    for i in range(3):
        store.add(make_record(seed=i, created_at=T0 + timedelta(seconds=i)))
    with pytest.raises(ValueError, match="between 1 and 100"):
        store.list(limit=0)
    with pytest.raises(ValueError, match="between 1 and 100"):
        store.list(limit=rec.MAX_LIMIT + 1)
    for bad in ["garbage", "", "!!!", rec.encode_cursor(T0, "x" * 32), "MjAyNnw"]:
        with pytest.raises(ValueError, match="invalid cursor"):
            store.list(cursor=bad)
    last = store.list(limit=3)
    assert len(last.items) == 3 and last.next_cursor is None
    first = store.list(limit=2)
    assert [r["seed"] for r in store.list(limit=2, cursor=first.next_cursor).items] == [0]


def test_delete(store):
    a, b = make_record(seed=1), make_record(seed=2)
    store.add(a)
    store.add(b)
    assert store.delete(a["id"]) is True
    assert store.delete(a["id"]) is False
    assert store.delete("nope") is False
    assert store.get(a["id"]) is None
    assert store.ids() == [b["id"]]
    assert [r["id"] for r in store.list().items] == [b["id"]]


# ----------------------------------------------------------------- consistency


def _png(seed: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (seed % 256, 0, 0)).save(buf, format="PNG")
    return buf.getvalue()


def test_check_lists_orphans_on_both_sides_and_fixes_only_when_asked(store, tmp_path):
    storage = LocalStorage(tmp_path / "images")
    good = [make_record(seed=i) for i in range(3)]
    for r in good:
        storage.put(r["storage_key"], _png(r["seed"]))
        store.add(r)
    lost_image = make_record(seed=10)  # record whose image was deleted behind the service's back
    storage.put(lost_image["storage_key"], _png(10))
    store.add(lost_image)
    storage.delete(lost_image["storage_key"])
    stray_key = f"{uuid.uuid4().hex}.png"  # image whose record never arrived
    storage.put(stray_key, _png(11))
    storage.put("README.txt", b"not ours")  # a file that isn't the service's: never touched

    state = lambda: (sorted(storage.keys()), store.ids())  # noqa: E731
    before = state()
    report = check(storage, store)
    assert report.records_without_image == [lost_image["id"]]
    assert report.images_without_record == [stray_key]
    assert not report.ok and not report.fixed
    assert "run with --fix" in str(report)
    assert state() == before  # nothing changed without fix

    fixed = check(storage, store, fix=True)
    assert fixed.fixed and fixed.records_without_image == [lost_image["id"]]
    assert store.ids() == sorted(r["id"] for r in good)
    assert sorted(storage.keys()) == sorted([r["storage_key"] for r in good] + ["README.txt"])
    assert check(storage, store).ok


class StallingStorage(LocalStorage):
    """A disk that stalls in the middle of writing an image (the kill comes then)."""

    def put(self, key, data, content_type="image/png"):
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".tmp-partial", "wb") as f:
            f.write(data[:10])
            f.flush()
            _stall()


def _stall(*_):
    os.write(_READY_FD[0], b"ready\n")
    time.sleep(60)  # killed long before


_READY_FD = [-1]


@pytest.mark.parametrize("stage", ["image", "record"])
def test_kill_during_a_write_leaves_no_orphan_record(db_url, tmp_path, stage):
    """SIGKILL a process in the middle of ``save_generation``: while the image is being
    written, or with the record's INSERT sent and its COMMIT not yet. Either way no
    record survives without its image, and ``check --fix`` removes the stray image."""
    from sqlalchemy import event

    from animegen_utils.serve.core import save_generation

    RecordStore(db_url).close()  # migrate first, so the child only writes
    images = tmp_path / "images"
    record = make_record(seed=7)
    read_fd, write_fd = os.pipe()
    pid = os.fork()  # a fork, not a fresh interpreter: no second torch import
    if pid == 0:
        try:
            os.close(read_fd)
            _READY_FD[0] = write_fd
            storage = (StallingStorage if stage == "image" else LocalStorage)(images)
            records = RecordStore(db_url)
            event.listen(records.engine, "commit", _stall)  # fires before COMMIT reaches the server
            save_generation(storage, records, record["id"], b"\x89PNG" + b"x" * 100, record)
        finally:
            os._exit(3)  # never reached when the kill lands
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as ready:
            assert ready.readline().strip() == "ready"  # the child is mid-write
        if stage == "record":  # the image is in, the INSERT was sent, the COMMIT not yet
            assert (images / record["storage_key"]).exists()
    finally:
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL

    records = RecordStore(db_url)
    storage = LocalStorage(images)
    assert records.ids() == []  # no record, so none without its image
    report = check(storage, records)
    assert report.records_without_image == []
    assert report.images_without_record == ([record["storage_key"]] if stage == "record" else [])
    check(storage, records, fix=True)
    assert storage.keys() == [] and check(storage, records).ok
    records.close()


def test_a_failed_record_write_removes_the_image(store, tmp_path):
    from animegen_utils.serve.core import save_generation

    storage = LocalStorage(tmp_path / "images")
    first = make_record(seed=1)
    save_generation(storage, store, first["id"], _png(1), first)
    clash = make_record(seed=2, id=uuid.uuid4().hex)
    clash["storage_key"] = first["storage_key"]  # violates the unique storage key
    clash_key = f"{clash['id']}.png"
    with pytest.raises(sqlalchemy.exc.IntegrityError):
        save_generation(storage, store, clash["id"], _png(2), clash)
    assert not storage.exists(clash_key)
    assert storage.keys() == [first["storage_key"]] and store.ids() == [first["id"]]
    assert check(storage, store).ok


def test_default_database_sits_beside_the_image_folder(tmp_path):
    url = rec.default_database_url(tmp_path / "serve" / "images")
    assert url == f"sqlite:///{tmp_path / 'serve' / 'images.sqlite3'}"
    records = RecordStore(url)  # creates the folder and the file
    assert (tmp_path / "serve" / "images.sqlite3").is_file()
    records.close()


# --------------------------------------------------------------- the service's API

STEPS = 2
KEY = "history-key-0123456789"


@pytest.fixture(scope="module")
def pipe():
    from animegen_utils.serve.core import load_model

    return load_model("tiny")


def make_app(tmp_path, pipe, db_url, **settings):
    from animegen_utils.serve.app import create_app
    from animegen_utils.serve.settings import ServeSettings
    from animegen_utils.serve.storage import StorageSettings

    return create_app(ServeSettings(storage=StorageSettings(root=str(tmp_path / "images")), database_url=db_url,
                                    **settings), pipe=pipe)


@pytest.fixture()
def client(tmp_path, pipe, db_url):
    from fastapi.testclient import TestClient

    app = make_app(tmp_path, pipe, db_url)
    with TestClient(app, base_url="http://localhost") as c:
        yield c
    app.state.records.close()


def post(client, emotion="happy", style="casual", seed=0, **extra):
    r = client.post("/api/generate", json={"emotion": emotion, "style": style, "seed": seed, "steps": STEPS, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def test_history_api_lists_filters_pages_gets_and_deletes(client, tmp_path):
    made = [post(client, "happy", "casual", 1), post(client, "sad", "formal", 2),
            post(client, "happy", "formal", 3)]
    listing = client.get("/api/generations").json()
    assert [r["seed"] for r in listing["items"]] == [3, 2, 1] and listing["next_cursor"] is None
    newest = listing["items"][0]
    assert newest["id"] == made[2]["id"] and newest["image_url"] == made[2]["image_url"]
    assert newest["prompt"] == made[2]["prompt"] and newest["negative_prompt"] == made[2]["negative_prompt"]
    assert newest["request"]["emotion"] == "happy" and newest["request"]["style"] == "formal"
    assert newest["steps"] == STEPS and newest["model"] == "tiny" and newest["duration_s"] > 0
    assert "storage_key" not in newest and newest["api_key_id"] is None

    assert [r["seed"] for r in client.get("/api/generations?emotion=happy").json()["items"]] == [3, 1]
    assert [r["seed"] for r in client.get("/api/generations?style=formal&emotion=sad").json()["items"]] == [2]
    first = client.get("/api/generations?limit=2").json()
    assert [r["seed"] for r in first["items"]] == [3, 2]
    rest = client.get("/api/generations", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [r["seed"] for r in rest["items"]] == [1] and rest["next_cursor"] is None

    one = client.get(f"/api/generations/{made[1]['id']}")
    assert one.status_code == 200 and one.json()["seed"] == 2 and one.json()["request"]["style"] == "formal"

    for bad in ["limit=0", "limit=101", "limit=x", "cursor=" + "x" * 201]:
        assert client.get(f"/api/generations?{bad}").status_code == 422, bad
    r = client.get("/api/generations?emotion=bored")
    [err] = r.json()["detail"]  # FastAPI's list of errors, as the OpenAPI document says
    assert r.status_code == 422 and err["loc"] == ["query", "emotion"] and "Valid choices: happy" in err["msg"]
    assert client.get("/api/generations?style=bikini").status_code == 422
    r = client.get("/api/generations?cursor=not-a-cursor")
    assert r.status_code == 400 and r.json()["detail"] == "invalid cursor"
    for bad_id in ["nope", "0" * 32, made[0]["id"].upper(), "..%2f..%2fetc%2fpasswd"]:
        assert client.get(f"/api/generations/{bad_id}").status_code == 404, bad_id
        assert client.delete(f"/api/generations/{bad_id}").status_code == 404, bad_id

    gone = made[0]
    assert client.delete(f"/api/generations/{gone['id']}").status_code == 204
    assert client.get(f"/api/generations/{gone['id']}").status_code == 404
    assert client.get(gone["image_url"]).status_code == 404
    assert not (tmp_path / "images" / f"{gone['id']}.png").exists()
    assert client.delete(f"/api/generations/{gone['id']}").status_code == 404
    assert [r["seed"] for r in client.get("/api/generations").json()["items"]] == [3, 2]


def test_a_record_whose_image_was_deleted_answers_404(client):
    body = post(client, seed=5)
    storage = client.app.state.storage
    assert client.get(f"/api/generations/{body['id']}").status_code == 200
    storage.delete(f"{body['id']}.png")  # behind the service's back
    assert client.get(body["image_url"]).status_code == 404
    r = client.get(f"/api/generations/{body['id']}")
    assert r.status_code == 404 and "deleted" in r.json()["detail"]
    assert check(storage, client.app.state.records).records_without_image == [body["id"]]


def test_history_is_behind_the_api_key_and_records_its_id_never_the_key(tmp_path, pipe, db_url):
    from fastapi.testclient import TestClient

    from animegen_utils.serve.core import api_key_id

    app = make_app(tmp_path, pipe, db_url, api_key=KEY)
    with TestClient(app, base_url="http://localhost") as client:
        r = client.post("/api/generate", json={"emotion": "sad", "style": "casual", "seed": 9, "steps": STEPS},
                        headers={"X-API-Key": KEY})
        assert r.status_code == 200
        id = r.json()["id"]
        for method, path in [("GET", "/api/generations"), ("GET", f"/api/generations/{id}"),
                             ("DELETE", f"/api/generations/{id}")]:
            assert client.request(method, path).status_code == 401
            assert client.request(method, path, headers={"X-API-Key": "wrong-key-0000"}).status_code == 401
        record = client.get(f"/api/generations/{id}", headers={"Authorization": f"Bearer {KEY}"}).json()
        assert record["api_key_id"] == api_key_id(KEY) and len(record["api_key_id"]) == 12
        with app.state.records.engine.connect() as conn:  # the key is nowhere in the row
            row = conn.execute(sqlalchemy.text("SELECT * FROM generations")).one()
        assert KEY not in json.dumps([str(v) for v in row])
        assert client.delete(f"/api/generations/{id}", headers={"X-API-Key": KEY}).status_code == 204
        assert app.state.records.ids() == []
    app.state.records.close()


def test_history_survives_a_restart_with_no_set_up(tmp_path, pipe, db_url):
    """The newcomer's path: no --database-url gives a SQLite file beside the images."""
    from fastapi.testclient import TestClient

    url = None if db_url.startswith("sqlite") else db_url
    app = make_app(tmp_path, pipe, url)
    with TestClient(app, base_url="http://localhost") as client:
        made = post(client, "surprised", "school_uniform", 11)
    app.state.records.close()
    if url is None:
        assert (tmp_path / "images.sqlite3").is_file()
    again = make_app(tmp_path, pipe, url)  # a new process would do the same
    with TestClient(again, base_url="http://localhost") as client:
        [item] = client.get("/api/generations").json()["items"]
        assert item["id"] == made["id"] and item["seed"] == 11
        assert client.get(item["image_url"]).status_code == 200
    again.state.records.close()


def test_pages_link_the_history(client):
    gallery = client.get("/gallery")
    assert gallery.status_code == 200 and gallery.headers["content-type"].startswith("text/html")
    assert "/api/generations" in gallery.text and "next_cursor" in gallery.text
    assert 'href="/gallery"' in client.get("/").text
    assert "/api/generations" in client.get("/static/app.js").text
    paths = client.get("/openapi.json").json()["paths"]
    assert {"get"} <= set(paths["/api/generations"]) and {"get", "delete"} <= set(paths["/api/generations/{id}"])


def test_load_every_200_has_exactly_one_record_with_its_seed(tmp_path, pipe, db_url):
    """20 concurrent clients on a real loopback server; 200s and 503s only, and the records
    match the answers one to one: same ids, same seeds, no extra record, no lost one."""
    import httpx
    from concurrent.futures import ThreadPoolExecutor

    from animegen_utils.serve.background import ThreadedServer

    n_clients, per_client = 20, 2
    app = make_app(tmp_path, pipe, db_url, queue_size=4)

    def client_run(c: int) -> list[tuple[int, dict]]:
        out = []
        with httpx.Client(base_url=server.url, timeout=120) as http:
            for i in range(per_client):
                seed = 1000 * c + i
                r = http.post("/api/generate", json={"emotion": EMOTIONS[c % 5], "style": "casual", "seed": seed,
                                                     "steps": STEPS})
                out.append((r.status_code, r.json() | {"asked_seed": seed}))
        return out

    with ThreadedServer(app) as server:
        with ThreadPoolExecutor(n_clients) as pool:
            results = [x for batch in pool.map(client_run, range(n_clients)) for x in batch]
        assert {s for s, _ in results} <= {200, 503}
        ok = [body for s, body in results if s == 200]
        assert ok
        with httpx.Client(base_url=server.url, timeout=60) as http:
            listed = []
            cursor = None
            for _ in range(100):
                page = http.get("/api/generations", params={"limit": 7, **({"cursor": cursor} if cursor else {})}).json()
                listed += page["items"]
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            for body in ok:
                record = http.get(f"/api/generations/{body['id']}").json()
                assert record["seed"] == body["seed"] == body["asked_seed"]
                assert record["request"]["emotion"] == EMOTIONS[body["asked_seed"] // 1000 % 5]
                assert record["prompt"] == body["prompt"] and record["image_url"] == body["image_url"]
    records = app.state.records
    assert sorted(records.ids()) == sorted(b["id"] for b in ok)  # exactly one record per 200
    assert sorted(r["id"] for r in listed) == sorted(b["id"] for b in ok)  # and the API pages them all once
    assert check(app.state.storage, records).ok
    records.close()


def test_lambda_writes_the_same_records(tmp_path, db_url, pipe, monkeypatch):
    from animegen_utils.serve import lambda_handler as lh

    RecordStore(db_url).close()  # migrated at deploy time; Lambda itself never migrates
    monkeypatch.setenv("ANIMEGEN_DATABASE_URL", db_url)
    monkeypatch.setenv("ANIMEGEN_STORAGE_DIR", str(tmp_path / "images"))
    monkeypatch.delenv("ANIMEGEN_S3_BUCKET", raising=False)
    monkeypatch.setattr(lh, "_CORE", None)  # a cold container
    plain = lh.lambda_handler({"emotion": "angry", "seed": 21, "steps": STEPS})
    gateway = lh.lambda_handler({"body": json.dumps({"style": "formal", "seed": 22, "steps": STEPS})})
    bad = lh.lambda_handler({"emotion": "bored"})
    assert plain["statusCode"] == 200 and gateway["statusCode"] == 200 and bad["statusCode"] == 400
    records = lh._CORE.records
    assert records.engine.pool.size() == 1  # one connection per container
    answers = [plain["body"], json.loads(gateway["body"])]
    for body in answers:
        record = records.get(body["id"])
        assert record["seed"] == body["seed"] and record["prompt"] == body["prompt"]
    assert records.get(answers[0]["id"])["request"]["emotion"] == "angry"
    assert records.get(answers[1]["id"])["request"]["style"] == "formal"
    assert sorted(records.ids()) == sorted(b["id"] for b in answers)
    assert check(LocalStorage(tmp_path / "images"), records).ok
    records.close()


def test_history_and_gallery_in_a_real_browser(tmp_path, pipe, db_url):
    """The page's history comes back after a restart and a reload; the gallery pages, filters and deletes."""
    import httpx

    pytest.importorskip("playwright")
    from playwright.sync_api import sync_playwright

    from animegen_utils.serve.background import ThreadedServer
    from animegen_utils.serve.browser import chromium_path, launch_chromium

    if chromium_path() is None:
        pytest.fail("No Chromium: install Debian's `chromium` package (listed in .ci/apt-packages.txt)")
    with ThreadedServer(make_app(tmp_path, pipe, db_url)) as server:
        made = [httpx.post(f"{server.url}/api/generate", json={"emotion": e, "style": "casual", "seed": s,
                                                                "steps": STEPS}, timeout=120).json()
                for e, s in [("happy", 1), ("sad", 2), ("happy", 3)]]
    port = server.port
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            # A new service on the same storage and database: the history is still there.
            restarted = make_app(tmp_path, pipe, db_url)
            with ThreadedServer(restarted, port=port) as server:
                page = browser.new_page()
                page.set_default_timeout(120_000)
                # Functions, not expression strings: Playwright evals those, which the pages' CSP forbids.
                page.goto(server.url)
                page.wait_for_function("() => document.querySelectorAll('#history li img').length === 3")
                srcs = page.eval_on_selector_all("#history li img", "els => els.map(e => e.getAttribute('src'))")
                assert srcs == [m["image_url"] for m in reversed(made)]
                page.reload()
                page.wait_for_function("() => document.querySelectorAll('#history li img').length === 3")

                page.goto(f"{server.url}/gallery?limit=2")
                page.wait_for_function("() => document.querySelectorAll('#grid li').length === 2")
                assert page.is_visible("#more")
                page.click("#more")
                page.wait_for_function("() => document.querySelectorAll('#grid li').length === 3")
                assert page.is_hidden("#more")
                ids = page.eval_on_selector_all("#grid li", "els => els.map(e => e.dataset.id)")
                assert ids == [m["id"] for m in reversed(made)]
                page.wait_for_function("() => [...document.querySelectorAll('#grid img')].every(i => i.naturalWidth > 0)")

                page.select_option("#emotion", "sad")
                page.wait_for_function("() => document.querySelectorAll('#grid li').length === 1")
                assert page.get_attribute("#grid li", "data-id") == made[1]["id"]
                page.on("dialog", lambda dialog: dialog.accept())
                page.click("#grid li button")
                page.wait_for_function("() => document.querySelectorAll('#grid li').length === 0")
                assert httpx.get(f"{server.url}/api/generations/{made[1]['id']}").status_code == 404
                assert httpx.get(f"{server.url}{made[1]['image_url']}").status_code == 404
                assert sorted(restarted.state.records.ids()) == sorted([made[0]["id"], made[2]["id"]])
        finally:
            browser.close()
