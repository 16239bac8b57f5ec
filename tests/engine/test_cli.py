"""The `trit` command line, run as a user would: a subprocess, real files."""

from __future__ import annotations

import os
import subprocess
import sys
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


def test_run_prompt_without_tokenizer_says_so(tiny_gguf):
    r = trit("run", "-m", str(tiny_gguf), "-p", "hello")
    assert r.returncode == 1 and "no tokenizer" in r.stderr


def test_logits(tiny_gguf, tmp_path):
    out = tmp_path / "l.npy"
    r = trit("logits", "-m", str(tiny_gguf), "--ids", "4,5,6", "-o", str(out))
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(out), load_model(tiny_gguf, threads=1).logits([4, 5, 6]))
    r = trit("logits", "-m", str(tiny_gguf), "--ids", "4,5,6", "--kv", "f16", "-o", str(out))
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(out), load_model(tiny_gguf, threads=1, kv="f16").logits([4, 5, 6]))


def test_bad_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 20)
    r = trit("info", "-m", str(bad))
    assert r.returncode == 1 and str(bad) in r.stderr and "Traceback" not in r.stderr
    r = trit("info", "-m", str(tmp_path / "missing.gguf"))
    assert r.returncode == 1 and "no such file" in r.stderr


def test_bad_ids_and_isa(tiny_gguf):
    r = trit("run", "-m", str(tiny_gguf), "--ids", "1,x")
    assert r.returncode == 2 and "--ids" in r.stderr
    r = trit("info", "-m", str(tiny_gguf), "--isa", "sparc")
    assert r.returncode == 1 and "instruction set 'sparc'" in r.stderr


def test_no_model_and_no_default(tmp_path):
    r = trit("run", "-p", "hi", env={"TRIT_DEFAULT_MODEL": str(tmp_path / "none.gguf"), "XDG_DATA_HOME": str(tmp_path)})
    assert r.returncode == 1 and "fetch_default_model.py" in r.stderr


def test_run_prompt_on_default_model(default_model_gguf):
    env = {"TRIT_DEFAULT_MODEL": str(default_model_gguf)}
    r = trit("run", "-p", "What is the capital of France?", "--system", "Answer in one short sentence.",
             "--temp", "0", "--repeat-penalty", "1.0", "-n", "24", env=env)
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
    value = float(r.stdout.split()[1])
    ref = float(np.load(Path(__file__).resolve().parents[1] / "fixtures" / "data" / "smollm2_ref.npz")["ppl_ref"])
    assert abs(value / ref - 1) <= 0.01
