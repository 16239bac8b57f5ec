"""Settings: defaults, round trip, validation with per-field fallback, damaged file kept as a
backup; plus the Qt-free rule for the whole of app/core."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from trit.app.core.sampling import Sampling
from trit.app.core.settings import (
    ACTIVATIONS,
    BITNET_MODES,
    DEFAULT_SAMPLING,
    FAMILY_SAMPLING,
    KV_TYPES,
    LM_HEADS,
    Settings,
    SettingsStore,
    check_setting,
    default_config_path,
    default_settings,
    physical_cores,
    settings_from_dict,
)

from trit.default_model import user_models_dir


def test_defaults() -> None:
    s = default_settings()
    assert s.threads == physical_cores() >= 1
    assert Path(s.models_dir) == user_models_dir()
    assert s.sampling_for("smollm") == Sampling(0.2, 0.9, 512)
    assert s.sampling_for("bitnet") == FAMILY_SAMPLING["bitnet"]
    assert s.sampling_for("unknown-family") == DEFAULT_SAMPLING
    assert default_config_path().name == "settings.json" and "Trit" in default_config_path().parts


def test_missing_file_gives_defaults(tmp_path: Path) -> None:
    st = SettingsStore(tmp_path / "settings.json")
    assert st.load() == default_settings() and st.problems == [] and st.backup is None


def test_round_trip(tmp_path: Path) -> None:
    st = SettingsStore(tmp_path / "sub" / "settings.json")
    s = Settings(
        threads=3,
        models_dir=str(tmp_path / "models"),
        default_model="bitnet-b1.58-2b4t-i2s",
        sampling={**FAMILY_SAMPLING, "bitnet": Sampling(0.1, 0.5, 99)},
        watts_per_core=7.5,
        hf_endpoint="http://127.0.0.1:9",
        max_parallel_downloads=2,
        context=2048,
        activations="q8",
        lm_head="q8_0",
        kv_cache="f16",
        hf_token="hf_abcDEF123",
    )
    st.save(s)
    assert st.load() == s and st.problems == []
    doc = json.loads(st.path.read_text())
    assert doc["version"] == 1 and doc["sampling"]["bitnet"] == {
        "temperature": 0.1,
        "top_p": 0.5,
        "max_tokens": 99,
        "top_k": 40,
        "min_p": 0.05,
        "repeat_penalty": 1.1,
        "seed": None,
    }
    assert [p.name for p in st.path.parent.iterdir()] == ["settings.json"]  # no temp file left


def test_bad_fields_fall_back_one_by_one(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    original = json.dumps(
        {
            "threads": 0,
            "models_dir": str(tmp_path),
            "watts_per_core": "hot",
            "hf_endpoint": "ftp://x",
            "context": 1024,
            "sampling": {"bitnet": {"temperature": -1}, "smollm": {"max_tokens": 64}},
            "from_the_future": True,
        }
    )
    path.write_text(original)
    st = SettingsStore(path)
    s = st.load()
    d = default_settings()
    assert s.threads == d.threads and s.watts_per_core == d.watts_per_core and s.hf_endpoint == d.hf_endpoint
    assert s.models_dir == str(tmp_path) and s.context == 1024  # the good fields are kept
    assert s.sampling["bitnet"] == FAMILY_SAMPLING["bitnet"]
    assert s.sampling["smollm"] == Sampling(0.2, 0.9, 64)
    text = "\n".join(st.problems)
    assert "threads" in text and "watts_per_core" in text and "hf_endpoint" in text and "temperature" in text
    assert st.backup is not None and st.backup.read_text() == original


def test_corrupt_file_keeps_backup(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text('{"threads": 4,')
    st = SettingsStore(path)
    assert st.load() == default_settings()
    assert "damaged" in st.problems[0]
    assert st.backup is not None and st.backup.read_text() == '{"threads": 4,'
    path.write_text("{")  # damaged again within the same second: a second copy, the first kept
    st.load()
    assert sorted(p.read_text() for p in tmp_path.glob("settings.json.bad-*")) == ["{", '{"threads": 4,']
    st.save(default_settings())
    assert SettingsStore(path).load() == default_settings()


def test_a_bad_file_is_reported_and_kept_once_then_rewritten_clean(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    doc = {
        "threads": 3,
        "context": -5,
        "watts_per_core": 2.25,
        "hf_endpoint": " https://hub.example.org/ ",
        "sampling": {"smollm": {"max_tokens": 64}, "bitnet": [1]},
        "from_the_future": {"x": 1},
    }
    path.write_text(json.dumps(doc))
    st = SettingsStore(path)
    first = st.load()
    assert first.context == default_settings().context and "context" in st.problems[0]
    assert st.backup is not None and json.loads(st.backup.read_text()) == doc
    # the file now holds the good values only; what was missing or bad follows the defaults
    assert json.loads(path.read_text()) == {
        "version": 1,
        "threads": 3,
        "watts_per_core": 2.25,
        "hf_endpoint": "https://hub.example.org",
        "sampling": {
            "smollm": {
                "temperature": 0.2,
                "top_p": 0.9,
                "max_tokens": 64,
                "top_k": 40,
                "min_p": 0.05,
                "repeat_penalty": 1.1,
                "seed": None,
            }
        },
        "from_the_future": {"x": 1},
    }
    for _ in range(2):  # the next starts are clean: no message, no new copy
        assert st.load() == first and st.problems == [] and st.backup is None
    assert len(list(tmp_path.glob("settings.json.bad-*"))) == 1
    # a damaged file becomes an empty one (all defaults) once its copy is kept
    path.write_text('{"threads": 4,')
    assert st.load() == default_settings() and st.backup is not None
    assert json.loads(path.read_text()) == {"version": 1}
    assert SettingsStore(path).load() == default_settings()


def test_a_bad_file_that_cannot_be_copied_is_left_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "settings.json"
    path.write_text('{"context": -5}')

    def copy_fails(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("trit.app.core.settings._write_new_private", copy_fails)
    st = SettingsStore(path)
    st.load()
    assert st.backup is None and "could not keep a copy" in st.problems[-1]
    assert path.read_text() == '{"context": -5}'  # never overwritten without a copy


def test_not_utf8_bom_and_deep_nesting_are_reported_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    st = SettingsStore(path)
    # saved by a Latin-1 editor: the readable fields are kept, the undecodable one falls back
    path.write_bytes(
        '{"threads": 3, "watts_per_core": 7.5, "models_dir": "/home/j\u00f6rg/m"}'.encode("latin-1")
    )
    s = st.load()
    assert s.threads == 3 and s.watts_per_core == 7.5 and s.models_dir == default_settings().models_dir
    assert "models_dir is not UTF-8" in st.problems[0] and st.backup is not None
    assert st.backup.read_bytes().endswith(b'j\xf6rg/m"}')  # the copy is the file as it was
    assert json.loads(path.read_text(encoding="utf-8")) == {"version": 1, "threads": 3, "watts_per_core": 7.5}
    # Windows Notepad's byte order mark
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"threads": 3}).encode())
    assert st.load().threads == 3 and st.problems == []
    # deeper than the JSON parser's recursion limit
    path.write_bytes(b'{"threads": 3, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert st.load() == default_settings() and "nested too deeply" in st.problems[0]
    assert st.backup is not None


def test_watts_keep_the_precision_the_settings_dialog_shows() -> None:
    assert check_setting("watts_per_core", 0.05) == 0.05
    assert check_setting("watts_per_core", 2.25) == 2.25
    assert check_setting("watts_per_core", 2.3449) == 2.34  # finer than 0.01 W is rounded
    assert check_setting("watts_per_core", 100) == 100.0
    for bad in (0, 0.004, -1, 100.01, float("inf"), True, "5"):
        with pytest.raises(ValueError, match="from 0.01 to 100"):
            check_setting("watts_per_core", bad)


@pytest.mark.parametrize("doc", [[], "x", 3, None])
def test_non_object(doc: object) -> None:
    s, problems = settings_from_dict(doc)
    assert s == default_settings() and problems


def test_numbers_beyond_float_range_are_reported_not_raised(tmp_path: Path) -> None:
    # math.isfinite(10**400) raised OverflowError, which load() did not catch: Trit did not start
    big = "1" + "0" * 400
    path = tmp_path / "settings.json"
    st = SettingsStore(path)
    path.write_text('{"threads": 3, "watts_per_core": ' + big + "}")
    s = st.load()
    assert s.threads == 3 and s.watts_per_core == default_settings().watts_per_core
    assert "watts_per_core must be a number of watts" in st.problems[0]
    path.write_text('{"sampling": {"smollm": {"temperature": ' + big + "}}}")
    assert st.load().sampling["smollm"] == FAMILY_SAMPLING["smollm"]
    assert "sampling for smollm: temperature must be a number" in st.problems[0]
    for field in ("temperature", "top_p"):
        with pytest.raises(ValueError, match=f"{field} must be a number"):
            Sampling.from_dict({field: 10**400})
    with pytest.raises(ValueError, match="from 0.01 to 100"):
        check_setting("watts_per_core", -(10**400))


def test_a_huge_bad_value_is_named_in_a_short_message() -> None:
    # the message echoed the whole value: a megabyte string made a megabyte dialog
    _, problems = settings_from_dict({"default_model": 7, "hf_endpoint": "x" * 1_000_000})
    (p,) = [p for p in problems if p.startswith("hf_endpoint")]
    assert len(p) < 300 and "(was 'xxxx" in p and "…)" in p
    _, problems = settings_from_dict(
        {"threads": 10**400, "sampling": {"f" * 10_000: {"top_p": "x" * 10_000}}}
    )
    assert all(len(p) < 300 for p in problems) and "about 400 digits" in problems[0]
    assert "sampling for fff" in problems[1] and "…" in problems[1]


def test_sampling_validation() -> None:
    assert Sampling(1, 1, 1).validated() == Sampling(1.0, 1.0, 1)
    for bad in (
        Sampling(temperature=float("nan")),
        Sampling(top_p=1.5),
        Sampling(max_tokens=0),
        Sampling(max_tokens=True),
    ):
        with pytest.raises(ValueError):
            bad.validated()
    with pytest.raises(ValueError):
        Sampling.from_dict([1, 2])
    assert Sampling.from_dict({"temperature": 0.5, "junk": 1}) == Sampling(temperature=0.5)
    assert Sampling(0.3, 0.8, 10).engine_kwargs() == {
        "temperature": 0.3,
        "top_p": 0.8,
        "max_tokens": 10,
        "top_k": 40,
        "min_p": 0.05,
        "repeat_penalty": 1.1,
        "seed": None,
    }


def test_top_k_min_p_repeat_penalty_and_seed_are_settings_too() -> None:
    """The window could only set temperature, top-p and max tokens: no reply could be repeated
    (no seed) and top-k, min-p and the repeat penalty were the engine's, whatever the model."""
    s = Sampling.from_dict({"top_k": 1, "min_p": 0.0, "repeat_penalty": 1, "seed": 42})
    assert (s.top_k, s.min_p, s.repeat_penalty, s.seed) == (1, 0.0, 1.0, 42)
    assert isinstance(s.repeat_penalty, float)
    kw = s.engine_kwargs()
    assert (kw["top_k"], kw["min_p"], kw["repeat_penalty"], kw["seed"]) == (1, 0.0, 1.0, 42)
    assert Sampling.from_dict(s.to_dict()) == s  # round trip through the store and the settings file
    # a record from before these fields: the engine's defaults, as it was sampled then
    old = Sampling.from_dict({"temperature": 0.2, "top_p": 0.9, "max_tokens": 7})
    assert (old.top_k, old.min_p, old.repeat_penalty, old.seed) == (40, 0.05, 1.1, None)
    for field, bad in (
        ("top_k", -1),
        ("top_k", 1.5),
        ("top_k", 10**6),
        ("min_p", 1.0),
        ("min_p", float("nan")),
        ("repeat_penalty", 0),
        ("repeat_penalty", 9),
        ("seed", -1),
        ("seed", 2**31),
        ("seed", True),
        ("seed", "42"),
    ):
        with pytest.raises(ValueError, match=field):
            Sampling.from_dict({field: bad})
    # the family defaults in a settings file carry them as well
    st, problems = settings_from_dict({"sampling": {"smollm": {"seed": 7, "top_k": 5}}})
    assert not problems and st.sampling["smollm"].seed == 7 and st.sampling["smollm"].top_k == 5


def mode(p: Path) -> int:
    return p.stat().st_mode & 0o777


posix_only = pytest.mark.skipif(sys.platform == "win32", reason="Unix file modes")


@posix_only
def test_the_file_is_owner_only_because_it_may_hold_a_token(tmp_path: Path) -> None:
    st = SettingsStore(tmp_path / "settings.json")
    token = "hf_secretSECRET42"
    s = dataclasses.replace(default_settings(), hf_token=token)
    st.save(s)
    assert mode(st.path) == 0o600 and json.loads(st.path.read_text())["hf_token"] == token
    assert token not in repr(s)  # never in a log line or a traceback's locals
    # a leftover temp file from a crash, readable by all, does not pass its mode on
    tmp = st.path.with_name(".settings.json.tmp")
    tmp.write_text("{}")
    tmp.chmod(0o644)
    st.save(s)
    assert mode(st.path) == 0o600
    # a file made readable by all (by hand, a copy, an older Trit) is tightened when read
    st.path.chmod(0o644)
    assert st.load().hf_token == token and mode(st.path) == 0o600
    # the copy kept of a damaged file holding a token is owner-only too; the token is not echoed
    st.path.write_text(json.dumps({"hf_token": "hf_has a space", "threads": 0}))
    st.path.chmod(0o644)
    loaded = st.load()
    assert loaded.hf_token == "" and st.backup is not None and mode(st.backup) == 0o600
    assert "hf_has" not in "\n".join(st.problems) and "hf_token" in "\n".join(st.problems)


def test_activations_token_and_endpoint_validation() -> None:
    assert ACTIVATIONS == ("f32", "q8") and default_settings().activations == "f32"
    assert default_settings().hf_token == ""
    s, problems = settings_from_dict({"activations": "q4", "hf_token": 5})
    assert s.activations == "f32" and s.hf_token == "" and len(problems) == 2
    assert check_setting("activations", "q8") == "q8"
    assert LM_HEADS == ("f16", "q8_0") and default_settings().lm_head == "f16"
    assert check_setting("lm_head", "q8_0") == "q8_0"
    s, problems = settings_from_dict({"lm_head": "q4"})
    assert s.lm_head == "f16" and len(problems) == 1 and "lm_head" in problems[0]
    assert KV_TYPES == ("f32", "f16", "q8", "q3") and default_settings().kv_cache == "f32"
    assert check_setting("kv_cache", "f16") == "f16" and check_setting("kv_cache", "q3") == "q3"
    s, problems = settings_from_dict({"kv_cache": "q4"})
    assert s.kv_cache == "f32" and len(problems) == 1 and "kv_cache" in problems[0]
    assert BITNET_MODES == ("b1.58", "a4.8") and default_settings().bitnet_mode == "b1.58"
    s, problems = settings_from_dict({"bitnet_mode": "a4.8"})
    assert s.bitnet_mode == "a4.8" and not problems
    assert s.engine_options() == {"activations": "f32", "head": "f16", "kv": "f32", "a48": True}
    s, problems = settings_from_dict({"bitnet_mode": "a8"})
    assert s.bitnet_mode == "b1.58" and len(problems) == 1 and "bitnet_mode" in problems[0]
    assert check_setting("hf_token", "  hf_x1\n") == "hf_x1"  # pasted with a line break
    assert check_setting("hf_token", "") == ""
    for bad in ("hf_a b", "hf_\u00e9", "hf_\tx", "x" * 401):
        with pytest.raises(ValueError, match="one word"):
            check_setting("hf_token", bad)
    assert check_setting("hf_endpoint", " https://hub.example.org/ ") == "https://hub.example.org"
    assert check_setting("hf_endpoint", "http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    for bad in ("huggingface.co", "https://", "ftp://x", "https://a b", "http://h:99999"):
        with pytest.raises(ValueError, match="http"):
            check_setting("hf_endpoint", bad)
    # download URLs are <endpoint>/<repo>/resolve/...: a query or fragment swallows that path
    for bad in ("http://127.0.0.1:8080?mirror=1", "https://hf.co/#x", "https://hf.co/?"):
        with pytest.raises(ValueError, match="without \\? or #"):
            check_setting("hf_endpoint", bad)
    for bad in ("https://me:secret@hub.example.org", "https://me@hub.example.org"):
        with pytest.raises(ValueError, match="user name or password"):
            check_setting("hf_endpoint", bad)
    with pytest.raises(ValueError, match="from 1 to 512"):
        check_setting("threads", 0)
    with pytest.raises(KeyError):
        check_setting("no_such_setting", 1)


def test_an_endpoint_with_credentials_from_an_older_trit_keeps_its_mirror_and_shows_no_password() -> None:
    """An older Trit kept https://user:password@mirror; loading it put the password into the
    status bar (the refusal echoed the value) and replaced the mirror with huggingface.co."""
    for old, kept in (
        ("https://alice:s3cret@hf-mirror.corp.example/", "https://hf-mirror.corp.example"),
        ("http://alice@127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("https://a:b@c@hub.example.org", "https://hub.example.org"),
    ):
        s, problems = settings_from_dict({"hf_endpoint": old})
        assert s.hf_endpoint == kept
        assert len(problems) == 1 and "user name and password" in problems[0] and kept in problems[0]
        assert "s3cret" not in problems[0] and "alice" not in problems[0]
    # a password urlsplit cannot parse ([ or ]) is removed all the same
    s, problems = settings_from_dict({"hf_endpoint": "https://bob:s3cr[et@mirror.corp/"})
    assert s.hf_endpoint == "https://mirror.corp" and "s3cr" not in problems[0] and "bob" not in problems[0]
    # a value that is bad for another reason as well is refused once, without its credentials
    for bad in ("ftp://alice:s3cret@x", "https://alice:s3cret@mirror.corp:99999/"):
        s, problems = settings_from_dict({"hf_endpoint": bad})
        assert s.hf_endpoint == "https://huggingface.co" and len(problems) == 1, problems
        assert "s3cret" not in problems[0] and "alice" not in problems[0]
        assert "using 'https://huggingface.co'" in problems[0] and " is used" not in problems[0]


def test_the_kept_copy_of_a_file_with_an_endpoint_password_holds_no_password(tmp_path: Path) -> None:
    """The settings no longer kept user:password@, but the settings.json.bad-<time> copy made of
    the old file still held it in clear."""
    path = tmp_path / "settings.json"
    for text in (
        '{"hf_endpoint": "https://alice:s3cret@hf-mirror.corp.example/", "threads": 3}',
        # written with escapes: not found as written, so the copy is the document without it
        '{"hf_endpoint": "https://alice:s3cr\\u0065t@hf-mirror.corp.example/", "threads": 3}',
    ):
        for old in tmp_path.glob("settings.json.bad-*"):
            old.unlink()
        path.write_text(text)
        st = SettingsStore(path)
        loaded = st.load()
        assert loaded.hf_endpoint == "https://hf-mirror.corp.example" and loaded.threads == 3
        assert st.backup is not None and "without the endpoint's user name and password" in st.problems[-1]
        kept = st.backup.read_text()
        assert "s3cr" not in kept and "alice" not in kept, kept
        assert json.loads(kept) == {"hf_endpoint": "https://hf-mirror.corp.example/", "threads": 3}
        if os.name == "posix":
            assert stat.S_IMODE(st.backup.stat().st_mode) == 0o600
        assert "s3cr" not in path.read_text()  # nor the file written again


def test_app_core_never_imports_qt() -> None:
    core = Path(__file__).resolve().parents[2] / "app" / "core"
    mods = sorted(p.stem for p in core.glob("*.py") if p.stem != "__init__")
    assert {"store", "catalog", "downloads", "meters", "settings"} <= set(mods)
    code = (
        "import sys, importlib\n"
        f"for m in {mods!r}:\n"
        "    importlib.import_module('trit.app.core.' + m)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('PySide6', 'PyQt5', 'PyQt6', 'shiboken6'))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    for p in core.glob("*.py"):
        # also catches an import inside a function, which the subprocess check cannot see
        assert not re.search(
            r"^\s*(from|import)\s+(PySide6|PyQt[56]|shiboken6)", p.read_text(encoding="utf-8"), re.MULTILINE
        ), p


def test_a_models_folder_with_a_nul_character_is_refused_by_name() -> None:
    from trit.app.core.settings import check_setting

    with pytest.raises(ValueError, match="must not contain a NUL character"):
        check_setting("models_dir", "/home/me/mod\0els")
    assert check_setting("models_dir", "/home/me/models") == "/home/me/models"


def test_saves_at_the_same_moment_do_not_share_a_temp_file(tmp_path: Path) -> None:
    """Two processes (or windows) saving at once used one temp name: one replaced the other's
    half-written file, and 140 of 600 saves raised FileNotFoundError."""
    import threading

    a, b = SettingsStore(tmp_path / "settings.json"), SettingsStore(tmp_path / "settings.json")
    errors: list[BaseException] = []

    def save(store: SettingsStore, threads: int) -> None:
        try:
            for _ in range(150):
                store.save(dataclasses.replace(default_settings(), threads=threads))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    workers = [threading.Thread(target=save, args=(s, n)) for s, n in ((a, 2), (b, 3))]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert errors == []
    assert SettingsStore(tmp_path / "settings.json").load().threads in (2, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["settings.json"]  # no temp file left
