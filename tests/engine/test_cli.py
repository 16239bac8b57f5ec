"""The `trit` command line, run as a user would: a subprocess, real files."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tiny import random_weights
from trit.engine import load_model
from trit.engine.convert import write_bitnet_gguf


def trit(*args: str, stdin: str | None = None, env: dict[str, str] | None = None, timeout: float = 300):
    return subprocess.run(
        [sys.executable, "-m", "trit", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "tiny.gguf"
    weights, _ = random_weights(11)
    write_bitnet_gguf(weights, path)
    return path


def _without_root_powers() -> list[str]:
    """A command prefix under which file permissions apply: as root, setpriv drops the
    capabilities that override them."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions cannot apply")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def test_files_that_cannot_be_read_give_one_line_naming_them(tiny_gguf, tmp_path):
    unreadable = tmp_path / "noperm.gguf"
    shutil.copy(tiny_gguf, unreadable)
    unreadable.chmod(0)
    closed = tmp_path / "closed"  # a folder that may not be entered
    closed.mkdir()
    (closed / "config.json").write_text("{}")
    closed.chmod(0o600)
    fifo = tmp_path / "pipe.gguf"
    os.mkfifo(fifo)
    try:
        for path, problem in (
            (unreadable, "cannot read: Permission denied"),
            (closed, "Permission denied"),
            (fifo, "not a regular file"),
        ):
            r = subprocess.run(
                [*_without_root_powers(), sys.executable, "-m", "trit", "info", "-m", str(path)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
            assert r.stderr.startswith(f"trit: {path}") and problem in r.stderr, r.stderr
    finally:
        closed.chmod(0o700)
    if Path("/proc/self/mem").exists():  # a read that fails with EIO: a traceback before
        r = trit("info", "-m", "/proc/self/mem")
        assert (
            r.returncode == 1 and r.stderr.strip() == "trit: /proc/self/mem: cannot read: Input/output error"
        )
    r = trit("info", "-m", "")
    assert r.returncode == 2 and "model path is empty" in r.stderr  # not the default model


def test_a_failing_chat_template_is_one_warning_line(failing_template_gguf):
    """SmolLM2 under another name (no built-in template) with a template that fails: the plain
    format is used and stderr says so once (the engine's log and the CLI both printed it)."""
    r = trit("run", "-m", str(failing_template_gguf), "-p", "Hi", "-n", "2", "--temp", "0")
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "no chat here" in ln]
    assert len(lines) == 1 and lines[0].startswith("trit: warning: the chat template"), r.stderr


def test_head_q8_0_on_a_bf16_head_and_on_a_quantized_one(default_model_gguf):
    folder = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "bitnet-s256-packed"  # a BF16 head
    r = trit("info", "-m", str(folder), "--head", "q8_0")  # it stayed BF16, with a warning
    assert r.returncode == 0 and "head_type    Q8_0 (built at load from BF16" in r.stdout and not r.stderr
    r = trit("info", "-m", str(default_model_gguf), "--head", "q8_0")  # SmolLM2's is Q8_0 already
    assert r.returncode == 0 and "head_type    Q8_0\n" in r.stdout
    assert "trit: warning:" in r.stderr and "applies to a float output head" in r.stderr


def test_info(tiny_gguf):
    r = trit("info", "-m", str(tiny_gguf))
    assert r.returncode == 0, r.stderr
    assert "bitnet-b1.58" in r.stdout and "I2_S" in r.stdout and "isa" in r.stdout


def test_run_ids_streams_greedy_tokens(tiny_gguf):
    r = trit("run", "-m", str(tiny_gguf), "--ids", "1,2,3", "-n", "8", "--temp", "0", "-t", "2")
    assert r.returncode == 0, r.stderr
    got = [int(t) for t in r.stdout.split()]
    want = load_model(tiny_gguf, threads=1).generate([1, 2, 3], max_tokens=8, temperature=0).tokens
    assert got == want
    assert "tok/s" in r.stderr and "first token" in r.stderr
    assert r.stdout == " ".join(map(str, want)) + "\n"  # no space after the last id


def test_run_prompt_without_tokenizer_says_so(tiny_gguf):
    r = trit("run", "-m", str(tiny_gguf), "-p", "hello")
    assert r.returncode == 1 and "no tokenizer" in r.stderr
    assert "--ids" in r.stderr and "generate()" not in r.stderr  # the CLI's way, not the API's


def test_logits(tiny_gguf, tmp_path):
    out = tmp_path / "l.npy"
    r = trit("logits", "-m", str(tiny_gguf), "--ids", "4,5,6", "-o", str(out))
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(out), load_model(tiny_gguf, threads=1).logits([4, 5, 6]))
    r = trit("logits", "-m", str(tiny_gguf), "--ids", "4,5,6", "--kv", "f16", "-o", str(out))
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(out), load_model(tiny_gguf, threads=1, kv="f16").logits([4, 5, 6]))
    # --ternary b3 holds the matrices in the B3 layout: the same logits, and trit info says so
    r = trit("logits", "-m", str(tiny_gguf), "--ids", "4,5,6", "--ternary", "b3", "-o", str(out))
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(out), load_model(tiny_gguf, threads=1).logits([4, 5, 6]))
    r = trit("info", "-m", str(tiny_gguf), "--ternary", "b3")
    assert r.returncode == 0 and re.search(r"^ternary +b3$", r.stdout, re.MULTILINE), r.stdout


def test_info_and_logits_use_the_default_model_without_m(default_model_gguf, tmp_path):
    env = {"TRIT_DEFAULT_MODEL": str(default_model_gguf)}
    r = trit("info", env=env)
    assert r.returncode == 0 and default_model_gguf.name in r.stdout, r.stderr
    r = trit("logits", "--ids", "1,2", "-o", str(tmp_path / "l"), env=env)
    assert r.returncode == 0 and np.load(tmp_path / "l.npy").shape[0] == 2, r.stderr


def test_bad_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 20)
    r = trit("info", "-m", str(bad))
    assert r.returncode == 1 and str(bad) in r.stderr and "Traceback" not in r.stderr
    r = trit("info", "-m", str(tmp_path / "missing.gguf"))
    assert r.returncode == 1 and "no such file" in r.stderr


def test_ids_with_options_for_text_are_refused(tiny_gguf):
    for extra in (("--raw",), ("--system", "Be brief.")):
        r = trit("run", "-m", str(tiny_gguf), "--ids", "1,2", "-n", "2", *extra)
        assert r.returncode == 2 and "--ids are sent as they are" in r.stderr, r.stderr


def test_bad_ids_and_isa(tiny_gguf):
    r = trit("run", "-m", str(tiny_gguf), "--ids", "1,x")
    assert r.returncode == 2 and "--ids" in r.stderr
    r = trit("info", "-m", str(tiny_gguf), "--isa", "sparc")
    assert r.returncode == 1 and "instruction set 'sparc'" in r.stderr


def test_no_model_and_no_default(tmp_path):
    r = trit(
        "run",
        "-p",
        "hi",
        env={"TRIT_DEFAULT_MODEL": str(tmp_path / "none.gguf"), "XDG_DATA_HOME": str(tmp_path)},
    )
    assert r.returncode == 1 and "fetch_default_model.py" in r.stderr


def test_run_prompt_on_default_model(default_model_gguf):
    env = {"TRIT_DEFAULT_MODEL": str(default_model_gguf)}
    r = trit(
        "run",
        "-p",
        "What is the capital of France?",
        "--system",
        "Answer in one short sentence.",
        "--temp",
        "0",
        "--repeat-penalty",
        "1.0",
        "-n",
        "24",
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout
    assert "tok/s" not in r.stdout and "tok/s" in r.stderr  # only the reply on stdout


def test_chat_repl_multi_turn(default_model_gguf):
    env = {"TRIT_DEFAULT_MODEL": str(default_model_gguf)}
    script = "Hello! What is 2 + 2?\n/system You are a pirate.\nWho are you?\n/reset\n/quit\n"
    r = trit("chat", "--temp", "0", "-n", "16", stdin=script, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("reply:") == 2
    assert "(system prompt set; chat cleared)" in r.stderr and "(chat cleared)" in r.stderr


def test_perplexity_command(default_model_gguf):
    text = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "declaration.txt"
    r = trit("perplexity", "-m", str(default_model_gguf), "-f", str(text))
    assert r.returncode == 0, r.stderr
    # the progress line ("\r512/1500 tokens" redrawn) is for a terminal, not for a log
    assert " tokens" not in r.stderr.replace("\n", ""), r.stderr
    value = float(r.stdout.split()[1])
    ref = float(
        np.load(Path(__file__).resolve().parents[1] / "fixtures" / "data" / "smollm2_ref.npz")["ppl_ref"]
    )
    assert abs(value / ref - 1) <= 0.01


# -- Ctrl-C, broken pipes, bad bytes -------------------------------------------------------------

# `trit` as a terminal runs it: SIGINT raises KeyboardInterrupt (a harness that runs the tests in
# the background may have left SIGINT ignored, which a child would inherit)
_AS_IN_A_TERMINAL = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from trit.cli import main; sys.exit(main(sys.argv[1:]))"
)
# a story SmolLM2 writes for ~400 tokens with this seed: still running when Ctrl-C comes
_LONG_REPLY = ("-p", "Write a very long story about dragons.", "-n", "300", "--seed", "3")


def _spawn(*args: str, code: str = _AS_IN_A_TERMINAL) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _read_until(stream, n: int) -> bytes:
    """The first n bytes the child writes (blocks until they come)."""
    got = b""
    while len(got) < n:
        chunk = os.read(stream.fileno(), n - len(got))
        assert chunk, "the child closed stdout early"
        got += chunk
    return got


def test_ctrl_c_stops_a_run_reply_and_exits_130(default_model_gguf):
    p = _spawn("run", "-m", str(default_model_gguf), *_LONG_REPLY)
    first = _read_until(p.stdout, 20)  # the reply is streaming
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    err = err.decode()
    assert p.returncode == 130, err
    assert "Traceback" not in err
    assert "reply:" in err  # the stats of what was produced
    assert len(first + out) > 20  # what was written before Ctrl-C stays


def test_ctrl_c_stops_a_chat_reply_and_the_chat_goes_on(default_model_gguf):
    p = _spawn("chat", "-m", str(default_model_gguf), "--temp", "0.7", *_LONG_REPLY[2:])
    p.stdin.write(_LONG_REPLY[1].encode() + b"\n")
    p.stdin.flush()
    _read_until(p.stdout, 30)  # "> " and the start of the reply
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(b"Say hi.\n/quit\n", timeout=120)
    err = err.decode()
    assert p.returncode == 0, err
    assert "Traceback" not in err
    assert err.count("reply:") == 2 and "(stopped)" in err  # the first reply stopped, the second ran


def _interrupted_with_one_line(tiny_gguf, setup: str, entry: str) -> None:
    """Runs `trit run --ids` as a terminal would, with `setup` arranging a SIGINT at some stage (it
    was `trit info`, which no longer loads the model)."""
    code = (
        "import builtins, os, signal, sys, time; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        + setup
        + f"from {entry} import main; sys.exit(main(sys.argv[1:]))"
    )
    p = _spawn("run", "-m", str(tiny_gguf), "--ids", "1", "-n", "1", code=code)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 130 and out == b""
    assert err.decode().strip() == "trit: interrupted"


def test_ctrl_c_while_the_model_loads_exits_with_one_line(tiny_gguf):
    # a load still running when SIGINT comes (the real loader may finish first on a fast machine)
    setup = (
        "import trit.engine\n"
        "def slow_load(*args, **kwargs):\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(30)\n"
        "trit.engine.load_model = slow_load\n"
    )
    _interrupted_with_one_line(tiny_gguf, setup, "trit.cli")


def test_ctrl_c_while_the_command_line_imports_exits_with_one_line(tiny_gguf):
    # SIGINT arrives while trit.cli imports numpy: the first ~0.25 s after `trit` starts
    setup = (
        "real_import = builtins.__import__\n"
        "def slow_import(name, *args, **kwargs):\n"
        "    if name == 'numpy':\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        time.sleep(30)\n"
        "    return real_import(name, *args, **kwargs)\n"
        "builtins.__import__ = slow_import\n"
    )
    _interrupted_with_one_line(tiny_gguf, setup, "trit.launch")


def test_the_trit_executable_starts_through_the_guarded_entry_point() -> None:
    from importlib.metadata import entry_points

    scripts = {e.name: e.value for e in entry_points(group="console_scripts") if e.name == "trit"}
    assert scripts == {"trit": "trit.launch:main"}
    bundled = (Path(__file__).resolve().parents[2] / "packaging" / "trit_cli.py").read_text()
    assert "from trit.launch import main" in bundled


def test_a_closed_stdout_ends_run_quietly(default_model_gguf, tmp_path):
    """`trit run ... | head -c 20`: the reader goes away while the reply streams."""
    with open(tmp_path / "err", "w+b") as err:
        p = subprocess.Popen(
            [sys.executable, "-m", "trit", "run", "-m", str(default_model_gguf), *_LONG_REPLY],
            stdout=subprocess.PIPE,
            stderr=err,
        )
        _read_until(p.stdout, 20)
        p.stdout.close()
        assert p.wait(timeout=60) == 141  # 128 + SIGPIPE, as the shell reports `yes | head`
        err.seek(0)
        assert err.read() == b""


def test_bytes_that_are_not_utf8_become_replacement_characters(default_model_gguf):
    env = {**os.environ, "TRIT_DEFAULT_MODEL": str(default_model_gguf)}
    opts = ["--temp", "0", "-n", "3"]
    r = subprocess.run(
        [sys.executable, "-m", "trit", "run", "-p", b"caf\xe9", "--system", b"\xff", *opts],
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr
    # stdin as a terminal in a UTF-8 locale such as en_US.UTF-8 reads it (C locales escape bad bytes)
    r = subprocess.run(
        [sys.executable, "-m", "trit", "chat", *opts],
        input=b"caf\xe9\n/quit\n",
        capture_output=True,
        env={**env, "PYTHONIOENCODING": "utf-8:strict"},
        timeout=120,
        check=False,
    )
    assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr
    assert r.stderr.count(b"reply:") == 1


# -- option checks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--temp", "nan"], "--temp"),
        (["--temp", "inf"], "--temp"),
        (["--repeat-penalty", "nan"], "--repeat-penalty"),
        (["--top-p", "nan"], "--top-p"),
        (["--min-p", "nan"], "--min-p"),
        (["--seed", "-1"], "--seed"),
        (["-t", "3000000000"], "--threads"),
        (["-c", "0"], "--context"),
        (["-n", "-1"], "--max-tokens"),
    ],
)
def test_bad_numbers_are_refused_naming_the_option(tiny_gguf, capsys, args, option):
    from trit.cli import main

    with pytest.raises(SystemExit) as e:
        main(["run", "-m", str(tiny_gguf), "--ids", "1,2", *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err or f"/{option}:" in err, err
    assert args[1] in err  # the value refused


def test_bad_values_found_after_parsing_name_the_option(tiny_gguf, tmp_path, capsys):
    from trit.cli import main

    text = tmp_path / "t.txt"
    text.write_text("hello")
    with pytest.raises(SystemExit):
        main(["perplexity", "-m", str(tiny_gguf), "-f", str(text), "--window", "0"])
    assert "--window" in capsys.readouterr().err
    # an id beyond the vocabulary (300) or beyond any integer type: checked against the model
    assert main(["run", "-m", str(tiny_gguf), "--ids", "1,99999999999999999999", "-n", "1"]) == 2
    err = capsys.readouterr().err
    assert "--ids" in err and "99999999999999999999" in err and "0 to 299" in err
    assert main(["logits", "-m", str(tiny_gguf), "--ids", "300", "-o", str(tmp_path / "l.npy")]) == 2
    assert "--ids" in capsys.readouterr().err
    # --raw sends the prompt without the template: an empty one is nothing to run
    assert main(["run", "-m", str(tiny_gguf), "--raw", "-p", ""]) == 2
    assert "the prompt is empty" in capsys.readouterr().err


def test_logits_output_is_checked_first_and_the_real_name_reported(tiny_gguf, tmp_path, capsys):
    from trit.cli import main

    missing = tmp_path / "no" / "such" / "l.npy"
    assert main(["logits", "-m", "/nonexistent/model.gguf", "--ids", "1", "-o", str(missing)]) == 2
    err = capsys.readouterr().err  # refused before the model (which does not exist) was loaded
    assert "-o" in err and "does not exist" in err and "Traceback" not in err
    assert main(["logits", "-m", str(tiny_gguf), "--ids", "1", "-o", str(tmp_path)]) == 2
    assert "folder" in capsys.readouterr().err
    assert main(["logits", "-m", str(tiny_gguf), "--ids", "1,2", "-o", str(tmp_path / "plain")]) == 0
    assert f"wrote {tmp_path / 'plain.npy'}:" in capsys.readouterr().err
    assert np.load(tmp_path / "plain.npy").shape == (2, 300)


def test_run_says_when_the_context_cut_the_reply(tiny_gguf):
    r = trit("run", "-m", str(tiny_gguf), "--ids", "1,2,3", "-c", "8", "-n", "100", "--temp", "0")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.split()) == 6  # positions 3..7, and the token sampled at the last one
    assert "trit: stopped at the context limit (8 tokens)" in r.stderr
    r = trit("run", "-m", str(tiny_gguf), "--ids", "1,2,3", "-n", "5", "--temp", "0")
    assert "context limit" not in r.stderr


def test_chat_commands_are_whole_words(default_model_gguf):
    env = {"TRIT_DEFAULT_MODEL": str(default_model_gguf)}
    script = "/systemd keeps restarting my service\n/reset now\n/system\tBe brief.\n/quit\n"
    r = trit("chat", "--temp", "0", "-n", "4", stdin=script, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("reply:") == 1  # /systemd ... went to the model
    assert "(/reset takes nothing after it; nothing done)" in r.stderr
    assert r.stderr.count("(system prompt set; chat cleared)") == 1  # only the real /system


# -- trit bench ------------------------------------------------------------------------------------

_BENCH_QUICK = ("-n", "2", "--ttft-prompt", "4", "--reps", "1", "--bw-mib", "0", "-t", "1")


def test_bench_refuses_bad_input_before_running(tiny_gguf, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"hello, not a model")
    r = trit("bench", "-m", str(bad), "-p", "4", *_BENCH_QUICK)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"trit: {bad}: ")
    r = trit("bench", "-m", str(tiny_gguf), "-p", "4", *_BENCH_QUICK, "-n", "-1")
    assert r.returncode == 2 and "-n/--gen-tokens" in r.stderr
    r = trit(
        "bench", "-m", str(tiny_gguf), "-p", "4", *_BENCH_QUICK, "--json", str(tmp_path / "no" / "b.json")
    )
    assert r.returncode == 2 and "--json" in r.stderr and "does not exist" in r.stderr
    assert "loaded" not in r.stderr  # checked before the run, not after it
    r = trit("bench", "-m", str(tiny_gguf), "-p", "100000", *_BENCH_QUICK)  # the model holds 256
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "trit: -p 100000: " in r.stderr and "256" in r.stderr


def _chat_on_a_terminal(
    model: Path, *args: str, stdout_too: bool = False, code: str = _AS_IN_A_TERMINAL
) -> tuple[subprocess.Popen[bytes], int]:
    """`trit chat` with its stdin (and stdout) on a pseudo-terminal, as a user runs it: input()
    behaves differently on a pipe. Returns the process and the terminal's master end."""
    master, slave = pty.openpty()
    p = subprocess.Popen(
        [sys.executable, "-c", code, "chat", "-m", str(model), *args],
        stdin=slave,
        stdout=slave if stdout_too else subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    os.close(slave)
    return p, master


def _type(master: int, data: bytes, seconds: float = 60) -> None:
    """Writes data to the terminal as typing would, reading what it echoes meanwhile (a terminal
    whose echo is not read stops taking input)."""
    deadline = time.monotonic() + seconds
    while data:
        readable, writable, _ = select.select([master], [master], [], max(deadline - time.monotonic(), 0))
        assert readable or writable, f"the terminal took no input for {seconds} s"
        if readable:
            os.read(master, 65536)
        if writable:
            data = data[os.write(master, data[:512]) :]


def _read_terminal_until(master: int, want: bytes, seconds: float = 60) -> bytes:
    got, deadline = b"", time.monotonic() + seconds
    while want not in got:
        ready, _, _ = select.select([master], [], [], max(deadline - time.monotonic(), 0))
        assert ready, f"no {want!r} from the terminal in {seconds} s; it wrote {got[-300:]!r}"
        got += os.read(master, 4096)
    return got


def test_ctrl_c_at_the_prompt_does_not_end_the_chat(default_model_gguf):
    """A Ctrl-C meant for a reply that has just ended lands at the prompt: it used to end the chat
    and its history; now it says how to leave, and a second one within 2 s leaves (two far apart,
    each clearing a typed line, do not)."""
    p, master = _chat_on_a_terminal(default_model_gguf, "--temp", "0", "-n", "8")
    try:
        assert _read_until(p.stdout, 2) == b"> "
        time.sleep(0.5)  # blocked reading the line
        p.send_signal(signal.SIGINT)
        assert _read_until(p.stdout, 2) == b"> "  # the chat goes on
        os.write(master, b"Say hi.\n/quit\n")
        _, err = p.communicate(timeout=120)
    finally:
        os.close(master)
    err = err.decode()
    assert p.returncode == 0 and "Traceback" not in err, err
    assert "(Ctrl-C again at once, Ctrl-D or /quit leaves)" in err and err.count("reply:") == 1
    p, master = _chat_on_a_terminal(default_model_gguf)
    try:
        for pause in (0.5, 2.5, 0.5):  # the second comes too late to leave, the third leaves
            assert _read_until(p.stdout, 2) == b"> "
            time.sleep(pause)
            p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        os.close(master)
    assert p.returncode == 0 and "reply:" not in err.decode() and out == b""


def test_a_line_longer_than_the_terminals_buffer_arrives_whole(default_model_gguf):
    """A terminal in canonical mode keeps 4096 bytes of a line: a longer paste reached the model
    cut, without a word. With readline (the terminal in raw mode) the whole line arrives."""
    pytest.importorskip("readline")
    p, master = _chat_on_a_terminal(default_model_gguf, "--temp", "0", "-n", "1", stdout_too=True)
    try:
        _read_terminal_until(master, b"> ")
        _type(master, b"word " * 1200 + b"\r")
        _read_terminal_until(master, b"> ")  # the reply came, the next prompt is up
        os.write(master, b"/quit\r")
        _, err = p.communicate(timeout=120)
    finally:
        os.close(master)
    err = err.decode()
    prompt_tokens = int(err.split("prompt: ")[1].split()[0])
    assert p.returncode == 0 and prompt_tokens > 1200, err  # cut at 4095 bytes it was ~850


def test_a_message_longer_than_the_context_says_how_to_go_on(default_model_gguf):
    r = trit("chat", "-m", str(default_model_gguf), "-c", "64", "-n", "4", stdin="word " * 200 + "\n/quit\n")
    assert r.returncode == 0, r.stderr
    assert "context holds 64" in r.stderr and "/reset starts a new chat; -c sets the context size" in r.stderr


def test_without_readline_a_line_at_the_terminals_limit_is_named(default_model_gguf):
    """The bundle has no GNU readline (GPL-3.0): a terminal in canonical mode keeps 4095 bytes of a
    line. That cut passed without a word; now the chat says so."""
    no_readline = "import sys; sys.modules['readline'] = None\n" + _AS_IN_A_TERMINAL
    master, slave = pty.openpty()
    p = subprocess.Popen(  # all three on the terminal: without readline the prompt goes to stderr
        [sys.executable, "-c", no_readline, "chat", "-m", str(default_model_gguf), "-n", "1"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    try:
        _read_terminal_until(master, b"> ")
        _type(master, b"word " * 1200 + b"\r")
        seen = _read_terminal_until(master, b"reply:")
        _type(master, b"/quit\r")
        assert p.wait(timeout=60) == 0
    finally:
        os.close(master)
        p.kill()
    assert b"passes at most 4095 bytes of a line" in seen


def test_a_commands_option_before_the_command_is_put_right(capsys: pytest.CaptureFixture[str]) -> None:
    """`trit --isa avx2 chat` said "invalid choice: 'avx2'", though chat was the command."""
    from trit.cli import main

    with pytest.raises(SystemExit) as ei:
        main(["--isa", "avx2", "chat", "--temp", "0"])
    assert ei.value.code == 2
    assert (
        "a command's options go after the command: trit chat --isa avx2 --temp 0" in capsys.readouterr().err
    )
    with pytest.raises(SystemExit):  # a top-level option before it is not moved
        main(["--data-dir", "/nonexistent", "nosuchcommand"])
    assert "go after the command" not in capsys.readouterr().err


def test_a_reply_the_locale_cannot_encode_is_written_with_replacements(default_model_gguf):
    """Under a Latin-1 locale a Japanese reply ended `trit run` (exit 2, "'latin-1' codec can't
    encode") and the chat at its first such reply."""
    env = {"TRIT_DEFAULT_MODEL": str(default_model_gguf), "PYTHONIOENCODING": "latin-1"}
    prompt = "Say 'hello' in Japanese, Chinese and with emojis"
    r = trit("run", "-p", prompt, "-n", "12", "--temp", "0", env=env)
    assert r.returncode == 0 and "?" in r.stdout and "reply: 12 tokens" in r.stderr, r.stderr
    r = trit("chat", "-n", "12", "--temp", "0", stdin=f"{prompt}\nWhat is 2+2?\n", env=env)
    assert r.returncode == 0 and r.stderr.count("reply:") == 2, r.stderr


def test_the_apps_options_before_a_command_are_not_ignored(tiny_gguf, tmp_path):
    """`trit --model X run ...` ran the default model (--model was the desktop app's), and
    --data-dir before a command was dropped without a word."""
    r = trit("--model", str(tiny_gguf), "info", env={"TRIT_DEFAULT_MODEL": str(tmp_path / "none.gguf")})
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert f"a command's options go after the command: trit info --model {tiny_gguf}" in r.stderr
    r = trit(f"--model={tiny_gguf}", "run", "--ids", "1", "-n", "1")
    assert r.returncode == 2 and f"trit run --model={tiny_gguf} --ids 1 -n 1" in r.stderr, r.stderr
    for opts in (["--data-dir", str(tmp_path)], ["--self-test"]):
        r = trit(*opts, "info", "-m", str(tiny_gguf))
        assert r.returncode == 2 and r.stdout == "", r.stderr
        assert f"{opts[0]} is for the desktop app; `trit info` does not take it" in r.stderr


@pytest.mark.parametrize(
    ("redirect", "args", "line"),
    [
        ("<&-", ["chat"], "trit: chat reads its messages from stdin, which is closed"),
        (">&-", ["run", "--ids", "1,2", "-n", "3"], "trit: cannot write the output: stdout is closed"),
        (">/dev/full", ["info"], "trit: cannot write the output: No space left on device"),
        (
            ">/dev/full",
            ["run", "--ids", "1,2", "-n", "3"],
            "trit: cannot write the output: No space left on device",
        ),
    ],
)
def test_closed_or_failing_std_streams_are_one_line(tiny_gguf, redirect, args, line):
    """`trit chat <&-`, `trit run >&-` and `trit info >/dev/full` (ENOSPC) ended in tracebacks
    (AttributeError on None, OSError, or Python's "Exception ignored" at exit)."""
    if redirect == ">/dev/full" and not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    cmd = [sys.executable, "-m", "trit", *args, "-m", str(tiny_gguf)]
    r = subprocess.run(
        ["sh", "-c", f'exec "$@" {redirect}', "sh", *cmd],
        capture_output=redirect != ">&-",
        stderr=subprocess.PIPE if redirect == ">&-" else None,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode in (1, 2) and r.stderr.strip() == line, r.stderr


def test_chat_from_a_pipe_writes_only_the_replies(default_model_gguf):
    """The "> " prompts went into stdout between the replies when stdin was a pipe."""
    env = {"TRIT_DEFAULT_MODEL": str(default_model_gguf)}
    r = trit("chat", "-n", "5", "--temp", "0", stdin="Hello\n/reset\nHi\n", env=env)
    assert r.returncode == 0 and r.stderr.count("reply:") == 2, r.stderr
    replies = r.stdout.splitlines()
    assert len(replies) == 2 and not any(line.startswith(">") for line in replies), r.stdout


def test_ctrl_c_within_the_prompt_says_interrupted_without_stats(default_model_gguf):
    """Ctrl-C while `trit run` still ran the prompt printed a stats line of zeros and no
    'trit: interrupted'."""
    ids = ",".join(["1000"] * 2000)  # tens of seconds of prompt at one thread
    p = _spawn("run", "-m", str(default_model_gguf), "--ids", ids, "-n", "5", "-t", "1")
    time.sleep(3)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130 and out == b"" and err.decode().strip() == "trit: interrupted", err


def test_logits_to_an_existing_path_or_stdout(tiny_gguf):
    """`-o /dev/null` wrote /dev/null.npy; `-o -` now writes to stdout."""
    devnull_npy = Path("/dev/null.npy")
    r = trit("logits", "-m", str(tiny_gguf), "--ids", "1,2", "-o", os.devnull)
    assert r.returncode == 0 and "wrote /dev/null: 2 x 300" in r.stderr, r.stderr
    assert not devnull_npy.exists()
    r = subprocess.run(
        [sys.executable, "-m", "trit", "logits", "-m", str(tiny_gguf), "--ids", "1,2", "-o", "-"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0 and b"wrote stdout" in r.stderr, r.stderr
    np.testing.assert_array_equal(
        np.load(io.BytesIO(r.stdout)), load_model(tiny_gguf, threads=1).logits([1, 2])
    )


def test_options_beyond_the_model_or_machine_are_named(tiny_gguf):
    """-c above the model's context was cut to it, and -t far above the cores taken, silently."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    r = trit("run", "-m", str(tiny_gguf), "--ids", "1", "-n", "1", "-c", "100000", "-t", str(cpus + 1))
    assert r.returncode == 0, r.stderr
    assert "trit: warning: -c 100000: this model holds at most 256 tokens; using 256" in r.stderr
    assert f"trit: warning: -t {cpus + 1}: this machine runs {cpus} at once" in r.stderr
    r = trit("run", "-m", str(tiny_gguf), "--ids", "1", "-n", "1", "-t", "1")
    assert "warning" not in r.stderr and "prompt: 1 token (" in r.stderr and "reply: 1 token," in r.stderr
    assert r.stderr.rstrip().endswith(", 1 thread")  # not "1 threads"


def test_run_wording(default_model_gguf):
    env = {"TRIT_DEFAULT_MODEL": str(default_model_gguf)}
    r = trit("run", "-c", "4", "-p", "hi", env=env)  # the run's remedy is -c, not a new conversation
    assert r.returncode == 1 and "-c raises the context, up to the model's 8192" in r.stderr, r.stderr
    assert "conversation" not in r.stderr
    r = trit("run", "--bogus", env=env)  # named before the missing -p
    assert r.returncode == 2 and "unrecognized arguments: --bogus" in r.stderr, r.stderr
    r = trit("run", "--help")
    assert "(default: 256)" in r.stdout and "(default: 0.7)" in r.stdout  # -n, --temp
    assert "(default: None)" not in r.stdout and "(default: False)" not in r.stdout


def test_a_generation_runs_on_the_calling_thread_when_no_thread_can_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Out of memory for a thread's stack, Thread.start raised "can't start new thread" as a raw
    traceback before the generation began."""
    import threading

    from trit import cli

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    before = signal.getsignal(signal.SIGINT)
    ran_on: list[threading.Thread] = []

    def fn() -> int:
        ran_on.append(threading.current_thread())
        return 42

    class Target:
        def cancel(self) -> None:
            raise AssertionError("nothing to cancel")

    assert cli._run_interruptible(Target(), fn) == (42, False)  # type: ignore[arg-type]
    assert ran_on == [threading.current_thread()] and signal.getsignal(signal.SIGINT) is before


def test_model_text_reaches_a_terminal_without_its_control_sequences(default_model_gguf, tmp_path):
    """A chat template's message went to stderr raw, so a model file could retitle the terminal,
    clear it or fake a notice (OSC and CSI sequences); a reply did the same on stdout."""
    import shutil

    tool = shutil.which("gguf-new-metadata")
    if tool is None:
        pytest.skip("gguf-new-metadata (the gguf package's tool) is not installed")
    hostile = tmp_path / "hostile.gguf"
    subprocess.run(
        [tool, "--general-name", "Mystery", "--remove-metadata", "general.basename", "--pre-tokenizer", "gpt2",
         "--chat-template", "{{ raise_exception('\x1b]0;pwned\x07\x1b[2Jfake notice') }}", "--force",
         str(default_model_gguf), str(hostile)],
        check=True, capture_output=True,
    )  # fmt: skip
    r = trit("run", "-m", str(hostile), "-p", "Hi", "-n", "2", "--temp", "0")
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stderr and "\\x1b]0;pwned\\x07\\x1b[2Jfake notice" in r.stderr

    from trit import cli

    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as tty, open(tmp_path / "out.txt", "w") as file:
            assert cli._for_terminal(tty)("a\x1b[2Jb") == "a\\x1b[2Jb"  # a terminal: shown as escapes
            assert cli._for_terminal(file)("a\x1b[2Jb") == "a\x1b[2Jb"  # a file or pipe: as written
    finally:
        os.close(master)
        os.close(slave)


def _stderr_on_a_terminal(*args: str) -> tuple[int, bytes, bytes]:
    """`trit` with stderr on a pseudo-terminal and stdout on a pipe: (exit status, stdout, what
    the terminal received)."""
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "trit", *args], stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    got = b""
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        assert ready, "trit wrote nothing to the terminal for 120 s"
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the process closed its end
            break
        if not chunk:
            break
        got += chunk
    out, _ = p.communicate(timeout=60)
    os.close(master)
    return p.returncode, out, got


def test_a_long_prompt_is_counted_on_a_terminal_and_wiped_before_the_reply(default_model_gguf):
    """A long -p (a pasted report) ran for half a minute before the first word with nothing on
    the screen. On a terminal stderr counts the prompt's batches on one line and wipes it; into a
    pipe nothing is added."""
    long = " ".join(f"Line {i}: the quick brown fox jumps over the lazy dog." for i in range(40))
    rc, out, term = _stderr_on_a_terminal(
        "run", "-m", str(default_model_gguf), "-p", long, "-n", "3", "--temp", "0"
    )
    assert rc == 0, term
    counts = re.findall(rb"\r\x1b\[2K\[reading the prompt: ([\d,]+) of ([\d,]+) tokens\]", term)
    assert len(counts) >= 3, term[:500]
    total = int(counts[0][1].replace(b",", b""))
    assert [int(d.replace(b",", b"")) for d, _ in counts] == list(range(128, total, 128))
    wiped = term.rindex(b"tokens]") + len(b"tokens]")
    assert term[wiped:].startswith(b"\r\x1b[2K") and b"prompt: " in term[wiped:]  # then the stats line
    assert out.strip() and b"reading" not in out
    piped = trit("run", "-m", str(default_model_gguf), "-p", long, "-n", "3", "--temp", "0")
    assert piped.returncode == 0 and "reading the prompt" not in piped.stderr and "\x1b" not in piped.stderr
