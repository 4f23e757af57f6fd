"""Where the site may write: never outside --out, never over a database, the working directory,
home or a folder that is not an earlier build; names from the database become safe file names."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness import db, outputs, render
from harness.outputs import OutputError
from tests.test_site import _row

HOSTILE_NAMES = ["../../x/PWNED", "a/b", "a" * 300, "Mämba ☃ 日本", "", "..", ".", "/etc/passwd",
                 "..\\..\\win", "transformer", "Transformer", "a-b", "a--b", "-lead",
                 "x-0123abcd"]


@pytest.fixture
def engine(db_url: str) -> db.Engine:
    engine = db.connect(db_url)
    db.ensure_hardware(engine, "fp0", {"cpu_model": "Test CPU", "logical_cpus": 2})
    db.store(engine, [_row("transformer", "prefill_latency", "latency_ms", 1.5)])
    return engine


def _tree(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def _site_index(out: Path) -> str:
    return (out / "index.html").read_text()


def test_slug_is_safe_capped_and_collision_free() -> None:
    stems = [outputs.slug(n) for n in HOSTILE_NAMES]
    assert len(set(stems)) == len(stems)
    for name, stem in zip(HOSTILE_NAMES, stems, strict=True):
        assert re.fullmatch(r"[a-z0-9_][a-z0-9_-]*", stem), (name, stem)
        assert len(stem) <= outputs.SLUG_MAX + 9
    assert outputs.slug("transformer") == "transformer"  # plain names keep their file name
    assert outputs.slug("mamba2_ref-x") == "mamba2_ref-x"
    assert outputs.slug("Transformer").startswith("transformer-")
    assert outputs.slug("a" * 300) != outputs.slug("a" * 301)  # truncated, told apart by hash
    assert outputs.slug("x-0123abcd") != "x-0123abcd"  # looks hashed: hashed itself
    assert outputs.slug("") == outputs.slug("")  # deterministic


def test_inside_refuses_paths_that_leave_the_folder(tmp_path: Path) -> None:
    assert outputs.inside(tmp_path, "arch", "a.html") == tmp_path / "arch" / "a.html"
    for parts in (("..", "x.html"), ("arch", "..", "..", "x"), ("/etc/passwd",), (".",)):
        with pytest.raises(OutputError):
            outputs.inside(tmp_path, *parts)


def test_hostile_names_write_only_inside_out(db_url: str, tmp_path: Path) -> None:
    engine = db.connect(db_url)
    db.store(engine, [_row(name, task, "latency_ms", 1.0 + i)
                      for i, name in enumerate(HOSTILE_NAMES)
                      for task in ("prefill_latency", "../../t/PWNED", "a/b")])
    out = tmp_path / "deep" / "site"
    before = _tree(tmp_path)
    index = render.build(engine, out)
    created = _tree(tmp_path) - before
    assert created and all(p == out.parent or p.is_relative_to(out) for p in created)
    assert not list(tmp_path.rglob("PWNED*"))
    pages = sorted((out / "arch").iterdir())
    assert len(pages) == len(HOSTILE_NAMES)
    assert all(p.suffix == ".html" and len(p.name) <= outputs.SLUG_MAX + 14 for p in pages)
    html = index.read_text()
    links = re.findall(r'href="\./(arch/[^"]+)"', html)
    assert len(set(links)) == len(HOSTILE_NAMES)
    assert all((out / link).is_file() for link in links)  # every link reaches its page
    assert "../../t/PWNED" in html  # names are shown as they are, escaped, not as paths
    tasks = {link.split("#")[0] for link in re.findall(r'href="\./(task/[^"]+)"', html)}
    assert len(tasks) == 3 and all((out / link).is_file() for link in tasks)
    assert len(list((out / "task").iterdir())) == 3
    csvs = re.findall(r'href="\./(csv/[^"]+)"', html)
    assert len(set(csvs)) == 3 and all((out / link).is_file() for link in csvs)


def test_refuses_the_folder_holding_the_database(engine, db_url: str, tmp_path: Path) -> None:
    kept = _tree(tmp_path)
    with pytest.raises(OutputError, match="database"):
        render.build(engine, tmp_path)
    assert _tree(tmp_path) == kept and (tmp_path / "test.db").is_file()


def test_refuses_a_folder_with_any_database_file_even_an_earlier_build(engine,
                                                                       tmp_path: Path) -> None:
    out = tmp_path / "site"
    render.build(engine, out)
    (out / "arch" / "other.sqlite").write_bytes(b"SQLite format 3\x00")
    with pytest.raises(OutputError, match="other.sqlite"):
        render.build(engine, out)
    assert (out / "arch" / "other.sqlite").is_file()


def test_refuses_a_non_empty_folder_without_the_marker(engine, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "todo.txt").write_text("keep me")
    (out / "index.html").write_text("<p>my own page</p>")
    with pytest.raises(OutputError, match="not an archbench site") as err:
        render.build(engine, out)
    assert "\n" not in str(err.value) and str(out) in str(err.value)
    assert (out / "notes" / "todo.txt").read_text() == "keep me"


def test_an_empty_folder_and_a_build_from_before_the_marker_are_replaced(engine,
                                                                          tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    render.build(engine, empty)
    assert (empty / "index.html").is_file()
    legacy = tmp_path / "legacy"  # as an archbench from before the marker left it
    (legacy / "arch").mkdir(parents=True)
    (legacy / "static").mkdir()
    for page in ("index.html", "capability.html", "scaling.html"):
        (legacy / page).write_text(f"<header>{outputs.LEGACY_BRAND}</header>")
    (legacy / "arch" / "gone.html").write_text("old")
    render.build(engine, legacy)
    assert not (legacy / "arch" / "gone.html").exists()
    assert "<h1>Capability heat map</h1>" in (legacy / "capability.html").read_text()


@pytest.mark.parametrize("out", [".", "..", "cwd-absolute"])
def test_refuses_the_working_directory_and_its_parents(engine, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       out: str) -> None:
    work = tmp_path / "work" / "here"
    work.mkdir(parents=True)
    (work / "precious.txt").write_text("keep")
    monkeypatch.chdir(work)
    target = work if out == "cwd-absolute" else Path(out)
    with pytest.raises(OutputError, match="working directory"):
        render.build(engine, target)
    assert (work / "precious.txt").read_text() == "keep"


def test_refuses_home_and_root(engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home" / "me"
    home.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    for out in (home, home.parent):
        with pytest.raises(OutputError, match="home"):
            render.build(engine, out)
    with pytest.raises(OutputError):
        render.build(engine, Path("/"))
    assert home.is_dir()


def test_unwritable_out_fails_up_front(engine, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def no_work(*_args, **_kw):
        raise AssertionError("read the database before checking --out")

    monkeypatch.setattr(render.db, "results", no_work)
    a_file = tmp_path / "file.html"
    a_file.write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        render.build(engine, a_file)
    with pytest.raises(OutputError, match="is a file, not a folder"):
        render.build(engine, a_file / "site")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OutputError, match="symbolic link"):
        render.build(engine, link)
    # root passes every permission check, so the refusal is simulated
    monkeypatch.setattr(outputs.os, "access", lambda *_a, **_k: False)
    with pytest.raises(OutputError, match="no permission"):
        render.build(engine, tmp_path / "new-site")
    assert a_file.read_text() == "x"


def test_a_failed_build_leaves_the_previous_site_whole(engine, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "site"
    render.build(engine, out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def broken(*_args, **_kw):
        raise RuntimeError("template crashed half way")

    monkeypatch.setattr(render, "achieved_rows", broken)
    with pytest.raises(RuntimeError, match="half way"):
        render.build(engine, out)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging


def test_build_and_export_do_not_import_torch() -> None:
    code = ("import sys, harness.render, harness.export; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr
