"""App settings: a JSON file in the per-user config dir.

load() never fails on a bad file: it keeps a copy (settings.json.bad-<time>), uses the defaults
for what it could not read, says what was wrong in `problems`, for the UI to show once, and
rewrites the file without the bad values, so the next start is clean.
save() writes atomically (temp file + os.replace). The file may hold a Hugging Face access token,
so it (and any kept copy) is readable by its owner only (0600).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from trit.engine.model import KV_TYPES, LM_HEADS, physical_cores  # the engine's, re-exported for the UI

from trit.text import short_repr, short_text

from .sampling import Sampling, is_finite_number

SETTINGS_NAME = "settings.json"
SETTINGS_VERSION = 1
FILE_MODE = 0o600  # owner read/write: the file may hold an access token
ACTIVATIONS = ("f32", "q8")  # trit.engine.load_model(activations=...)
BITNET_MODES = ("b1.58", "a4.8")  # trit.engine.load_model(a48=False / True)
MAX_TOKEN_CHARS = 400
# watts per core: the range and precision the settings dialog's field shows, so that opening it and
# pressing OK never changes the value (a figure finer than 0.01 W says nothing about an estimate)
WATTS_MIN, WATTS_MAX, WATTS_DECIMALS = 0.01, 100.0, 2

# Per chat family; the model cards' recommendations where they give one (SmolLM2: 0.2 / 0.9).
FAMILY_SAMPLING: dict[str, Sampling] = {
    "bitnet": Sampling(temperature=0.6, top_p=0.9, max_tokens=512),
    "falcon3": Sampling(temperature=0.7, top_p=0.9, max_tokens=512),
    "smollm": Sampling(temperature=0.2, top_p=0.9, max_tokens=512),
    "llama3": Sampling(temperature=0.6, top_p=0.9, max_tokens=512),
}
DEFAULT_SAMPLING = Sampling()


def default_config_path() -> Path:
    """<user config dir>/Trit/settings.json (platformdirs)."""
    import platformdirs

    return Path(platformdirs.user_config_dir("Trit", appauthor=False)) / SETTINGS_NAME


def _default_models_dir() -> str:
    from trit.default_model import user_models_dir

    return str(user_models_dir())


@dataclass(frozen=True)
class Settings:
    threads: int  # engine threads; default: physical cores
    models_dir: str  # the model library folder
    default_model: str = ""  # catalog id or path of the model to open at start; "" = bundled default
    sampling: dict[str, Sampling] = field(default_factory=lambda: dict(FAMILY_SAMPLING))  # per family
    watts_per_core: float = 5.0  # for the CPU-time energy estimate
    hf_endpoint: str = "https://huggingface.co"
    max_parallel_downloads: int = 1
    context: int = 4096  # tokens; the engine caps it at the model's own context
    # how llama.cpp weight types (Q4_1 ...) meet the activations: "f32" exact, "q8" llama.cpp-style
    activations: str = "f32"
    # the output head of models that store it as f16 (BitNet): "f16" exact, "q8_0" a Q8_0 copy built
    # at load (~40% faster decode on BitNet 2B4T, logits move by its rounding)
    lm_head: str = "f16"
    # the KV cache: "f32" exact, "f16" half the memory (long chats: attention reads half the bytes),
    # "q8" a quarter, "q3" BitNet a4.8's 3-bit cache (for models trained with it)
    kv_cache: str = "f32"
    # "a4.8": BitNet a4.8's 4-bit activations (for models trained with them; others lose most of
    # their quality), "b1.58": the activations as BitNet b1.58 (and every other model) computes them
    bitnet_mode: str = "b1.58"
    hf_token: str = field(default="", repr=False)  # Hugging Face access token for gated repos

    def engine_options(self) -> dict[str, Any]:
        """The load_model() keyword arguments these settings ask for (besides threads and context)."""
        return {
            "activations": self.activations,
            "head": self.lm_head,
            "kv": self.kv_cache,
            "a48": self.bitnet_mode == "a4.8",
        }

    def sampling_for(self, family: str) -> Sampling:
        """The family's default sampling, or the general default for an unknown family."""
        return self.sampling.get(family) or FAMILY_SAMPLING.get(family) or DEFAULT_SAMPLING

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"version": SETTINGS_VERSION}
        for f in fields(self):
            v = getattr(self, f.name)
            d[f.name] = {k: s.to_dict() for k, s in v.items()} if f.name == "sampling" else v
        return d


def default_settings() -> Settings:
    return Settings(threads=physical_cores(), models_dir=_default_models_dir())


def _check_int(v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"must be a whole number from {lo} to {hi}")
    return v


def _check_str(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError("must be a string")  # noqa: TRY004  # reported as a message, never raised out
    return v


def _check_models_dir(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ValueError("must be a folder path")
    if "\0" in v:  # no file system takes one (os calls raise ValueError: embedded null byte)
        raise ValueError("must not contain a NUL character")
    return v


def _check_watts(v: Any) -> float:
    if not is_finite_number(v):
        raise ValueError(f"must be a number of watts from {WATTS_MIN:g} to {WATTS_MAX:g}")
    v = round(float(v), WATTS_DECIMALS)
    if not WATTS_MIN <= v <= WATTS_MAX:
        raise ValueError(f"must be a number of watts from {WATTS_MIN:g} to {WATTS_MAX:g}")
    return v


def _check_endpoint(v: Any) -> str:

    if not isinstance(v, str):
        raise ValueError("must be an http(s) URL")  # noqa: TRY004  # reported as a message
    v = v.strip()
    try:
        u = urllib.parse.urlsplit(v)
        u.port  # noqa: B018  # raises ValueError for a bad port
    except ValueError:
        u = None
    if u is None or u.scheme not in ("http", "https") or not u.hostname or any(c.isspace() for c in v):
        raise ValueError("must be an http(s) URL, like https://huggingface.co")
    # download URLs are built as <endpoint>/<repo>/resolve/...: a query or fragment would swallow them
    if "?" in v or "#" in v:
        raise ValueError(
            "must be an http(s) URL without ? or # (a query or fragment), like https://huggingface.co"
        )
    # a user:password@ part would be stored in the settings file in clear and sent with every
    # download; the hub's access token has its own (private) setting
    if u.username is not None or u.password is not None:
        raise ValueError("must not hold a user name or password (use the access token setting for the hub)")
    return v.rstrip("/")


def _split_userinfo(url: str) -> tuple[str, str]:
    """(the user:password@ part of url or "", url without it): everything after the scheme up to
    the last "@" before the path. Done on the text, not with urlsplit, which fails on a password
    holding [ or ]."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep:
        return "", url
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    at = rest.rfind("@", 0, end)
    return ("", url) if at < 0 else (rest[: at + 1], f"{scheme}://{rest[at + 1 :]}")


def _without_userinfo(url: str) -> str:
    return _split_userinfo(url)[1]


def _endpoint_userinfo(doc: Any) -> str:
    """The user:password@ part of a settings document's hf_endpoint (an older Trit kept it there),
    or ""."""
    v = doc.get("hf_endpoint") if isinstance(doc, dict) else None
    return _split_userinfo(v)[0] if isinstance(v, str) else ""


def _check_one_of(choices: tuple[str, ...]) -> Any:
    """A check that accepts exactly the values in choices."""

    def check(v: Any) -> str:
        if v not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return str(v)

    return check


def _check_token(v: Any) -> str:
    # it goes into an HTTP header: one word of printable ASCII
    if not isinstance(v, str):
        raise ValueError("must be a string")  # noqa: TRY004  # reported as a message
    v = v.strip()
    if len(v) > MAX_TOKEN_CHARS or not all("!" <= c <= "~" for c in v):
        raise ValueError(
            "must be one word of letters, digits and punctuation (Hugging Face tokens start with hf_)"
        )
    return v


_CHECKS: dict[str, Any] = {
    "threads": lambda v: _check_int(v, 1, 512),
    "models_dir": _check_models_dir,
    "default_model": _check_str,
    "watts_per_core": _check_watts,
    "hf_endpoint": _check_endpoint,
    "max_parallel_downloads": lambda v: _check_int(v, 1, 4),
    "context": lambda v: _check_int(v, 128, 1 << 20),
    "activations": _check_one_of(ACTIVATIONS),
    "lm_head": _check_one_of(LM_HEADS),
    "kv_cache": _check_one_of(KV_TYPES),
    "bitnet_mode": _check_one_of(BITNET_MODES),
    "hf_token": _check_token,
}


def check_setting(name: str, value: Any) -> Any:
    """The value as Settings keeps it, or ValueError saying what it must be ("must be a whole
    number from 1 to 512"); the same rules load() applies to the file."""
    if name not in _CHECKS:
        raise KeyError(name)
    return _CHECKS[name](value)


def settings_from_dict(doc: Any, base: Settings | None = None) -> tuple[Settings, list[str]]:
    """Validated settings from a JSON document: each bad or missing field falls back to base
    (default_settings()), and each bad field adds a message to the returned list. Unknown keys
    (from a newer Trit) are ignored."""
    base = base or default_settings()
    if not isinstance(doc, dict):
        return base, [f"the settings file holds {type(doc).__name__}, not an object; using defaults"]
    problems: list[str] = []
    changes: dict[str, Any] = {}
    for name, check in _CHECKS.items():
        if name not in doc:
            continue
        value = doc[name]
        if name == "hf_endpoint" and isinstance(value, str) and (bare := _without_userinfo(value)) != value:
            # an older Trit kept user:password@ in the endpoint (a company mirror): the mirror stays,
            # the credentials go, and neither they nor the old value reach a message
            try:
                changes[name] = check(bare)
            except ValueError as e:
                problems.append(
                    f"hf_endpoint held a user name and password, which are no longer kept in "
                    f"settings, and without them it {e}; using {short_repr(getattr(base, name))}"
                )
            else:
                problems.append(
                    "hf_endpoint held a user name and password, which are no longer kept in settings; "
                    f"they were removed ({short_repr(changes[name])} is used)"
                )
            continue
        try:
            changes[name] = check(value)
        except ValueError as e:
            if name == "hf_token":  # never echo a secret into a message
                problems.append(f"{name} {e}; it was ignored")
            else:
                problems.append(
                    f"{name} {e} (was {short_repr(value)}); using {short_repr(getattr(base, name))}"
                )
    if "sampling" in doc:
        raw = doc["sampling"]
        sampling = dict(base.sampling)
        if not isinstance(raw, dict):
            problems.append("sampling must be an object of model families; using the defaults")
        else:
            for family, sd in raw.items():
                try:
                    sampling[str(family)] = Sampling.from_dict(
                        sd, sampling.get(str(family), DEFAULT_SAMPLING)
                    )
                except ValueError as e:
                    problems.append(f"sampling for {short_text(str(family))}: {e}; using the default")
        changes["sampling"] = sampling
    return replace(base, **changes), problems


def _passes(name: str, value: Any) -> bool:
    try:
        _CHECKS[name](value)
    except ValueError:
        return False
    return True


def _good_sampling(sd: Any) -> bool:
    try:
        Sampling.from_dict(sd, DEFAULT_SAMPLING)
    except ValueError:
        return False
    return True


def _owner_only(path: Path) -> None:
    """chmod 0600 where the OS has Unix modes (Windows ignores all but the read-only bit; the
    per-user config dir is private there)."""
    if os.name == "posix":
        try:
            os.chmod(path, FILE_MODE)
        except OSError:
            pass  # best effort: the file is still written


def _write_new_private(path: Path, data: bytes) -> None:
    """A new file (FileExistsError if there is one) readable by its owner only, then data."""
    with open(path, "xb") as f:
        _owner_only(path)  # before the bytes: they may hold an access token
        f.write(data)


class SettingsStore:
    """Loads and saves Settings at path (default_config_path() when None).
    Attributes after load(): problems (list of messages), backup (Path of the kept bad file, or
    None)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_config_path()
        self.problems: list[str] = []
        self.backup: Path | None = None

    def load(self) -> Settings:
        self.problems, self.backup = [], None
        base = default_settings()
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return base
        except OSError as e:
            self.problems.append(f"{self.path}: cannot read the settings ({e.strerror or e}); using defaults")
            return base
        # utf-8-sig: Windows Notepad starts the file with a BOM. surrogateescape: a file saved by a
        # Latin-1 editor still parses; only the strings holding undecodable bytes are dropped below.
        text = raw.decode("utf-8-sig", errors="surrogateescape")
        try:
            doc = json.loads(text)
        except ValueError as e:
            doc = None
            self.problems.append(f"{self.path}: the settings file is damaged ({e}); using defaults")
        except RecursionError:
            doc = None
            self.problems.append(
                f"{self.path}: the settings file is damaged (nested too deeply); using defaults"
            )
        secret = _endpoint_userinfo(doc)
        if isinstance(doc, dict):
            doc = self._drop_undecodable(doc)
        if doc is not None:
            settings, problems = settings_from_dict(doc, base)
            self.problems += [f"{self.path}: {p}" for p in problems]
        else:
            settings = base
        if self.problems:
            self._keep_backup(raw, secret)
            if self.backup is not None:  # never overwrite what we could not keep a copy of
                self._rewrite_clean(doc, settings)
        if settings.hf_token:
            _owner_only(self.path)  # a file written by hand or an older Trit may be readable by all
        return settings

    def _drop_undecodable(self, doc: dict[Any, Any]) -> dict[Any, Any]:
        """doc without the fields whose text is not UTF-8 (each reported; the default is used)."""
        kept: dict[Any, Any] = {}
        for k, v in doc.items():
            try:
                json.dumps([k, v], ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                name = str(k).encode("utf-8", "backslashreplace").decode("utf-8")
                self.problems.append(f"{self.path}: {name} is not UTF-8 text; using the default")
                continue
            kept[k] = v
        return kept

    def _rewrite_clean(self, doc: Any, settings: Settings) -> None:
        """After the bad file was kept and reported: write it again without the bad values, so the
        same problem is not reported (and copied) at every start. Fields that were missing stay
        missing (they follow the defaults, e.g. threads = this machine's cores); unknown keys from a
        newer Trit stay."""
        clean: dict[str, Any] = {}
        if isinstance(doc, dict):
            for k, v in doc.items():
                if k in _CHECKS:
                    if _passes(k, v):
                        clean[k] = getattr(settings, k)  # as checked: stripped, rounded
                elif k == "sampling":
                    if isinstance(v, dict):
                        clean[k] = {
                            str(f): settings.sampling[str(f)].to_dict()
                            for f, sd in v.items()
                            if _good_sampling(sd)
                        }
                elif isinstance(k, str):
                    clean[k] = v
        clean.setdefault("version", SETTINGS_VERSION)  # a newer Trit's file keeps its own
        try:
            self._write(clean)
        except (OSError, ValueError, RecursionError) as e:
            msg = e.strerror if isinstance(e, OSError) and e.strerror else e
            self.problems.append(f"could not write the corrected settings: {msg}")

    def _keep_backup(self, raw: bytes, secret: str) -> None:
        """Keeps the file as it was (raw) beside it, for the user to look at, except for an
        endpoint's user:password@ part (secret), which settings no longer keep anywhere."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        backup = self.path.with_name(f"{self.path.name}.bad-{stamp}")
        n = 1
        while backup.exists():
            n += 1
            backup = self.path.with_name(f"{self.path.name}.bad-{stamp}-{n}")
        if secret:
            # as written in the file (the common case); else the parsed document without it
            literal = json.dumps(secret, ensure_ascii=False)[1:-1].encode("utf-8", "surrogateescape")
            if literal in raw:
                raw = raw.replace(literal, b"")
            else:
                doc = json.loads(raw.decode("utf-8-sig", errors="surrogateescape"))
                doc["hf_endpoint"] = _without_userinfo(doc["hf_endpoint"])
                raw = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("ascii")
        try:
            _write_new_private(backup, raw)
        except OSError as e:
            self.problems.append(f"could not keep a copy of the bad settings file: {e.strerror or e}")
            return
        self.backup = backup
        without = " (without the endpoint's user name and password)" if secret else ""
        self.problems.append(f"the old file was kept as {backup.name}{without}")

    def save(self, settings: Settings) -> None:
        """Atomic: a crash leaves either the old or the new file, never half of one."""
        self._write(settings.to_dict())

    def _write(self, doc: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # a temp file of this save's own (two saves at once, a second process or a second window on
        # one folder, shared one name: one replaced the other's half-written file)
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        tmp = Path(name)
        try:
            _owner_only(tmp)  # mkstemp makes it 0600 already; the helper also covers Windows
            with open(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f, indent=2, sort_keys=True)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


__all__ = [
    "ACTIVATIONS",
    "DEFAULT_SAMPLING",
    "FAMILY_SAMPLING",
    "SETTINGS_NAME",
    "SETTINGS_VERSION",
    "WATTS_DECIMALS",
    "WATTS_MAX",
    "WATTS_MIN",
    "Settings",
    "SettingsStore",
    "check_setting",
    "default_config_path",
    "default_settings",
    "physical_cores",
    "settings_from_dict",
]
