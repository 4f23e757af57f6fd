"""Output paths that cannot destroy data, and file names that cannot escape their folder.

``site --out`` replaces only an absent or empty folder or an earlier build (marked by
``.archbench-site``), never one holding a database, the working directory or its parents, the
home folder or ``/``; it builds beside the target and swaps in, so a failed build leaves the
previous site. ``export --out`` refuses folders and databases. File names come from
:func:`slug`, never from raw names, and every path is checked to stay inside its folder.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import unicodedata
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

SITE_MARKER = ".archbench-site"
MARKER_TEXT = ("This folder is an archbench site: `archbench site --out` replaces it whole.\n"
               "Keep nothing else here.\n")
DATABASE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
LEGACY_SITE_ENTRIES = {"index.html", "capability.html", "scaling.html", "static", "arch"}
LEGACY_BRAND = '<a class="brand" href="./index.html">archbench</a>'
SLUG_MAX = 60
_SLUG_BAD = re.compile(r"[^a-z0-9_-]+")
_SLUG_HASHED = re.compile(r"-[0-9a-f]{8}$")


class OutputError(ValueError):
    """An output path that ``site`` or ``export`` refuses; the message is one line naming it."""


# --- file names from data -------------------------------------------------------------------

def slug(name: str) -> str:
    """A file name stem for any name from the database: lowercase ASCII letters, digits, '-'
    and '_', at most SLUG_MAX characters before a hash. A name that is already such a stem
    (and does not end like a hash suffix) is kept; any other gets '-' and 8 hex digits of its
    SHA-256, so two different names never share a stem (up to a 32-bit hash collision)."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    stem = re.sub(r"-{2,}", "-", _SLUG_BAD.sub("-", ascii_name.lower())).strip("-")
    stem = stem[:SLUG_MAX].rstrip("-")
    if stem and stem == name and not _SLUG_HASHED.search(name):
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{stem or 'x'}-{digest}"


def unique_slugs(names: Any) -> dict[str, str]:
    """name -> slug for every name, raising OutputError if two ever shared a file."""
    files: dict[str, str] = {}
    owner: dict[str, str] = {}
    for name in sorted(names):
        stem = slug(name)
        if stem in owner:
            raise OutputError(f"names {owner[stem]!r} and {name!r} both map to file {stem}.html")
        files[name], owner[stem] = stem, name
    return files


def inside(root: Path, *parts: str) -> Path:
    """``root / parts``, raising OutputError unless it resolves inside ``root``."""
    path = root.joinpath(*parts)
    if not path.resolve().is_relative_to(root.resolve()) or path.resolve() == root.resolve():
        raise OutputError(f"{path}: resolves outside the output folder {root}; not written")
    return path


# --- safe output paths ----------------------------------------------------------------------

def database_path(engine: Engine) -> Path | None:
    """The resolved file of a SQLite engine; None for other databases and in-memory SQLite."""
    return database_path_of(engine.url)


def database_path_of(url: Any) -> Path | None:
    """The resolved file a SQLite URL (text or ``URL``) names; None otherwise."""
    from sqlalchemy.engine import make_url

    url = make_url(url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    name = url.database
    if name.startswith("file:"):  # URI form: file:path?mode=...
        name = name[len("file:"):].split("?", 1)[0]
    return Path(name).expanduser().resolve()


def _writable_ancestor(out: Path) -> None:
    """Raise OutputError unless the nearest existing folder on ``out``'s path is a writable
    folder (so ``out`` and a sibling of it can be created)."""
    probe = out.absolute().parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"{out}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"{out}: no permission to write in {probe}")


def _protected(resolved: Path) -> str | None:
    """Why a folder must never be replaced: '/', home or above, the working dir or above."""
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        return "is the current working directory or one of its parents"
    try:
        home = Path.home().resolve()
    except RuntimeError:  # no home directory known
        home = None
    if home is not None and (resolved == home or resolved in home.parents):
        return "is the home folder or one of its parents"
    if resolved == Path(resolved.anchor):
        return "is the file system root"
    return None


def _databases_under(folder: Path, database: Path | None) -> Path | None:
    """The first database file at any depth under ``folder``: the one being read, or any file
    named like a database (``DATABASE_SUFFIXES``)."""
    if database is not None and database.is_relative_to(folder):
        return database
    for parent, _dirs, names in os.walk(folder):  # symlinked folders are not followed
        for name in sorted(names):
            if name.lower().endswith(DATABASE_SUFFIXES):
                return Path(parent) / name
    return None


def _is_site(folder: Path) -> bool:
    """An earlier build: it holds the marker, or it is a build from before the marker (only
    the site's own entries, and its index carries the site's brand link)."""
    if (folder / SITE_MARKER).is_file():
        return True
    names = {p.name for p in folder.iterdir()}
    index = folder / "index.html"
    if not names <= LEGACY_SITE_ENTRIES or not index.is_file():
        return False
    try:
        return LEGACY_BRAND in index.read_text(errors="replace")
    except OSError:
        return False


def check_site_out(out: Path, database: Path | None = None, assets: Path | None = None) -> None:
    """Raise OutputError (one line, naming ``out`` and why) unless ``out`` may be replaced by a
    site build: absent, an empty folder, or an earlier build; never a symlink, a file, a folder
    holding a database, the working directory or its parents, the home folder or '/'."""
    out = Path(out)
    resolved = out.resolve()
    why = _protected(resolved)
    if why:
        raise OutputError(f"{out}: refusing to replace it: it {why}")
    if assets is not None and (resolved.is_relative_to(assets.resolve())
                               or assets.resolve().is_relative_to(resolved)):
        raise OutputError(f"{out}: refusing to write the site over its own templates {assets}")
    if database is not None and database.is_relative_to(resolved):
        raise OutputError(f"{out}: refusing to replace it: it holds the database {database}")
    if out.is_symlink():
        raise OutputError(f"{out}: is a symbolic link; give the folder it points to")
    _writable_ancestor(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputError(f"{out}: is a file, not a folder")
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"{out}: no permission to replace it")
    if any(out.iterdir()) and not _is_site(out):  # before the walk: never walk a big folder
        raise OutputError(f"{out}: refusing to replace a non-empty folder that is not an "
                          f"archbench site (no {SITE_MARKER} file); give a new or empty folder")
    found = _databases_under(resolved, database)
    if found is not None:
        raise OutputError(f"{out}: refusing to replace it: it holds the database file {found}")


def check_file_out(out: Path, database: Path | None = None) -> None:
    """Raise OutputError (one line) unless ``out`` may be written as a file: not a folder,
    not the database being read nor any SQLite file, and in a writable folder."""
    out = Path(out)
    if out.is_dir():
        raise OutputError(f"{out}: is a folder; give a file name, e.g. {out / 'results.csv'}")
    if out.exists():
        if database is not None and out.resolve() == database:
            raise OutputError(f"{out}: is the database being read; refusing to overwrite it")
        try:
            with out.open("rb") as f:
                header = f.read(16)
        except OSError as e:
            raise OutputError(f"{out}: cannot be read ({e.strerror})") from None
        if header == b"SQLite format 3\x00":
            raise OutputError(f"{out}: is an SQLite database; refusing to overwrite it")
        if not os.access(out, os.W_OK):
            raise OutputError(f"{out}: no permission to overwrite it")
    _writable_ancestor(out)


def _fresh_sibling(path: Path, purpose: str) -> Path:
    """A name beside ``path`` that nothing uses yet (hidden, so it never looks like output)."""
    while True:
        candidate = path.with_name(f".{path.name}.{purpose}-{secrets.token_hex(4)}")
        if not candidate.exists() and not candidate.is_symlink():
            return candidate


def _swap_in(staging: Path, out: Path) -> None:
    """Put the finished ``staging`` folder at ``out``; an earlier build there is moved aside
    first and deleted only once the new one is in place."""
    old = _fresh_sibling(out, "old") if out.exists() else None
    try:
        if old is not None:
            os.rename(out, old)
        try:
            os.rename(staging, out)
        except OSError:
            if old is not None:
                os.rename(old, out)
            raise
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise OutputError(f"{out}: cannot put the new site in place ({e.strerror})") from None
    if old is not None:
        try:
            shutil.rmtree(old)
        except OSError as e:
            raise OutputError(f"{out}: site written, but the previous build left at {old} "
                              f"could not be deleted ({e.strerror})") from None
