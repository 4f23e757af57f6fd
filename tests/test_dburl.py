"""``--db`` URLs are checked before any work: one line, never a password, never an in-memory
database that would discard every result."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from harness import dburl
from harness.dburl import DbUrlError, check_url

SECRET = "s3cr3tpw"


def _refused(url: str, *needles: str, allow_memory: bool = False) -> str:
    with pytest.raises(DbUrlError) as info:
        check_url(url, allow_memory=allow_memory)
    message = str(info.value)
    assert message.startswith("--db") and len(message.splitlines()) == 1, message
    assert SECRET not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


@pytest.mark.parametrize("url,needles", [
    ("foo://", ["unsupported database 'foo'"]),
    ("://nothing", ["can parse"]),
    (f"postgresql://u:{SECRET}@h:xx/db", ["postgresql://…", "can parse"]),
    (f"postgresql://u:{SECRET}@h:99999/db", ["port 99999", "65535", "***"]),
    ("mysql://h/db", ["'mysql'", "allowed: sqlite, postgresql"]),
    ("postgres://h/db", ["'postgres'", "write postgresql://"]),
    ("postgresql+asyncpg://h/db", ["'postgresql+asyncpg'", "allowed"]),
    ("oracle+cx_oracle://h/db", ["allowed"]),
    ("sqlite://host/x.db", ["no host"]),
    ("sqlite:///x.db\n", ["control characters"]),
    ("x\n.db", ["control characters"]),
    ("", ["empty"]),
    ("   ", ["empty"]),
    ("a?b.db", ["'?'"]),
    ("sqlite:///file:x.db?mode=ro&uri=true", ["file:"]),
])
def test_malformed_and_unsupported_urls_are_one_line(url: str, needles: list[str]) -> None:
    _refused(url, *needles)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite:///",
                                 "sqlite:///file:mem?mode=memory&uri=true"])
def test_in_memory_sqlite_is_refused_unless_allowed(url: str) -> None:
    _refused(url, "in-memory", "discards every result")
    assert check_url(url, allow_memory=True) == url


@pytest.mark.parametrize("password", [SECRET, f"{SECRET}@x", f"pa@{SECRET}", f"{SECRET}:@/"])
def test_no_message_shows_the_password(password: str) -> None:
    for url in (f"postgresql://user:{password}@host/db",
                f"postgresql://user:{password}@host:notaport/db",
                f"mysql://user:{password}@host/db",
                f"postgresql://user:{password}@host:70000/db"):
        try:
            check_url(url)
        except DbUrlError as err:
            assert SECRET not in str(err) and len(str(err).splitlines()) == 1, err
        assert SECRET not in dburl.redact(url)


def test_an_at_sign_in_the_password_is_refused_without_echo() -> None:
    message = _refused(f"postgresql://alice:{SECRET}@tail@dbhost/db", "%40")
    for part in ("alice", "tail", "dbhost"):
        assert part not in message, message


def test_a_directory_is_not_a_database(tmp_path: Path) -> None:
    _refused(str(tmp_path), "is a directory")
    _refused(f"sqlite:///{tmp_path}", "is a directory")


def test_a_folder_that_cannot_be_created_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    _refused(str(blocker / "x.db"), "folder")
    _refused(f"sqlite:///{blocker / 'sub' / 'x.db'}", "folder")
    _refused("/proc/archbench-no-such/x.db", "folder")  # refused even for root


def test_bare_paths_are_sqlite_files_and_their_folder_is_made(tmp_path: Path) -> None:
    path = tmp_path / "new" / "deeper" / "r.db"
    assert check_url(str(path)) == f"sqlite:///{path}"
    assert path.parent.is_dir() and not path.exists()  # the folder, never the file
    assert check_url("results-x.db").startswith("sqlite:///")
    for name in ("u.db", "a@b/u.db", "a b#c.db"):
        url = f"sqlite:///{tmp_path / name}"
        assert check_url(url) == url


def test_postgresql_urls_pass_unchanged_when_their_driver_is_installed() -> None:
    if importlib.util.find_spec("psycopg") is None:
        pytest.skip("psycopg is not installed")
    for url in (f"postgresql://u:{SECRET}@h/d", f"postgresql+psycopg://u:{SECRET}@h:5432/d",
                "postgresql:///d", "postgresql://u:p%40ss@h/d?sslmode=require"):
        assert check_url(url) == url
    if importlib.util.find_spec("psycopg2") is None:
        _refused(f"postgresql+psycopg2://u:{SECRET}@h/d", "psycopg2 is not installed")


def test_resolve_takes_the_flag_then_the_environment(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCHBENCH_DB", str(tmp_path / "env" / "e.db"))
    assert dburl.resolve() == f"sqlite:///{tmp_path / 'env' / 'e.db'}"
    assert dburl.resolve(str(tmp_path / "f.db")) == f"sqlite:///{tmp_path / 'f.db'}"
    monkeypatch.setenv("ARCHBENCH_DB", "sqlite://")
    with pytest.raises(DbUrlError, match="in-memory"):
        dburl.resolve()


def test_redact_never_raises() -> None:
    assert dburl.redact(f"postgresql://u:{SECRET}@h/d") == "postgresql://u:***@h/d"
    assert dburl.redact("://") == "the URL"
    assert dburl.redact(f"pg://u:{SECRET}@h:bad/d") == "pg://…"
    assert dburl.redact("results/x.db") == "results/x.db"


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

piece = st.text(st.characters(codec="utf-8"), max_size=12)


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(scheme=st.sampled_from(["postgresql", "postgresql+psycopg", "postgres", "mysql", "pg",
                               "postgresql+psycopg2", "x y", ""]),
       user=piece, before=piece, after=piece, host=piece, port=piece, db=piece)
def test_server_urls_never_traceback_or_leak(scheme: str, user: str, before: str, after: str,
                                             host: str, port: str, db: str) -> None:
    url = f"{scheme}://{user}:{before}{SECRET}{after}@{host}:{port}/{db}"
    try:
        checked = check_url(url)
    except DbUrlError as err:
        assert SECRET not in str(err) and len(str(err).splitlines()) == 1, str(err)
    else:
        assert checked == url
    assert SECRET not in dburl.redact(url)
