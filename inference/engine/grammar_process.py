"""Grammar compiles in a child process, stopped when one runs past its deadline.

xgrammar cannot interrupt a compile, and how long one takes is hard to foresee from its schema: on
two cores with SmolLM2's 49k-token vocabulary, twenty string properties with different maxLength
took 20 s and 5,000 optional properties more than six minutes. A thread left running would hold its
cores that long; a child process is killed at the deadline. The child holds its own xgrammar
compiler for the tokenizer and compiles one grammar at a time, on at most half the host's cores;
the result comes back serialized (milliseconds for small grammars, a few hundred for the largest,
which the parent's cache then keeps). The child starts with the first compile (a few seconds: it
imports xgrammar and torch), outside any deadline, and again after one was stopped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path

from .grammar_rules import CompileTimeout, GrammarError, compile_with

START_TIMEOUT_S = 120.0
_ROOT = str(Path(__file__).resolve().parents[2])  # where the `inference` package is importable from


def default_threads() -> int:
    """xgrammar threads of the child: half the host's cores (at least 1, at most 8)."""
    return max(1, min(8, (os.cpu_count() or 2) // 2))


class _Pipe:
    """Both ends a process holds: messages out on one pipe, in on the other (pickled, length-prefixed)."""

    def __init__(self, *, read_fd: int, write_fd: int) -> None:
        self._in = Connection(read_fd, writable=False)
        self._out = Connection(write_fd, readable=False)

    def send(self, message) -> None:
        self._out.send(message)

    def recv(self):
        return self._in.recv()

    def poll(self, timeout: float) -> bool:
        return self._in.poll(timeout)

    def close(self) -> None:
        self._in.close()
        self._out.close()


def _serve(conn: _Pipe) -> None:
    """The child: after (tokenizer info, threads), compile each (kind, source) received and answer
    ("ok", serialized) or ("error", message)."""
    import xgrammar as xgr

    tokenizer_info_json, max_threads = conn.recv()
    info = xgr.TokenizerInfo.deserialize_json(tokenizer_info_json)
    compiler = xgr.GrammarCompiler(info, max_threads=max_threads, cache_enabled=False)
    conn.send(("ready", ""))
    while True:
        try:
            kind, source = conn.recv()
        except (EOFError, OSError):  # the parent has gone
            return
        try:
            reply = ("ok", compile_with(compiler, kind, source).serialize_json())
        except GrammarError as exc:
            reply = ("error", str(exc))
        except Exception as exc:  # noqa: BLE001 (reported to the request, the child keeps serving)
            reply = ("error", f"the constraint could not be compiled: {exc}")
        conn.send(reply)


class CompileProcess:
    """Compiles for one tokenizer in a child process, one grammar at a time; thread-safe."""

    def __init__(self, tokenizer_info, *, timeout_s: float, max_threads: int | None = None) -> None:
        self.timeout_s = float(timeout_s)
        self._info = tokenizer_info
        self._info_json: str | None = None
        self._max_threads = max_threads or default_threads()
        self._lock = threading.Lock()
        self._process = None
        self._conn = None

    def compile(self, kind: str, source: str):
        """The xgrammar CompiledGrammar; GrammarError (CompileTimeout past the deadline) otherwise."""
        with self._lock:  # one compile at a time: the deadline starts once the child has this one
            conn = self._started()
            conn.send((kind, source))
            if not conn.poll(self.timeout_s):
                self._stop()
                raise CompileTimeout(f"compiling the grammar took longer than {self.timeout_s:g} s, the limit; make "
                                     "the schema smaller (fewer properties, enum values or string length bounds)")
            try:
                status, payload = conn.recv()
            except (EOFError, OSError):  # the child died (out of memory, killed)
                self._stop()
                raise GrammarError("the grammar compiler stopped while compiling this grammar") from None
        if status != "ok":
            raise GrammarError(payload)
        import xgrammar as xgr

        return xgr.CompiledGrammar.deserialize_json(payload, self._info)

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return self._process.pid if self._process is not None else None

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _started(self) -> _Pipe:
        if self._process is not None and self._process.poll() is None:
            return self._conn
        self._stop()
        if self._info_json is None:
            self._info_json = self._info.serialize_json()
        # A fresh interpreter running this module (no fork of a process running threads and torch, and
        # unlike multiprocessing's spawn, no second import of the parent's main script).
        child_in, to_child = os.pipe()
        from_child, child_out = os.pipe()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")])))
        try:
            self._process = subprocess.Popen([sys.executable, "-m", __name__, str(child_in), str(child_out)],
                                             pass_fds=(child_in, child_out), stdin=subprocess.DEVNULL, env=env)
        except BaseException:
            os.close(to_child)
            os.close(from_child)
            raise
        finally:
            os.close(child_in)
            os.close(child_out)
        self._conn = _Pipe(read_fd=from_child, write_fd=to_child)
        try:
            self._conn.send((self._info_json, self._max_threads))
            ready = self._conn.poll(START_TIMEOUT_S) and self._conn.recv()[0] == "ready"
        except (EOFError, OSError):
            ready = False
        if not ready:
            self._stop()
            raise GrammarError("the grammar compiler could not be started")
        return self._conn

    def _stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._conn.close()
        self._process = self._conn = None


if __name__ == "__main__":
    _serve(_Pipe(read_fd=int(sys.argv[1]), write_fd=int(sys.argv[2])))
