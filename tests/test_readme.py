"""The README's examples, executed: they cannot drift from what the code does.

* ```python blocks are doctests (run in order, sharing their names, in a scratch directory);
* ```console blocks are shell sessions: each ``$ bnmft ...`` (or ``$ python ...``) line is run in a scratch
  directory shared by the block, and its output is compared with the lines that follow it (doctest's ELLIPSIS
  and NORMALIZE_WHITESPACE: ``...`` stands for any text). The expected text is standard output, or standard error
  for a command whose expected output ends with ``[exit status N]``, N != 0;
* ```toml blocks are sweep declarations: they must load (and validate) as written.
Blocks marked ```text are synopses and are not run.
"""

import doctest
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def blocks(kind: str) -> list[tuple[int, str]]:
    text = README.read_text()
    return [(text[: m.start()].count("\n") + 1, m.group(2)) for m in BLOCK.finditer(text) if m.group(1) == kind]


def test_every_block_has_a_kind():
    kinds = {m.group(1) for m in BLOCK.finditer(README.read_text())}
    assert kinds <= {"python", "console", "toml", "text"}, kinds


def test_python_examples(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parser, runner = doctest.DocTestParser(), doctest.DocTestRunner(optionflags=FLAGS)
    shared: dict = {}
    report: list[str] = []
    for line, block in blocks("python"):
        test = parser.get_doctest(block, shared, f"README.md python block at line {line}", str(README), line)
        runner.run(test, out=report.append, clear_globs=False)
        shared.update(test.globs)  # later blocks use the names of earlier ones
    assert runner.failures == 0, "".join(report)
    assert runner.tries >= 10


def _sessions() -> list[tuple[int, list[tuple[str, str]]]]:
    out = []
    for line, block in blocks("console"):
        commands: list[tuple[str, str]] = []
        for text in block.splitlines():
            if text.startswith("$ "):
                commands.append((text[2:], ""))
            else:
                assert commands, f"README.md line {line}: output before the first '$ ' command"
                command, expected = commands[-1]
                commands[-1] = (command, expected + text + "\n")
        out.append((line, commands))
    return out


@pytest.mark.parametrize(("line", "commands"), _sessions(), ids=lambda v: f"line{v}" if isinstance(v, int) else "")
def test_console_examples(line, commands, tmp_path):
    checker = doctest.OutputChecker()
    for command, expected in commands:
        argv = shlex.split(command)
        assert argv[0] in ("bnmft", "python"), f"README.md line {line}: only bnmft and python commands run"
        argv = [sys.executable, "-m", "bnmft.cli", *argv[1:]] if argv[0] == "bnmft" else [sys.executable, *argv[1:]]
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        status = re.search(r"\[exit status (\d+)\]\s*$", expected)
        want_status = int(status.group(1)) if status else 0
        want = expected[: status.start()] if status else expected
        got = done.stdout if want_status == 0 else done.stderr
        assert done.returncode == want_status, f"README.md line {line}: {command}\n{done.stdout}\n{done.stderr}"
        assert "Traceback" not in done.stderr, f"README.md line {line}: {command}\n{done.stderr}"
        assert checker.check_output(want, got, FLAGS), (
            f"README.md line {line}: {command}\n"
            + checker.output_difference(doctest.Example(command, want), got, FLAGS)
        )


def test_toml_examples(tmp_path):
    from bnmft.experiments.sweep import load_sweeps

    found = blocks("toml")
    assert found
    for line, block in found:
        path = tmp_path / f"readme_{line}.toml"
        path.write_text(block)
        assert load_sweeps(path), f"README.md line {line}"
