"""Run the examples of a documentation page against a real localserve daemon.

Conventions in the markdown (docs/app-developers.md):

- ``<!-- test: NAME [file|background] -->`` right before a fenced block tags it as an
  example that tests/test_docs.py runs.  Without an option, an ``sh`` block runs with
  ``bash -e -o pipefail`` and a ``python`` block with this venv's python, in the session
  directory, and must exit 0.  ``file``: a python block whose first line is
  ``# FILE.py`` is saved as FILE (a later block runs it, or the test runs it with
  arguments).  ``background``: an ``sh`` block that starts a long-running process
  (localserve, a webhook receiver); it runs in its own process group, stopped when the
  test ends.
- ``<!-- output: NAME -->`` or ``<!-- output: NAME/LABEL -->`` before a fenced block: the
  expected output of block NAME; ``...`` matches anything within a line.  A foreground
  block's output is checked when it runs (the expected lines in order, other lines
  between them allowed); a background block's output when the test calls
  :meth:`Session.expect` (every expected line, in any order).

What runs differs from what the page says only in these substitutions:

- the default ports (localserve's 1025, 1587, 1465, 1080, 1081 and the receiver's 8089)
  become free ports where they follow ``localhost:``, ``127.0.0.1:``, ``"localhost", ``
  or ``"127.0.0.1", ``; a default port left anywhere else in a block is an error;
- localserve's ``moxtw-localserve/moxtw.toml`` is written before the first start, with
  those ports (``twistd moxtw localserve`` would write the same file with the defaults);
- commands run with the venv's bin directory first on ``PATH`` (``twistd``, ``moxtw``,
  ``python3``), the source tree on ``PYTHONPATH`` (so twistd sees the plugin of an
  editable install, as in :class:`tests.helpers.Daemon`), and ``MOXTW_ADMIN_URL`` set to
  the daemon's admin API (the admin tool's default names localserve's default port).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import attrs

from moxtw.localserve import PORTS as LOCALSERVE_PORTS
from tests.helpers import localserve_config

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

#: The receiver's port in the docs.
RECEIVER_PORT = 8089
DEFAULT_PORTS = (*LOCALSERVE_PORTS.values(), RECEIVER_PORT)

_MARK_RE = re.compile(r"^<!--\s*(test|output):\s*(\S+)((?:\s+\w+)*)\s*-->\s*$")
_FENCE_RE = re.compile(r"^```(\w*)\s*$")
_PORT_RE = re.compile(r'(localhost:|127\.0\.0\.1:|"localhost", |"127\.0\.0\.1", )(\d+)\b')
_LEFTOVER_RE = re.compile(r"\b(" + "|".join(str(p) for p in DEFAULT_PORTS) + r")\b")
_OPTIONS = frozenset({"file", "background"})


class DocsError(Exception):
    """The page breaks the conventions above."""


@attrs.frozen
class Block:
    name: str
    lang: str
    text: str
    options: frozenset[str]
    line: int

    @property
    def filename(self) -> str:
        """For ``file`` blocks: the name in the first line, ``# receiver.py`` (a comment
        may follow after a colon)."""
        m = re.match(r"#\s*([\w.-]+\.py)\b", self.text)
        if m is None:
            raise DocsError(f"line {self.line}: file block {self.name} does not start with '# NAME.py'")
        return m.group(1)


@attrs.frozen
class Page:
    path: Path
    blocks: dict[str, Block]
    #: Expected outputs by label (``NAME`` or ``NAME/LABEL``).
    outputs: dict[str, Block]


def parse_page(path: Path) -> Page:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: dict[str, Block] = {}
    outputs: dict[str, Block] = {}
    pending: tuple[str, str, frozenset[str], int] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        mark = _MARK_RE.match(line)
        if mark is not None:
            if pending is not None:
                raise DocsError(f"{path}:{pending[3]}: marker not followed by a fenced block")
            options = frozenset(mark.group(3).split())
            if options - _OPTIONS or (mark.group(1) == "output" and options):
                raise DocsError(f"{path}:{i}: unknown marker options {sorted(options)}")
            pending = (mark.group(1), mark.group(2), options, i)
            continue
        fence = _FENCE_RE.match(line)
        if fence is None:
            if pending is not None and line.strip():
                raise DocsError(f"{path}:{pending[3]}: marker not followed by a fenced block")
            continue
        start = i
        body: list[str] = []
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise DocsError(f"{path}:{start}: fenced block never closed")
        i += 1
        if pending is None:
            continue
        kind, name, options, _ = pending
        pending = None
        block = Block(name, fence.group(1), "\n".join(body) + "\n", options, start)
        target = blocks if kind == "test" else outputs
        if name in target:
            raise DocsError(f"{path}:{start}: a second {kind} block named {name}")
        if kind == "test":
            if block.lang not in ("sh", "python"):
                raise DocsError(f"{path}:{start}: test block {name} is {block.lang!r}, not sh or python")
            if "file" in options:
                if block.lang != "python":
                    raise DocsError(f"{path}:{start}: file block {name} must be python")
                block.filename  # noqa: B018  (raises if the first line names no file)
            if "background" in options and block.lang != "sh":
                raise DocsError(f"{path}:{start}: background block {name} must be sh")
        target[name] = block
    if pending is not None:
        raise DocsError(f"{path}:{pending[3]}: marker not followed by a fenced block")
    for label, block in outputs.items():
        if label.split("/")[0] not in blocks:
            raise DocsError(f"{path}:{block.line}: output {label} names no test block")
    return Page(path, blocks, outputs)


def _line_pattern(expected: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in expected.split("...")))


def output_problem(expected: str, actual: str, *, ordered: bool) -> str | None:
    """Why ``actual`` does not show ``expected`` (None: it does)."""
    got = [line.rstrip() for line in actual.splitlines()]
    pos = 0
    for want in expected.splitlines():
        want = want.rstrip()
        if not want or want == "...":
            continue
        pattern = _line_pattern(want)
        candidates = range(pos, len(got)) if ordered else range(len(got))
        for j in candidates:
            if pattern.fullmatch(got[j]):
                pos = j + 1
                break
        else:
            return f"expected a line like {want!r}" + (" after the earlier ones" if ordered else "")
    return None


def substitute(text: str, ports: dict[int, int]) -> str:
    """The block with the docs' default ports replaced by the session's."""
    out = _PORT_RE.sub(lambda m: m.group(1) + str(ports.get(int(m.group(2)), m.group(2))), text)
    left = _LEFTOVER_RE.search(out)
    if left is not None:
        raise DocsError(f"default port {left.group(1)} in a form the runner does not substitute: {out!r}")
    return out


@attrs.define
class Background:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass


class Session:
    """One test's run of a page: a directory, free ports, the processes it started."""

    def __init__(self, page: Page, directory: Path, free_port: Callable[[], int]) -> None:
        self.page = page
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ports = {port: free_port() for port in DEFAULT_PORTS}
        self.used: set[str] = set()
        self.checked: set[str] = set()
        self.backgrounds: dict[str, Background] = {}
        self.env = dict(os.environ)
        self.env["PATH"] = f"{BIN}{os.pathsep}{self.env.get('PATH', '')}"
        self.env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{self.env.get('PYTHONPATH', '')}"
        self.env["MOXTW_ADMIN_URL"] = f"http://localhost:{self.port(LOCALSERVE_PORTS['http'])}/admin/api/"
        self.env.pop("MOXTW_ADMIN_PASSWORD", None)

    def port(self, default: int) -> int:
        return self.ports[default]

    def block(self, name: str) -> Block:
        if name not in self.page.blocks:
            raise DocsError(f"{self.page.path}: no test block named {name}")
        self.used.add(name)
        return self.page.blocks[name]

    def prepare_localserve(self) -> Path:
        """``moxtw-localserve/moxtw.toml`` as the first start writes it, with our ports."""
        directory = self.dir / "moxtw-localserve"
        localserve_config(directory, ports={name: self.port(port) for name, port in LOCALSERVE_PORTS.items()})
        return directory / "moxtw.toml"

    def write(self, name: str) -> Path:
        """Save a ``file`` block under its name in the session directory."""
        block = self.block(name)
        if "file" not in block.options:
            raise DocsError(f"block {name} is not a file block")
        path = self.dir / block.filename
        path.write_text(substitute(block.text, self.ports))
        return path

    def run(self, name: str, *args: str, timeout: float = 90) -> str:
        """Run a block to completion (a ``file`` block: save it, run it with ``args``);
        check its expected output if the page has one; its standard output."""
        block = self.block(name)
        if "background" in block.options:
            raise DocsError(f"block {name} is a background block")
        if "file" in block.options:
            argv = [sys.executable, str(self.write(name)), *args]
        elif block.lang == "python":
            script = self.dir / f"example_{name.replace('-', '_')}.py"
            script.write_text(substitute(block.text, self.ports))
            argv = [sys.executable, str(script), *args]
        else:
            argv = ["bash", "-e", "-o", "pipefail", "-c", substitute(block.text, self.ports), name, *args]
        done = subprocess.run(argv, cwd=self.dir, env=self.env, capture_output=True, timeout=timeout)
        out = done.stdout.decode("utf-8", "replace")
        err = done.stderr.decode("utf-8", "replace")
        where = f"{self.page.path.name}:{block.line} ({name})"
        if done.returncode != 0:
            raise AssertionError(f"{where} exited with {done.returncode}\nstdout:\n{out}\nstderr:\n{err}")
        if name in self.page.outputs:
            problem = output_problem(self.page.outputs[name].text, out, ordered=True)
            if problem is not None:
                raise AssertionError(f"{where}: {problem}\nstdout:\n{out}\nstderr:\n{err}")
            self.checked.add(name)
        return out

    def start(self, name: str) -> Background:
        """Start a ``background`` block in its own process group."""
        block = self.block(name)
        if "background" not in block.options:
            raise DocsError(f"block {name} is not a background block")
        log = self.dir / f"{name}.log"
        out: IO[bytes] = log.open("wb")
        process = subprocess.Popen(
            ["bash", "-c", substitute(block.text, self.ports)],
            cwd=self.dir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        background = Background(name, process, log)
        self.backgrounds[name] = background
        return background

    def stop(self, name: str) -> None:
        self.backgrounds.pop(name).stop()

    def stop_all(self) -> None:
        for name in list(self.backgrounds):
            self.stop(name)

    def _died(self) -> str | None:
        for b in self.backgrounds.values():
            if b.process.poll() is not None:
                return f"{b.name} exited with {b.process.returncode}:\n{b.output}"
        return None

    def wait(self, condition: Callable[[], Any], what: str, timeout: float = 180) -> Any:
        """Poll ``condition`` until it returns something true; fail after ``timeout``
        seconds (a bound for a hung run, generous for a loaded machine) or when a
        background process dies."""
        deadline = time.monotonic() + timeout
        while True:
            result = condition()
            if result:
                return result
            died = self._died()
            if died is not None:
                raise AssertionError(f"waiting for {what}: {died}")
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {b.name}:\n{b.output}" for b in self.backgrounds.values())
                raise AssertionError(f"timed out waiting for {what}\n{logs}")
            time.sleep(0.05)

    def wait_port(self, default: int) -> None:
        import socket

        def listening() -> bool:
            with socket.socket() as s:
                s.settimeout(0.5)
                return s.connect_ex(("127.0.0.1", self.port(default))) == 0

        self.wait(listening, f"port {default} (really {self.port(default)})")

    def wait_line(self, name: str, pattern: str) -> re.Match[str]:
        """Wait for a line of background block ``name``'s output matching the regex."""
        background = self.backgrounds[name]
        compiled = re.compile(pattern)

        def found() -> re.Match[str] | None:
            for line in background.output.splitlines():
                m = compiled.fullmatch(line.rstrip())
                if m is not None:
                    return m
            return None

        match: re.Match[str] = self.wait(found, f"a line {pattern!r} from {name}")
        return match

    def expect(self, label: str) -> None:
        """Wait until the background block of ``label`` shows that output block."""
        name = label.split("/")[0]
        expected = self.page.outputs[label].text
        background = self.backgrounds[name]
        self.wait(
            lambda: output_problem(expected, background.output, ordered=False) is None,
            f"the output {label} ({self.page.path.name}:{self.page.outputs[label].line})",
        )
        self.checked.add(label)

    def run_command(self, argv: list[str], timeout: float = 60) -> str:
        """Run a command of the test's own (not from the page) in the session's
        directory and environment; its standard output (it must exit 0)."""
        done = subprocess.run(argv, cwd=self.dir, env=self.env, capture_output=True, timeout=timeout)
        if done.returncode != 0:
            raise AssertionError(f"{argv} exited with {done.returncode}:\n{done.stdout!r}\n{done.stderr!r}")
        return done.stdout.decode("utf-8", "replace")
