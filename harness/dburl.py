"""Check a ``--db`` / ``ARCHBENCH_DB`` value before any work: one :class:`DbUrlError` line.

Accepted: a bare path (a SQLite file, as :func:`harness.db.resolve_url` has it), ``sqlite:///PATH``
and ``postgresql[+psycopg|+psycopg2]://...``. Refused: anything SQLAlchemy cannot parse, other
dialects, an in-memory SQLite database (every result would be discarded when the run ends) unless
``allow_memory``, a SQLite path that is a directory, whose folder cannot be created or written,
or whose file cannot be written. No message ever shows a password: a parsed URL is rendered with
the password hidden, and a URL that cannot be parsed safely (one whose host would hold text after
an ``@`` of the password) is shown by its scheme alone.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

from harness.db import DEFAULT_DB

DIALECTS = ("sqlite", "postgresql", "postgresql+psycopg", "postgresql+psycopg2")
DBAPI = {"psycopg": "psycopg", "psycopg2": "psycopg2"}  # driver -> module that must import
MEMORY_NAMES = ("", ":memory:")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class DbUrlError(ValueError):
    """A database URL that cannot work; the message is one line and holds no password."""

    def __init__(self, message: object = "") -> None:
        super().__init__(" ".join(str(message).splitlines()))


def _scheme(url: str) -> str:
    """``scheme://…`` for a URL shown without its rest; never more than the scheme."""
    head = url.split("://", 1)[0] if "://" in url else ""
    return f"{head}://…" if _SCHEME.fullmatch(head) else "the URL"


def _userinfo_ok(url: str) -> bool:
    """Whether the ``user:password@`` part, if any, is unambiguous: up to the last ``@`` there
    is no other ``@`` and no ``/ ? #``. Otherwise a parser may take part of the password for the
    host, the database or the query, and show it; such a URL is never echoed (and refused)."""
    scheme, _, rest = url.partition("://")
    if "@" not in rest or (scheme.startswith("sqlite") and rest.startswith("/")):
        return True  # sqlite:///PATH has no user or password: an @ there is the file's
    userinfo = rest[: rest.rfind("@")]
    return not any(c in userinfo for c in "@/?#")


def redact(url: str) -> str:
    """``url`` with its password hidden; a URL that cannot be parsed safely shows only its
    scheme. Never raises (for messages about a URL that may be malformed)."""
    if not isinstance(url, str):
        return "the URL"
    if "://" not in url:
        return url  # a bare path holds no password
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - any parse failure: show the scheme alone
        return _scheme(url)
    if not _userinfo_ok(url):  # "u:pa@ss@h": the host would hold part of the password
        return _scheme(url)
    return parsed.render_as_string(hide_password=True)


def _fail(shown: str, problem: str) -> DbUrlError:
    return DbUrlError(f"--db {shown}: {problem}")


def _sqlite_file(shown: str, database: str) -> None:
    """The file's folder exists (created if need be) and is writable; the file, if there, is a
    writable file."""
    if "\x00" in database:
        raise _fail(shown, "a path cannot hold a NUL character")
    path = Path(database)
    try:
        if path.is_dir():
            raise _fail(shown, "is a directory; allowed: a SQLite file path")
        parent = path.parent
        parent.mkdir(parents=True, exist_ok=True)
    except DbUrlError:
        raise
    except OSError as err:
        raise _fail(shown, f"its folder cannot be created ({err.strerror or type(err).__name__})"
                    "; allowed: a path in a writable folder") from None
    if not parent.is_dir():
        raise _fail(shown, "its folder is not a directory; allowed: a path in a writable folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise _fail(shown, "its folder is not writable; allowed: a path in a writable folder")
    if path.exists():
        if not path.is_file():
            raise _fail(shown, "is not a regular file; allowed: a SQLite file path")
        if not os.access(path, os.R_OK | os.W_OK):
            raise _fail(shown, "the file is not readable and writable")


def check_url(url: str, *, allow_memory: bool = False) -> str:
    """The database URL to connect to, or a one-line :class:`DbUrlError`.

    A bare path (no ``://``) is a SQLite file: ``sqlite:///PATH`` is returned, its folder
    created. Other URLs are returned as SQLAlchemy renders them (with the password)."""
    if not isinstance(url, str) or not url.strip():
        raise DbUrlError("--db: empty; allowed: a SQLite path, sqlite:///PATH or "
                         "postgresql://USER:PASSWORD@HOST/DB")
    if "://" not in url:
        if _CONTROL.search(url):
            raise _fail(repr(url), "a path cannot hold control characters")
        if "?" in url:  # it would start the URL's query: the file would be another one
            raise _fail(url, "a '?' in a SQLite path is not supported; rename the file")
        _sqlite_file(url, url)
        return f"sqlite:///{url}"
    if _CONTROL.search(url):
        raise _fail(_scheme(url), "the URL holds control characters (a newline?)")
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - ArgumentError, ValueError (port), ...: never echo it
        raise _fail(_scheme(url), "is not a database URL SQLAlchemy can parse; allowed: "
                    "sqlite:///PATH or postgresql://USER:PASSWORD@HOST[:PORT]/DB "
                    "(percent-encode @ : / in the password)") from None
    if not _userinfo_ok(url):
        raise _fail(_scheme(url), "the user name or password holds an @, /, ? or #; "
                    "percent-encode them (@ as %40, / as %2F, ? as %3F, # as %23)")
    shown = parsed.render_as_string(hide_password=True)
    driver = parsed.drivername
    if driver not in DIALECTS:
        hint = " (write postgresql://)" if driver.startswith("postgres") else ""
        raise _fail(shown, f"unsupported database {driver!r}{hint}; allowed: "
                    f"{', '.join(DIALECTS)}")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise _fail(shown, f"port {parsed.port} is out of range; allowed: 1 to 65535")
    if driver == "sqlite":
        if parsed.host or parsed.username or parsed.password or parsed.port:
            raise _fail(shown, "a SQLite URL has no host or user; allowed: sqlite:///PATH "
                        "(relative) or sqlite:////PATH (absolute)")
        memory = (parsed.database or "") in MEMORY_NAMES or \
            parsed.query.get("mode") == "memory"
        if memory:
            if not allow_memory:
                raise _fail(shown, "an in-memory database discards every result when the "
                            "command ends; allowed: a SQLite file path or a server URL")
            return url
        database = parsed.database or ""
        if database.startswith("file:"):
            raise _fail(shown, "SQLite 'file:' URIs are not supported; allowed: "
                        "sqlite:///PATH")
        _sqlite_file(shown, database)
        return url
    name = driver.partition("+")[2] or _default_driver(parsed)
    module = DBAPI.get(name, name)
    if importlib.util.find_spec(module) is None:
        extra = "pip install 'archbench[postgres]'" if name == "psycopg" else \
            f"pip install {name}-binary" if name == "psycopg2" else f"install {name}"
        raise _fail(shown, f"driver {name} is not installed ({extra}); allowed drivers: "
                    f"{', '.join(m for m in DBAPI if importlib.util.find_spec(m))or 'none'}")
    return url


def resolve(url: str | None = None, *, allow_memory: bool = False) -> str:
    """:func:`check_url` of ``url``, else of ``$ARCHBENCH_DB``, else of ``results/archbench.db``
    (the precedence of :func:`harness.db.resolve_url`, checked before any folder is made)."""
    return check_url(url or os.environ.get("ARCHBENCH_DB") or str(DEFAULT_DB),
                     allow_memory=allow_memory)


def _default_driver(parsed: object) -> str:
    """The DBAPI driver SQLAlchemy picks for a URL without ``+driver`` (psycopg2 before 2.1)."""
    try:
        return str(parsed.get_dialect().driver)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - cannot load the dialect: the classic default
        return "psycopg2"
