"""Catalog parsing, the shipped catalog.json, and the model library (installed/available, import
validated by the engine's parsers, delete with confirmation, folder choice, RAM fit text)."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from trit.app.core.catalog import (
    CatalogEntry,
    CatalogError,
    InstalledModel,
    LibraryError,
    ModelLibrary,
    UnverifiedEntryError,
    bundled_entry,
    catalog_path,
    format_bytes,
    load_catalog,
    parse_catalog,
    ram_fit,
    skipped_text,
)
from trit.app.core.downloads import _PartLock
from trit.engine.gguf_writer import GGUFWriter

from trit.default_model import default_model_spec

ENTRY = {
    "id": "m1",
    "name": "Model One",
    "repo": "org/m1",
    "revision": "abc",
    "file": "m1.gguf",
    "size": 1234,
    "sha256": "AB" * 32,
    "license": "MIT",
    "license_url": "https://example.invalid/license",
    "ram_mb": 1400,
    "family": "bitnet",
    "min_app_version": "0.2.0",
}


def entry(**kw: object) -> CatalogEntry:
    d = copy.deepcopy(ENTRY)
    d.update(kw)
    return parse_catalog({"models": [d]})[0]


def write_gguf(path: Path, arch: str = "llama") -> Path:
    w = GGUFWriter(path)
    w.add_string("general.architecture", arch)
    w.add_uint32(f"{arch}.block_count", 1)
    w.add_tensor("token_embd.weight", np.zeros((4, 32), np.float32))
    w.write()
    return path


def test_shipped_catalog() -> None:
    entries = load_catalog()
    shared = [e for e in entries if "ggml-model-i2_s.gguf" in e.old_local_files]
    # every entry older catalogs saved under that name, each told apart by its header
    assert {e.id.split("-")[0] for e in shared} == {"bitnet", "falcon3"} and len(shared) == 5
    assert len({e.gguf_metadata for e in shared}) == 5
    assert all(dict(e.gguf_metadata)["general.architecture"] == "llama" for e in shared[1:])
    ids = [e.id for e in entries]
    assert len(ids) == len(set(ids))
    assert "bitnet-b1.58-2b4t-i2s" in ids and any(i.startswith("falcon3-") for i in ids)
    bitnet = next(e for e in entries if e.id == "bitnet-b1.58-2b4t-i2s")
    assert bitnet.repo == "microsoft/bitnet-b1.58-2B-4T-gguf" and bitnet.file == "ggml-model-i2_s.gguf"
    assert bitnet.license == "MIT" and bitnet.family == "bitnet" and bitnet.ram_mb > 1000
    # five repos call their file ggml-model-i2_s.gguf; in the models folder each has its own name
    locals_ = [e.local_name.casefold() for e in entries]
    assert len(locals_) == len(set(locals_)) and bitnet.local_name == "bitnet-b1.58-2b4t-i2s.gguf"
    assert bitnet.old_local_files == ("ggml-model-i2_s.gguf",)
    raw = json.loads(catalog_path().read_text())
    for m in raw["models"]:
        # whatever could not be checked is null or listed, and says so in the comment
        if m["sha256"] is None:
            assert "sha256" in m["unverified"] and "unverified" in m["comment"]
    for e in entries:
        if e.sha256 is None:
            assert not e.verified
            with pytest.raises(UnverifiedEntryError, match="Confirm"):
                e.require_verified()
            e.require_verified(confirmed=True)


def test_bundled_entry_matches_default_model_json() -> None:
    spec = default_model_spec()
    b = load_catalog()[0]
    assert b == bundled_entry(spec) and b.source == "bundled"
    assert b.file == spec["file"] and b.sha256 == spec["sha256"] and b.size == spec["size"]
    assert b.license == spec["license"] and b.family == spec["family"] and b.ram_mb == spec["min_ram_mb"]
    assert b.id == "smollm2-135m-instruct-q4_1" and b.verified


def test_entry_fields() -> None:
    e = entry()
    assert e.sha256 == "ab" * 32 and e.verified and e.unverified == ()
    assert e.compatible("0.2.0") and e.compatible("0.10") and not e.compatible("0.1.9")
    assert e.download_url("http://127.0.0.1:1/") == "http://127.0.0.1:1/org/m1/resolve/abc/m1.gguf"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sha256": "xyz"}, "sha256"),
        ({"size": -1}, "size"),
        ({"size": True}, "size"),
        ({"ram_mb": "lots"}, "ram_mb"),
        ({"name": ""}, "name"),
        ({"file": "../evil.gguf"}, "plain file name"),
        ({"local_file": "../evil.gguf"}, "local_file must be a plain file name"),
        ({"local_file": ""}, "local_file must be a plain file name"),
        ({"local_file": 3}, "local_file must be a string"),
        ({"old_local_files": "m0.gguf"}, "old_local_files must be a list"),
        ({"old_local_files": [".hidden.gguf"]}, "old_local_files must be a plain file name"),
        ({"repo": ""}, "repo"),
        ({"unverified": "sha256"}, "unverified"),
        ({"gated": "no"}, "gated must be true or false"),
        ({"min_app_version": "v0.2"}, "min_app_version must be dotted numbers"),
        ({"min_app_version": "0.2.0-beta"}, "min_app_version must be dotted numbers"),
        ({"min_app_version": ""}, "min_app_version must be dotted numbers"),
    ],
)
def test_bad_entries(change: dict[str, object], message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        entry(**change)


def test_bad_catalogs(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="duplicate"):
        parse_catalog({"models": [ENTRY, ENTRY]})
    with pytest.raises(CatalogError, match="newer"):
        parse_catalog({"format": 99, "models": []})
    with pytest.raises(CatalogError, match="models"):
        parse_catalog([])
    p = tmp_path / "c.json"
    p.write_text("{nope")
    with pytest.raises(CatalogError, match="not valid JSON"):
        load_catalog(p)
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "missing.json")
    p.write_text(json.dumps({"models": [ENTRY]}))
    assert [e.id for e in load_catalog(p, include_bundled=False)] == ["m1"]


@pytest.mark.parametrize("fmt", ["1", None, 1.0, True, 0, [1]])
def test_a_damaged_format_field_is_a_catalog_error(tmp_path: Path, fmt: object) -> None:
    # AppContext.create catches only CatalogError: a TypeError from comparing "1" > 1 stopped the app
    p = tmp_path / "catalog.json"
    p.write_text(json.dumps({"format": fmt, "models": [ENTRY]}))
    with pytest.raises(CatalogError, match="format must be a whole number"):
        load_catalog(p, include_bundled=False)


def test_unreadable_catalog_files_are_catalog_errors(tmp_path: Path) -> None:
    p = tmp_path / "catalog.json"
    p.write_bytes(b'{"models": [], "name": "caf\xe9"}')  # Latin-1, not UTF-8
    with pytest.raises(CatalogError, match="not valid JSON"):
        load_catalog(p, include_bundled=False)
    p.write_bytes(b'{"models": [], "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    with pytest.raises(CatalogError, match="nested too deeply"):
        load_catalog(p, include_bundled=False)
    with pytest.raises(CatalogError, match="plain file name"):
        entry(file="m\0.gguf")  # a NUL cannot be in a path


def test_two_entries_may_not_share_a_file_in_the_models_folder() -> None:
    # the shipped catalog had five entries named ggml-model-i2_s.gguf: one download counted as all
    # five installed, and deleting one deleted the others' model
    other = dict(ENTRY, id="m2")
    with pytest.raises(CatalogError, match="'m1' and 'm2' have the same file name 'm1.gguf'"):
        parse_catalog({"models": [ENTRY, other]})
    with pytest.raises(CatalogError, match="same file name"):  # one folder on macOS and Windows
        parse_catalog({"models": [ENTRY, dict(other, local_file="M1.GGUF")]})
    with pytest.raises(CatalogError, match="same file name"):  # an old name is still taken
        parse_catalog(
            {"models": [dict(ENTRY, old_local_files=["m2.gguf"]), dict(other, local_file="m2.gguf")]}
        )
    a, b = parse_catalog({"models": [ENTRY, dict(other, local_file="m2.gguf")]})
    assert a.file == b.file == "m1.gguf" and (a.local_name, b.local_name) == ("m1.gguf", "m2.gguf")


def test_entries_may_share_an_old_name_when_their_headers_tell_them_apart() -> None:
    a = dict(
        ENTRY, local_file="a.gguf", old_local_files=["old.gguf"], gguf_metadata={"general.architecture": "x"}
    )
    b = dict(ENTRY, id="m2", local_file="b.gguf", old_local_files=["old.gguf"])
    with pytest.raises(CatalogError, match="'m2' needs gguf_metadata"):
        parse_catalog({"models": [a, b]})
    b["gguf_metadata"] = {"general.architecture": "y", "y.block_count": 18, "y.flag": True}
    ea, eb = parse_catalog({"models": [a, b]})
    assert ea.old_local_files == eb.old_local_files == ("old.gguf",)
    assert eb.gguf_metadata == (("general.architecture", "y"), ("y.block_count", 18), ("y.flag", True))
    with pytest.raises(CatalogError, match="same file name 'a.gguf'"):
        parse_catalog({"models": [a, dict(b, old_local_files=["a.gguf"])]})
    for bad in ([1], {"k": None}, {"k": [1]}, {"k": float("nan")}):
        with pytest.raises(CatalogError, match="gguf_metadata must map"):
            entry(gguf_metadata=bad)


def test_entries_sharing_a_repo_file_name_are_installed_and_deleted_apart(tmp_path: Path) -> None:
    bitnet, falcon = parse_catalog(
        {
            "models": [
                dict(ENTRY, id="bitnet", size=None, sha256=None, local_file="bitnet.gguf"),
                dict(ENTRY, id="falcon", size=None, sha256=None, local_file="falcon.gguf"),
            ]
        }
    )
    lib = ModelLibrary(tmp_path, [bitnet, falcon])
    rb, rf = (lib.download_request(e, confirmed=True) for e in (bitnet, falcon))
    assert rb.file == rf.file == "m1.gguf"  # the URL keeps the repo's name
    assert (rb.dest, rf.dest) == (tmp_path / "bitnet.gguf", tmp_path / "falcon.gguf")
    write_gguf(rb.dest)
    assert lib.is_installed(bitnet) and not lib.is_installed(falcon)
    assert [(m.entry, m.name) for m in lib.installed()] == [(bitnet, "Model One")]
    assert lib.available() == [falcon]
    write_gguf(rf.dest)
    lib.delete(next(m for m in lib.installed() if m.entry == falcon), confirmed=True)
    assert rb.dest.exists() and lib.is_installed(bitnet) and not lib.is_installed(falcon)


def test_a_file_downloaded_under_an_old_name_moves_to_the_entry_s_own(tmp_path: Path) -> None:
    bitnet, falcon = parse_catalog(
        {
            "models": [
                dict(ENTRY, id="bitnet", size=None, local_file="bitnet.gguf", old_local_files=["m1.gguf"]),
                dict(ENTRY, id="falcon", local_file="falcon.gguf"),
            ]
        }
    )
    lib = ModelLibrary(tmp_path, [bitnet, falcon])
    old = write_gguf(tmp_path / "m1.gguf")
    # before the folder is listed (the window resolves its model first) the file counts where it is
    assert lib.is_installed(bitnet) and lib.path_for(bitnet) == old and not lib.is_installed(falcon)
    assert [(m.path, m.entry) for m in lib.installed()] == [(tmp_path / "bitnet.gguf", bitnet)]
    assert not old.exists() and lib.path_for(bitnet) == tmp_path / "bitnet.gguf"
    assert lib.locate(old) == tmp_path / "bitnet.gguf"  # a path an older Trit stored
    assert lib.available() == [falcon]
    assert lib.download_request(falcon, confirmed=True).dest == tmp_path / "falcon.gguf"
    write_gguf(old)  # the entry has its file: one under the old name is just a file
    assert {m.path.name: m.entry for m in lib.installed()} == {"bitnet.gguf": bitnet, "m1.gguf": None}
    assert lib.locate(old) == old
    lib.delete(tmp_path / "bitnet.gguf", confirmed=True)
    assert lib.path_for(bitnet) == old and lib.installed()[0].entry == bitnet
    assert not old.exists() and lib.installed()[0].path == tmp_path / "bitnet.gguf"
    lib.delete(tmp_path / "bitnet.gguf", confirmed=True)
    (tmp_path / "src").mkdir()
    m = lib.import_model(write_gguf(tmp_path / "src" / "m1.gguf"))
    assert (m.entry, m.path) == (bitnet, tmp_path / "bitnet.gguf") and not old.exists()


SHARED = "ggml-model-i2_s.gguf"


def falcon_gguf(path: Path, blocks: int, dim: int) -> Path:
    w = GGUFWriter(path)
    w.add_string("general.architecture", "llama")
    w.add_string("general.name", "Falcon3")
    w.add_uint32("llama.block_count", blocks)
    w.add_uint32("llama.embedding_length", dim)
    w.add_tensor("token_embd.weight", np.zeros((4, 32), np.float32))
    w.write()
    return path


def shared_name_catalog() -> list[CatalogEntry]:
    """The shipped catalog's shape: BitNet 2B4T and Falcon3 entries all had one old local name."""

    def falcon(size: str, blocks: int, dim: int) -> dict[str, object]:
        meta = {"general.architecture": "llama", "llama.block_count": blocks, "llama.embedding_length": dim}
        return dict(
            ENTRY,
            id=f"falcon3-{size}",
            name=f"Falcon3 {size}",
            file=SHARED,
            size=None,
            local_file=f"falcon3-{size}.gguf",
            old_local_files=[SHARED],
            gguf_metadata=meta,
        )

    bitnet = dict(
        ENTRY,
        id="bitnet",
        name="BitNet b1.58 2B4T",
        file=SHARED,
        size=None,
        local_file="bitnet.gguf",
        old_local_files=[SHARED],
        gguf_metadata={"general.architecture": "bitnet-b1.58"},
    )
    return parse_catalog({"models": [bitnet, falcon("1b", 18, 2048), falcon("3b", 22, 3072)]})


def test_a_falcon3_file_under_the_old_shared_name_is_falcon3_not_bitnet(tmp_path: Path) -> None:
    """QA: a Falcon3 model an older Trit saved as ggml-model-i2_s.gguf was listed (and loaded,
    and deleted) as BitNet 2B4T, and Falcon3 was offered for download again."""
    bitnet, f1, f3 = shared_name_catalog()
    lib = ModelLibrary(tmp_path, [bitnet, f1, f3])
    old = falcon_gguf(tmp_path / SHARED, 18, 2048)
    assert lib.path_for(bitnet) == tmp_path / "bitnet.gguf" and not lib.is_installed(bitnet)
    assert lib.is_installed(f1) and lib.path_for(f1) == old  # a settings id of Falcon3 is installed
    assert [(m.path.name, m.name, m.entry) for m in lib.installed()] == [
        ("falcon3-1b.gguf", "Falcon3 1b", f1)
    ]
    assert not old.exists() and lib.path_for(f1) == tmp_path / "falcon3-1b.gguf"
    assert lib.available() == [bitnet, f3]
    assert lib.locate(old) == tmp_path / "falcon3-1b.gguf"  # the old window stored this path
    assert lib.locate(tmp_path / "other.gguf") == tmp_path / "other.gguf"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".trit-moved.json", "falcon3-1b.gguf"]

    write_gguf(old, arch="bitnet-b1.58")  # BitNet under the old name goes to BitNet's own name
    assert {m.path.name: m.entry for m in lib.installed()} == {"bitnet.gguf": bitnet, "falcon3-1b.gguf": f1}
    assert lib.locate(old) == tmp_path / "bitnet.gguf"
    lib.delete(tmp_path / "bitnet.gguf", confirmed=True)
    assert (tmp_path / "falcon3-1b.gguf").exists() and lib.is_installed(f1)


def test_a_file_under_the_old_shared_name_no_entry_fits_is_a_plain_file(tmp_path: Path) -> None:
    entries = shared_name_catalog()
    lib = ModelLibrary(tmp_path, entries)
    old = tmp_path / SHARED
    for write in (
        lambda: falcon_gguf(old, 1, 256),  # the QA's made-up llama
        lambda: write_gguf(old, arch="gpt2"),
        lambda: old.write_bytes(b"GGUF" + b"\xff" * 40),  # unreadable header
        lambda: old.write_bytes(b"not a model"),
    ):
        write()
        assert [(m.path, m.name, m.entry) for m in lib.installed()] == [(old, "ggml-model-i2_s", None)]
        assert lib.available() == entries and not any(lib.is_installed(e) for e in entries)
        assert old.exists() and lib.locate(old) == old


def test_a_file_two_entries_fit_is_a_plain_file(tmp_path: Path) -> None:
    bitnet, f1, _ = shared_name_catalog()
    twin = dataclasses.replace(f1, id="twin", local_file="twin.gguf")
    lib = ModelLibrary(tmp_path, [bitnet, f1, twin])
    old = falcon_gguf(tmp_path / SHARED, 18, 2048)
    assert [(m.path, m.entry) for m in lib.installed()] == [(old, None)]
    assert not lib.is_installed(f1) and not lib.is_installed(twin)


def test_a_file_in_use_is_not_moved_and_the_start_moves_it_first(tmp_path: Path) -> None:
    """QA: the window loaded a Falcon3 file under the old name, and opening Models moved it:
    the window lost track of its model (Send said no model was loaded) and the dialog offered to
    delete it as not in use. The start moves it before anything loads; a file in use stays."""
    bitnet, f1, f3 = shared_name_catalog()
    old = falcon_gguf(tmp_path / SHARED, 18, 2048)
    lib = ModelLibrary(tmp_path, [bitnet, f1, f3])
    lib.in_use = lambda: ("", str(old))  # loaded from the old name
    assert [(m.path, m.entry) for m in lib.installed()] == [(old, f1)]
    assert old.exists() and lib.path_for(f1) == old and lib.locate(old) == old
    lib.in_use = tuple  # unloaded: the next listing moves it
    assert [m.path.name for m in lib.installed()] == ["falcon3-1b.gguf"]

    (tmp_path / "falcon3-1b.gguf").rename(old)
    (tmp_path / ".trit-moved.json").unlink()
    lib = ModelLibrary(tmp_path, [bitnet, f1, f3])
    lib.settle_old_names()  # AppContext.create, before the window loads a model
    assert not old.exists() and lib.path_for(f1) == tmp_path / "falcon3-1b.gguf"
    assert lib.locate(old) == tmp_path / "falcon3-1b.gguf"
    ModelLibrary(tmp_path / "missing", [bitnet, f1, f3]).settle_old_names()  # no folder: nothing


def test_a_file_under_the_old_name_is_not_moved_over_the_entry_s_own(tmp_path: Path) -> None:
    bitnet, f1, f3 = shared_name_catalog()
    lib = ModelLibrary(tmp_path, [bitnet, f1, f3])
    old = falcon_gguf(tmp_path / SHARED, 18, 2048)
    own = falcon_gguf(tmp_path / "falcon3-1b.gguf", 18, 2048)
    own.write_bytes(own.read_bytes() + b"\0" * 10)  # another download of it
    assert {m.path.name: m.entry for m in lib.installed()} == {SHARED: None, "falcon3-1b.gguf": f1}
    assert old.exists() and len(own.read_bytes()) == len(old.read_bytes()) + 10
    own.unlink()
    os.link(old, own)  # a move cut short between its link and its unlink
    assert [(m.path, m.entry) for m in lib.installed()] == [(own, f1)]
    assert not old.exists()


@pytest.mark.skipif(sys.platform == "win32", reason="holds the lock with fcntl")
@pytest.mark.parametrize("locked", [SHARED, "falcon3-1b.gguf"])
def test_a_file_is_not_moved_while_a_download_holds_either_name(tmp_path: Path, locked: str) -> None:
    bitnet, f1, f3 = shared_name_catalog()
    lib = ModelLibrary(tmp_path, [bitnet, f1, f3])
    old = falcon_gguf(tmp_path / SHARED, 18, 2048)
    lock = _PartLock(tmp_path / locked)  # a download finishing into that name
    assert lock.acquire()
    try:
        assert [(m.path, m.entry) for m in lib.installed()] == [(old, f1)]
        assert lib.is_installed(f1) and lib.path_for(f1) == old and not lib.is_installed(bitnet)
    finally:
        lock.release()
    assert [(m.path.name, m.entry) for m in lib.installed()] == [("falcon3-1b.gguf", f1)]
    assert not any(p.name.endswith(".lock") for p in tmp_path.iterdir())


def test_a_header_is_read_once_while_the_file_is_unchanged(tmp_path: Path, monkeypatch: Any) -> None:
    from trit.engine import gguf

    opened: list[str] = []
    real = gguf.GGUFFile.__init__

    def counting(self: Any, path: Any) -> None:
        opened.append(Path(path).name)
        real(self, path)

    monkeypatch.setattr(gguf.GGUFFile, "__init__", counting)
    lib = ModelLibrary(tmp_path, shared_name_catalog())
    old = falcon_gguf(tmp_path / SHARED, 1, 256)  # fits no entry: stays, and is looked at each time
    write_gguf(tmp_path / "other.gguf")
    for _ in range(3):
        assert [m.entry for m in lib.installed()] == [None, None]
        lib.available()
    assert opened == [SHARED]
    falcon_gguf(old, 22, 3072)
    os.utime(old, ns=(1, 1))
    assert [(m.path.name, m.entry and m.entry.id) for m in lib.installed()] == [
        ("falcon3-3b.gguf", "falcon3-3b"),
        ("other.gguf", None),
    ]
    assert opened == [SHARED, SHARED]  # the changed file once (its check under the locks is cached)


def test_a_model_an_older_trit_imported_as_bin_is_listed(tmp_path: Path) -> None:
    """QA: an older Trit imported my-model.bin under that name; ModelLibrary listed only *.gguf,
    so it was invisible, could not be deleted, and importing it again made a second copy."""
    lib = ModelLibrary(tmp_path / "models")
    lib.folder.mkdir()
    kept = write_gguf(lib.folder / "my-model.bin")
    write_gguf(lib.folder / "noext")
    (lib.folder / "notes.txt").write_text("GGU")
    (lib.folder / "readme.md").write_text("not a model")
    for name in ("x.bin.part", "x.bin.part.json", "x.bin.part.lock", ".importing-y.gguf", ".hidden.bin"):
        write_gguf(lib.folder / name)  # a download's or an import's files, a hidden file
    inst = lib.installed()
    assert [(m.path.name, m.name, m.kind) for m in inst] == [
        ("my-model.bin", "my-model.bin", "gguf"),
        ("noext", "noext", "gguf"),
    ]
    src = write_gguf(tmp_path / "my-model.bin")
    with pytest.raises(LibraryError, match="already in the models folder"):
        lib.import_model(src)
    assert not (lib.folder / "my-model.gguf").exists()
    lib.delete(inst[0], confirmed=True)
    assert not kept.exists() and [m.path.name for m in lib.installed()] == ["noext"]
    assert lib.import_model(src).path == lib.folder / "my-model.gguf"


def test_ram_fit() -> None:
    f = ram_fit(1_400_000_000, 6_200_000_000)
    assert f.fits and f.text == "needs 1.4 GB, you have 6.2 GB free"
    f = ram_fit(8_000_000_000, 6_200_000_000)
    assert not f.fits and f.text.startswith("needs 8.0 GB, you have 6.2 GB free: ")
    assert ram_fit(1).available_bytes > 0  # psutil
    assert (
        format_bytes(350_000_000) == "350 MB"
        and format_bytes(999) == "999 bytes"
        and format_bytes(12_345) == "12 KB"
    )


def test_library_installed_and_available(tmp_path: Path) -> None:
    e = entry(size=None, sha256=None)
    e2 = entry(id="m2", file="m2.gguf", size=10)
    lib = ModelLibrary(tmp_path / "models", [e, e2])
    assert lib.installed() == [] and lib.available() == [e, e2]
    lib.folder.mkdir()
    write_gguf(lib.folder / "m1.gguf")
    (lib.folder / "m2.gguf").write_bytes(b"x" * 5)  # wrong size: not the catalog's file
    (lib.folder / "m3.gguf.part").write_bytes(b"x")
    (lib.folder / "notes.txt").write_text("hi")
    hf = lib.folder / "hf-model"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    (hf / "model.safetensors").write_bytes(b"x" * 8)
    inst = {m.path.name: m for m in lib.installed()}
    assert set(inst) == {"m1.gguf", "m2.gguf", "hf-model"}
    assert (
        inst["m1.gguf"].entry == e and inst["m1.gguf"].name == "Model One" and inst["m1.gguf"].kind == "gguf"
    )
    assert inst["m2.gguf"].entry is None and inst["hf-model"].kind == "hf" and inst["hf-model"].size == 10
    assert lib.is_installed(e) and not lib.is_installed(e2)
    assert lib.available() == [e2]
    assert lib.ram_fit(e, 6_200_000_000).text == "needs 1.4 GB, you have 6.2 GB free"
    assert lib.ram_fit(inst["m2.gguf"], 10**10).needed_bytes == 300_000_006


def test_import_validates_with_the_engine(tmp_path: Path) -> None:
    lib = ModelLibrary(tmp_path / "models")
    src = write_gguf(tmp_path / "mine.gguf")
    m = lib.import_model(src)
    assert m.path == lib.folder / "mine.gguf" and m.kind == "gguf" and src.exists()
    assert m.path.read_bytes() == src.read_bytes()
    with pytest.raises(LibraryError, match="already in the models folder"):
        lib.import_model(src)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\xff" * 40)
    with pytest.raises(LibraryError, match=r"bad\.gguf"):
        lib.import_model(bad)
    gpt2 = write_gguf(tmp_path / "gpt2.gguf", arch="gpt2")
    with pytest.raises(LibraryError, match="not supported"):
        lib.import_model(gpt2)
    with pytest.raises(LibraryError, match="no such file"):
        lib.import_model(tmp_path / "missing.gguf")
    hf = tmp_path / "hfdir"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    with pytest.raises(LibraryError):
        lib.import_model(hf)
    assert sorted(p.name for p in lib.folder.iterdir()) == ["mine.gguf"]  # no half copies
    moved = lib.import_model(write_gguf(tmp_path / "moved.gguf"), move=True)
    assert moved.path.exists() and not (tmp_path / "moved.gguf").exists()


def test_import_refuses_odd_files_with_a_library_error(tmp_path: Path) -> None:
    # a number-array architecture made numpy raise "truth value ... ambiguous"; a config.json
    # nested 100,000 deep raised RecursionError: both escaped the Models dialog's handler
    lib = ModelLibrary(tmp_path / "models")
    w = GGUFWriter(tmp_path / "a.gguf")
    w.add_metadata("general.architecture", np.array([1, 2], np.uint8))
    w.write()
    with pytest.raises(LibraryError, match=r"a\.gguf: architecture array\(\[1, 2\].* is not supported"):
        lib.validate(tmp_path / "a.gguf")
    w = GGUFWriter(tmp_path / "long.gguf")
    w.add_string("general.architecture", "x" * 1_000_000)
    w.write()
    with pytest.raises(LibraryError, match="architecture 'xxx") as ei:
        lib.validate(tmp_path / "long.gguf")
    assert len(str(ei.value)) < 400
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(LibraryError, match="config.json: cannot read config.json: it is nested too deeply"):
        lib.validate(hf)
    with open(hf / "config.json", "wb") as f:  # sparse: 17 MB on paper
        f.truncate(17 << 20)
    with pytest.raises(LibraryError, match="config.json is implausibly large"):
        lib.validate(hf)
    (hf / "config.json").unlink()
    with pytest.raises(LibraryError, match="config.json is missing"):
        lib.validate(hf)


def test_a_gguf_named_otherwise_is_imported_as_gguf_and_listed(tmp_path: Path) -> None:
    lib = ModelLibrary(tmp_path / "models")
    src = tmp_path / "smol.bin"
    write_gguf(tmp_path / "smol.gguf").rename(src)
    m = lib.import_model(src)
    assert m.path == lib.folder / "smol.gguf" and m.name == "smol"
    assert [x.path.name for x in lib.installed()] == ["smol.gguf"]
    with pytest.raises(LibraryError, match="already in the models folder"):
        lib.import_model(src)


def test_import_hf_folder(tmp_path: Path) -> None:
    src = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "bitnet-s256-packed"
    lib = ModelLibrary(tmp_path / "models")
    m = lib.import_model(src)
    assert m.kind == "hf" and m.path == lib.folder / src.name and (m.path / "config.json").is_file()
    assert [x.kind for x in lib.installed()] == ["hf"]
    broken = tmp_path / "broken"
    shutil.copytree(src, broken)
    doc = json.loads((broken / "config.json").read_text())
    doc["hidden_size"] = "wide"
    (broken / "config.json").write_text(json.dumps(doc))
    with pytest.raises(LibraryError, match="config.json"):
        lib.import_model(broken)


def test_delete_needs_confirmation_and_stays_in_the_folder(tmp_path: Path) -> None:
    lib = ModelLibrary(tmp_path / "models")
    m = lib.import_model(write_gguf(tmp_path / "a.gguf"))
    (lib.folder / "a.gguf.part").write_bytes(b"x")
    with pytest.raises(LibraryError, match="confirmation"):
        lib.delete(m, confirmed=False)
    assert m.path.exists()
    outside = write_gguf(tmp_path / "outside.gguf")
    with pytest.raises(LibraryError, match="only models directly in the models folder"):
        lib.delete(outside, confirmed=True)
    with pytest.raises(LibraryError):
        lib.delete(lib.folder / ".." / "outside.gguf", confirmed=True)
    assert outside.exists()
    lib.delete(m, confirmed=True)
    assert list(lib.folder.iterdir()) == []
    d = lib.folder / "hf"
    d.mkdir()
    (d / "config.json").write_text("{}")
    lib.delete(InstalledModel(d, "hf", 2, "hf"), confirmed=True)
    assert not d.exists()


def test_choose_folder(tmp_path: Path) -> None:
    lib = ModelLibrary(tmp_path / "a")
    lib.set_folder(tmp_path / "b" / "c")
    assert lib.folder == tmp_path / "b" / "c" and lib.folder.is_dir()
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(LibraryError, match="cannot use this folder"):
        lib.set_folder(f / "sub")
    # a NUL character (pasted): ValueError from the os calls, and OK in Settings did nothing
    with pytest.raises(LibraryError, match="cannot use this folder for models: .*null"):
        lib.set_folder(str(tmp_path / "with\0nul"))
    assert lib.folder == tmp_path / "b" / "c"


def test_download_request(tmp_path: Path) -> None:
    lib = ModelLibrary(tmp_path)
    verified = entry()
    rq = lib.download_request(verified, endpoint="http://127.0.0.1:9", token="t")
    assert rq.dest == tmp_path / "m1.gguf" and rq.sha256 == "ab" * 32 and rq.size == 1234
    assert rq.revision == "abc" and rq.key == "m1" and rq.token == "t" and not rq.allow_unverified
    unverified = entry(sha256=None)
    with pytest.raises(UnverifiedEntryError):
        lib.download_request(unverified)
    assert lib.download_request(unverified, confirmed=True).allow_unverified
    with pytest.raises(LibraryError, match="bundled"):
        lib.download_request(bundled_entry())


def test_catalog_entry_downloads_from_local_hub(tmp_path: Path) -> None:
    from trit.app.core.downloads import Download

    from .hubserver import HubServer, HubState

    data = write_gguf(tmp_path / "src.gguf").read_bytes()
    e = entry(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    with HubServer(HubState(files={("org/m1", "m1.gguf"): data})) as hub:
        lib = ModelLibrary(tmp_path / "models", [e])
        Download(lib.download_request(e, endpoint=hub.endpoint), retries=0).run()
    assert lib.is_installed(e) and lib.validate(lib.path_for(e)) == "gguf"
    assert [m.entry for m in lib.installed()] == [e]


def test_stale_import_copies_are_removed(tmp_path: Path) -> None:
    """An app that died mid-import left a hidden .importing-* copy (gigabytes) nothing removed."""
    import os
    import time

    lib = ModelLibrary(tmp_path)
    old_dir = tmp_path / ".importing-abc123"
    (old_dir / "sub").mkdir(parents=True)
    (old_dir / "sub" / "model.gguf").write_bytes(b"x" * 10)
    old_file = tmp_path / ".importing-model.gguf"
    old_file.write_bytes(b"y")
    running = tmp_path / ".importing-def456"
    running.mkdir()
    (running / "big.gguf").write_bytes(b"z")  # written just now: an import in progress
    keep = tmp_path / "model.gguf"
    keep.write_bytes(b"GGUF")
    hour_ago = time.time() - 7200
    for p in (old_dir, old_dir / "sub", old_dir / "sub" / "model.gguf", old_file, keep):
        os.utime(p, (hour_ago, hour_ago))
    assert sorted(lib.remove_stale_imports()) == [old_dir, old_file]
    assert not old_dir.exists() and not old_file.exists() and running.exists() and keep.exists()


HF_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "bitnet-s256-packed"


def hf_copy(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(HF_FIXTURE / name, folder / name)
    return folder


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need a privilege there")
def test_import_copies_only_the_folders_own_files(tmp_path: Path) -> None:
    """A cloned or unpacked folder with README.md -> ~/.ssh/id_ed25519 and a link out through
    ../: copytree copied the private file into the models folder as an ordinary file."""
    secret = tmp_path / "id_ed25519"
    secret.write_text("PRIVATE KEY")
    src = hf_copy(tmp_path / "evil")
    (src / "README.md").symlink_to(secret)
    (src / "docs").mkdir()
    (src / "docs" / "up.md").symlink_to("../../id_ed25519")
    (src / "docs" / "gone.md").symlink_to("../nothing-here")
    (src / "docs" / "real.md").write_text("inside")
    (src / "docs" / "same.md").symlink_to("real.md")  # stays inside: followed
    (src / "here").symlink_to("docs")  # a folder link: its files come through docs/
    lib = ModelLibrary(tmp_path / "models")
    m = lib.import_model(src)
    copied = sorted(p.relative_to(m.path).as_posix() for p in m.path.rglob("*"))
    assert copied == ["config.json", "docs", "docs/real.md", "docs/same.md", "model.safetensors"]
    assert (m.path / "docs" / "same.md").read_text() == "inside" and not (
        m.path / "docs" / "same.md"
    ).is_symlink()
    assert [(s.name, s.reason) for s in m.skipped] == [
        ("README.md", "a link to outside the folder"),
        ("docs/gone.md", "a broken link"),
        ("docs/up.md", "a link to outside the folder"),
        ("here", "a link to a folder"),
    ]
    assert skipped_text(m.skipped) == (
        "Left out README.md (a link to outside the folder), docs/gone.md (a broken link), "
        "docs/up.md (a link to outside the folder) and 1 more."
    )
    assert not any(b"PRIVATE KEY" in p.read_bytes() for p in m.path.rglob("*") if p.is_file())


@pytest.mark.skipif(sys.platform == "win32", reason="devices and FIFOs are POSIX")
def test_import_never_reads_a_device_or_fifo_in_the_folder(tmp_path: Path) -> None:
    """tokenizer.model -> /dev/zero was copied until the disk was full, and the error was a raw
    list of tuples; generation_config.json -> /proc/self/environ copied the environment."""
    src = hf_copy(tmp_path / "evil")
    (src / "tokenizer.model").symlink_to("/dev/zero")
    (src / "generation_config.json").symlink_to("/proc/self/environ")
    os.mkfifo(src / "pipe")
    lib = ModelLibrary(tmp_path / "models")
    m = lib.import_model(src)
    assert sorted(p.name for p in m.path.iterdir()) == ["config.json", "model.safetensors"]
    assert [(s.name, s.reason) for s in m.skipped] == [
        ("generation_config.json", "a link to outside the folder"),
        ("pipe", "not a regular file (a device, FIFO or socket)"),
        ("tokenizer.model", "a link to outside the folder"),
    ]
    inside = hf_copy(tmp_path / "inner")
    os.mkfifo(inside / "fifo")
    (inside / "tokenizer.model").symlink_to("fifo")  # a link inside, to a FIFO
    m = lib.import_model(inside)
    assert [(s.name, s.reason) for s in m.skipped] == [
        ("fifo", "not a regular file (a device, FIFO or socket)"),
        ("tokenizer.model", "not a regular file (a device, FIFO or socket)"),
    ]
    os.symlink("/dev/zero", tmp_path / "zero.gguf")  # picked itself: followed, and refused
    with pytest.raises(LibraryError, match=r"zero\.gguf: not a regular file"):
        lib.import_model(tmp_path / "zero.gguf")


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need a privilege there")
def test_import_refuses_a_folder_whose_model_files_link_out(tmp_path: Path) -> None:
    elsewhere = hf_copy(tmp_path / "elsewhere")
    src = tmp_path / "evil"
    src.mkdir()
    (src / "config.json").symlink_to(elsewhere / "config.json")
    shutil.copyfile(elsewhere / "model.safetensors", src / "model.safetensors")
    lib = ModelLibrary(tmp_path / "models")
    with pytest.raises(
        LibraryError, match=r"evil/config\.json: a link to outside the folder: .*needs this one"
    ):
        lib.import_model(src)
    assert not lib.folder.exists() or list(lib.folder.iterdir()) == []


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need a privilege there")
def test_import_follows_a_hub_cache_snapshot_into_its_blobs(tmp_path: Path) -> None:
    """Hugging Face's cache keeps a snapshot's files as links to ../../blobs/<hash>: its repo's."""
    repo = tmp_path / "hub" / "models--org--tiny"
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for i, name in enumerate(("config.json", "model.safetensors")):
        shutil.copyfile(HF_FIXTURE / name, repo / "blobs" / f"h{i}")
        (snap / name).symlink_to(f"../../blobs/h{i}")
    (tmp_path / "hub" / "other").write_text("not this repo's")
    (snap / "README.md").symlink_to("../../../other")
    m = ModelLibrary(tmp_path / "models").import_model(snap)
    assert sorted(p.name for p in m.path.iterdir()) == ["config.json", "model.safetensors"]
    assert (m.path / "model.safetensors").read_bytes() == (HF_FIXTURE / "model.safetensors").read_bytes()
    assert [s.name for s in m.skipped] == ["README.md"]


def test_a_copy_error_names_the_file_in_words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk during copytree said "[('…/tokenizer.model', '…', '[Errno 28] …')]"."""
    import errno

    from trit.app.core import catalog

    real_open = open

    def full_disk(path: Any, mode: str = "r", *a: Any, **kw: Any) -> Any:
        if ("w" in mode or "x" in mode) and Path(path).name == "model.safetensors":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *a, **kw)

    monkeypatch.setattr(catalog, "open", full_disk, raising=False)
    src = hf_copy(tmp_path / "hf")
    lib = ModelLibrary(tmp_path / "models")
    with pytest.raises(LibraryError) as ei:
        lib.import_model(src)
    assert str(ei.value) == (
        f"{src / 'model.safetensors'}: cannot copy the file into the models folder: "
        "the disk holding the models folder is full"
    )
    assert list(lib.folder.iterdir()) == []  # no half copy left behind
