"""Every code block of ``README.md`` and ``docs/*.md`` runs, and prints what it says it prints.

Conventions for the blocks (authors of the README and of docs pages follow these):

``python`` blocks
    Run as a script by this Python, in a fresh temporary directory (time limit ``TIMEOUT_S``); the
    exit status must be 0.

    * ``# -> TEXT`` (a comment at the end of a line or on a line of its own) states one line the block
      prints.  The block's standard output must be exactly these lines, one per ``# ->`` comment, in
      order; a block that prints states every line it prints.  Print values formatted to the digits
      you claim (``f"{x:.2f}"``): the comparison is exact at the printed precision.  ``...`` in TEXT
      matches any text on that line (for what changes from run to run: git revision, timings).
    * First line ``# not run in the tests: REASON`` (or ``# not run: REASON``): the block is only
      compiled (needs a cluster, a GPU, or is too long for CI).
    * First line ``# in the tests: OLD -> NEW; OLD2 -> NEW2``: the block runs with these literal
      substitutions (sizes too big for CI; each OLD must occur in the block).  Such a block states no
      printed values, since the substituted run would not print them.

``console`` blocks
    ``$ COMMAND`` lines run in order under ``bash`` in one fresh temporary directory that sees the
    repository's ``studies/``, ``derivations/``, ``scripts/`` and ``benchmarks/``, with this Python's
    ``sdeeos`` first on ``PATH``.  The lines after a command, up to the next ``$``, are its expected
    standard output (none: not checked); ``...`` matches any text within a line, and a line that is
    only ``...`` matches any number of lines.

    * a comment that ends in ``exit status N``: the command's expected exit status (default 0); the expected
      text is then matched against standard error (where the one-line error message goes).
    * ``# not run: REASON`` at the end of a command: not run; an ``sdeeos`` command is still parsed by
      the command-line parser (its subcommand and options must exist) and ``bash FILE`` needs FILE.

``bash`` blocks
    Each line that is not a comment is a command, as in a ``console`` block without outputs; a first
    line ``# not run...`` applies to every command of the block.

Other fenced blocks must use one of ``OTHER_LANGUAGES`` (not run).

A block that needs an optional extra (``NEEDS``: PyTorch, Dask) is skipped without it.  Blocks that
cannot pass until another branch lands are listed in ``KNOWN_FAILING`` and run as strict
expected failures: once they pass, this test fails until the entry is removed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
import tokenize
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import pytest

from sdeeos._cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TIMEOUT_S = 300
RUN_LANGUAGES = ("python", "console", "bash")
OTHER_LANGUAGES = ("{toctree}", "text", "toml", "math", "{math}")
VISIBLE = ("studies", "derivations", "scripts", "benchmarks")  # what console/bash commands may name

# (page, a string that identifies the block) -> why it fails today
KNOWN_FAILING: dict[tuple[str, str], str] = {}
# a block containing the key needs the module (an optional extra); without it the block is skipped
NEEDS = {"sdeeos.torch": "torch", "sdeeos train": "torch", "n_shards": "distributed"}
# relative links of the README to pages that another branch adds -> that branch
PENDING_PAGES: dict[str, str] = {}

_NOT_RUN = re.compile(r"^#\s*not run\b")
_SUBST = re.compile(r"^#\s*in the tests:\s*(.+)$")
_EXIT = re.compile(r"#.*\bexit status (\d+)\s*$")
_CMD_NOT_RUN = re.compile(r"\s#\s*not run\b.*$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int       # 1-based line of the opening fence
    language: str
    text: str

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def _blocks(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = re.match(r"^(`{3,})(\S*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        fence, language, start = m.group(1), m.group(2), i
        i += 1
        body = []
        while i < len(lines) and lines[i].rstrip() != fence:
            body.append(lines[i])
            i += 1
        assert i < len(lines), f"{page.name}:{start + 1}: unclosed code fence"
        blocks.append(Block(page, start + 1, language, "\n".join(body) + "\n"))
        i += 1
    return blocks


ALL_BLOCKS = [b for page in PAGES for b in _blocks(page)]
RUN_BLOCKS = [b for b in ALL_BLOCKS if b.language in RUN_LANGUAGES]


def _params(blocks):
    out = []
    for b in blocks:
        marks = [pytest.mark.xfail(strict=True, reason=why) for (page, key), why in KNOWN_FAILING.items()
                 if b.page.relative_to(ROOT).as_posix() == page and key in b.text]
        for key, module in NEEDS.items():
            if key in b.text and importlib.util.find_spec(module) is None:
                marks.append(pytest.mark.skip(reason=f"needs {module}, an optional extra"))
        if "sdeeos.torch" in b.text or "sdeeos train" in b.text:
            marks.append(pytest.mark.torch)
        out.append(pytest.param(b, id=b.id, marks=marks))
    return out


# ------------------------------------------------------------------------------------ matching
def _line_pattern(expected: str) -> str:
    return ".*?".join(re.escape(part) for part in expected.split("..."))


def _matches(expected_lines: list[str], output: str) -> bool:
    """``expected_lines`` against ``output``: ``...`` within a line, a lone ``...`` for any lines."""
    pattern = "".join(r"(?:.*\n)*?" if e.strip() == "..." else _line_pattern(e.rstrip()) + r"\n"
                      for e in expected_lines)
    text = "".join(line.rstrip() + "\n" for line in output.strip("\n").splitlines())  # no blank ends
    return re.fullmatch(pattern, text) is not None


def test_matching_rules():
    assert _matches(["gap 29.31 ± 0.01"], "gap 29.31 ± 0.01\n")
    assert not _matches(["gap 29.31 ± 0.01"], "gap 29.32 ± 0.01\n")
    assert not _matches(["gap 29.31"], "gap 29.31\nmore\n")                # every printed line is stated
    assert _matches(["0 scheme ..."], "0 scheme 4b82339\n")
    assert not _matches(["a ... c"], "a b\nc\n")                           # `...` stays within a line
    assert _matches(["...", "[9] RESULT", "...", "done"], "x\ny\n[9] RESULT\nz\ndone\n")
    assert _matches(["...", "done"], "done\n")
    assert _matches(["done"], "\ndone\n\n")                                # blank lines at the ends
    assert not _matches(["...", "done"], "done\nextra\n")


# ------------------------------------------------------------------------------------ python
def _expected_python_output(source: str) -> list[str]:
    return [tok.string[len("# ->"):].strip() for tok in tokenize.generate_tokens(StringIO(source).readline)
            if tok.type == tokenize.COMMENT and tok.string.startswith("# ->")]


def _substituted(block: Block) -> str | None:
    """The source the test runs, or None for a block that is only compiled."""
    first = block.text.lstrip("\n").splitlines()[0] if block.text.strip() else ""
    if _NOT_RUN.match(first):
        return None
    m = _SUBST.match(first)
    if not m:
        return block.text
    _, _, source = block.text.lstrip("\n").partition("\n")  # the directive names OLD itself
    for pair in m.group(1).split(";"):
        old, sep, new = pair.partition("->")
        old, new = old.strip(), new.strip()
        assert sep and old and new, f"{block.id}: substitution {pair!r} is not 'OLD -> NEW'"
        assert old in source, f"{block.id}: substitution of {old!r}, which the block does not contain"
        source = source.replace(old, new)
    assert not _expected_python_output(source), \
        f"{block.id}: a block run with substituted sizes cannot state its printed values"
    return source


def _environment() -> dict:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["MPLBACKEND"] = "Agg"
    return env


@pytest.mark.parametrize("block", _params([b for b in RUN_BLOCKS if b.language == "python"]))
def test_python_block(block, tmp_path):
    compile(block.text, block.id, "exec")
    source = _substituted(block)
    if source is None:
        return
    script = tmp_path / "block.py"
    script.write_text(source, encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_environment(),
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, f"{block.id} failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    expected = _expected_python_output(source)
    assert _matches(expected, proc.stdout) if expected else proc.stdout == "", (
        f"{block.id} printed\n{proc.stdout}\nbut states (# -> ...)\n" + "\n".join(expected))


# ------------------------------------------------------------------------------------ shell
@dataclass
class Command:
    line: str
    expected: list[str]
    status: int
    run: bool


def _commands(block: Block) -> list[Command]:
    lines = block.text.splitlines()
    if block.language == "bash":
        block_not_run = bool(lines) and _NOT_RUN.match(lines[0].strip()) is not None
        return [Command(line, [], 0, not block_not_run and not _CMD_NOT_RUN.search(line))
                for line in (raw.strip() for raw in lines) if line and not line.startswith("#")]
    commands: list[Command] = []
    for raw in lines:
        if raw.startswith("$ "):
            line = raw[2:].strip()
            m = _EXIT.search(line)
            commands.append(Command(line, [], int(m.group(1)) if m else 0, not _CMD_NOT_RUN.search(line)))
        else:
            assert commands, f"{block.id}: output line {raw!r} before any `$ ` command"
            commands[-1].expected.append(raw)
    return commands


def _check_not_run(block: Block, command: Command) -> None:
    words = shlex.split(_CMD_NOT_RUN.sub("", command.line), comments=True)
    if words[0] == "sdeeos":
        try:
            build_parser().parse_args(words[1:])
        except SystemExit as exc:
            pytest.fail(f"{block.id}: `{command.line}` is not a valid sdeeos command line (exit {exc.code})")
    elif words[0] == "bash":
        assert (ROOT / words[1]).is_file(), f"{block.id}: `{command.line}` names a missing script"


@pytest.mark.parametrize("block", _params([b for b in RUN_BLOCKS if b.language in ("console", "bash")]))
def test_shell_block(block, tmp_path):
    commands = _commands(block)
    assert commands, f"{block.id}: a {block.language} block without commands"
    for name in VISIBLE:
        (tmp_path / name).symlink_to(ROOT / name)
    for command in commands:
        if not command.run:
            _check_not_run(block, command)
            continue
        proc = subprocess.run(["bash", "-c", command.line], cwd=tmp_path, env=_environment(),
                              capture_output=True, text=True, timeout=TIMEOUT_S)
        assert proc.returncode == command.status, (
            f"{block.id}: `{command.line}` exited {proc.returncode}, expected {command.status}:\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        shown = proc.stdout if command.status == 0 else proc.stderr
        if command.expected:
            assert _matches(command.expected, shown), (
                f"{block.id}: `{command.line}` printed\n{shown}\nbut the block shows\n" + "\n".join(command.expected))


# ------------------------------------------------------------------------------------ pages
def test_every_fenced_block_has_a_known_language():
    unknown = [f"{b.id} ({b.language or 'no language'})" for b in ALL_BLOCKS
               if b.language not in RUN_LANGUAGES + OTHER_LANGUAGES]
    assert not unknown, f"code blocks the tests neither run nor know: {unknown}"
    assert any(b.language == "python" for b in RUN_BLOCKS) and any(b.language == "console" for b in RUN_BLOCKS)


def test_every_known_failure_names_a_block():
    for page, key in KNOWN_FAILING:
        assert any(b.page.relative_to(ROOT).as_posix() == page and key in b.text for b in RUN_BLOCKS), (page, key)


def _slug(heading: str) -> str:
    """The anchor GitHub and MyST give a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = page.read_text(encoding="utf-8")
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)  # a `# comment` in a block is no heading
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} +(.+)$", text, flags=re.M)}


def test_readme_is_a_front_door():
    readme = ROOT / "README.md"
    lines = readme.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; findings and tables belong in docs/"
    first = next(b for b in ALL_BLOCKS if b.page == readme)
    assert first.line <= 3 and "bash scripts/main-job.sh" in first.text and "bash scripts/test.sh" in first.text


def test_readme_links_resolve():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    broken, pending = [], []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        if path in PENDING_PAGES:
            pending.append(path)
            continue
        file = ROOT / path if path else ROOT / "README.md"
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(target)
    assert not broken, f"README links to what does not exist: {broken}"
    landed = sorted(p for p in set(pending) if (ROOT / p).exists())
    assert not landed, f"{landed} now exist: remove them from PENDING_PAGES so that their links are checked"


def test_conventions_fail_where_they_should():
    page = ROOT / "README.md"
    bad_option = Block(page, 1, "console", "$ sdeeos simulate self-stabilization --no-such-option 1   # not run: x\n")
    command, = _commands(bad_option)
    assert not command.run
    with pytest.raises(pytest.fail.Exception, match="not a valid sdeeos command line"):
        _check_not_run(bad_option, command)
    stale = Block(page, 1, "python", "# in the tests: 10**9 -> 10\nn = 10**8\n")
    with pytest.raises(AssertionError, match="does not contain"):
        _substituted(stale)
    stated = Block(page, 1, "python", "# in the tests: 10**8 -> 10\nprint(10**8)  # -> 100000000\n")
    with pytest.raises(AssertionError, match="cannot state"):
        _substituted(stated)
    assert _substituted(Block(page, 1, "python", "# not run: needs a cluster\nx = 1\n")) is None
    status, = _commands(Block(page, 1, "console", "$ false   # fails; exit status 1\n"))
    assert status.status == 1 and status.run
