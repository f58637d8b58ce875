"""Parse documents in a child process that can be killed: a per-document time limit, and a
parser crash costs one document instead of the run.

Some small inputs make unstructured's Markdown path take time that grows with the square of their
size (8 KB of `[` takes about 15 s, see `test_parse_limits.py`). A Python thread cannot be stopped
while it runs such code, and signals do not interrupt long C calls, so the parse runs in a child
process that the owner kills when the limit passes. The same child also contains what would
otherwise take the run down with it: a segfault in a C extension, or the out-of-memory killer.

One long-lived child serves a whole run, so a document costs one round trip through a pipe. It is
started lazily (a run with nothing to parse pays nothing), replaced after a timeout or a crash,
and stopped by `close()`. The children come from a `forkserver`: a clean process (no Dagster or
torch threads to inherit, unlike `fork`) that imports unstructured once per owner process, so a
replacement child is ready in about 0.05 s instead of the five seconds those imports take.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import ModuleType, TracebackType
from typing import Any, Protocol

from rag_pipeline.lib.offline import apply_offline_environment, use_packaged_spacy_model
from rag_pipeline.lib.parsing import ParsedDocument, ParseError, parse_document

START_METHOD = "forkserver"
# Imported once by the fork server, so that every child it forks inherits loaded parsers.
PRELOAD_MODULES = ["rag_pipeline.lib.parse_worker_preload"]
# Starting the first fork server imports torch and unstructured (about 5 s on an idle machine);
# generous, because a busy CI machine can be several times slower.
STARTUP_TIMEOUT_SECONDS = 180.0
# How long a child asked to stop may take before it is killed.
STOP_GRACE_SECONDS = 2.0
TIMEOUT_HINT = "RAG_PARSE_TIMEOUT_SECONDS"

# Parsed before a child reports ready (by the fork server, and again, instantly, by the child), so
# that loading the spaCy model and the partitioners is not charged to a document's time limit.
WARM_UP_DOCUMENTS = [
    (b"# Warm up\n\nThe parser loads its models. Then it is ready.\n", "text/markdown"),
    (b"<html><body><h1>Warm up</h1><p>The parser is ready.</p></body></html>", "text/html"),
    (b"Warm up\n\nThe parser loads its models. Then it is ready.\n", "text/plain"),
]


class ParseFunction(Protocol):
    def __call__(
        self,
        content: bytes,
        mime_type: str,
        *,
        encoding: str | None = ...,
        filename: str = ...,
        declared_title: str | None = ...,
    ) -> ParsedDocument: ...


class ParseWorkerError(RuntimeError):
    """The worker process could not be started: a fault of the installation, not of a document."""


@dataclass(frozen=True)
class _Request:
    content: bytes
    mime_type: str
    encoding: str | None
    filename: str
    declared_title: str | None


@dataclass(frozen=True)
class _Reply:
    document: ParsedDocument | None = None
    error_code: str = ""
    error_message: str = ""


_READY = "ready"
_RECEIVED = "received"


class ParseWorker:
    """Parses documents one at a time in a child process, each within `timeout_seconds`.

    `parse` returns the same `ParsedDocument` as `parse_document` and raises the same
    `ParseError`s, plus `parse_timeout` (the child was killed at the limit) and `parser_crashed`
    (the child died). Use it as a context manager so the child is stopped on every exit path.
    `parse_function` and `initializer` must be importable module-level functions (they are
    pickled by name); tests use them to crash the child or to block its network.
    """

    def __init__(
        self,
        timeout_seconds: float,
        *,
        parse_function: ParseFunction = parse_document,
        initializer: Callable[[], object] | None = None,
        start_method: str = START_METHOD,
        startup_timeout_seconds: float = STARTUP_TIMEOUT_SECONDS,
    ) -> None:
        if timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be greater than zero, not {timeout_seconds}")
        self.timeout_seconds = timeout_seconds
        self._parse_function = parse_function
        self._initializer = initializer
        self._start_method = start_method
        self._startup_timeout_seconds = startup_timeout_seconds
        self._process: BaseProcess | None = None
        self._connection: Connection | None = None
        self.children_started = 0

    @property
    def pid(self) -> int | None:
        """The current child's process id, or None while no child is running."""
        return self._process.pid if self._process is not None else None

    def parse(
        self,
        content: bytes,
        mime_type: str,
        *,
        encoding: str | None = None,
        filename: str = "document",
        declared_title: str | None = None,
    ) -> ParsedDocument:
        """Parse one document in the child; raises `ParseError` with a reason code."""
        process, connection = self._deliver(
            _Request(content, mime_type, encoding, filename, declared_title)
        )
        started = time.monotonic()
        try:
            reply: _Reply | None = _receive(process, connection, self.timeout_seconds)
        except (EOFError, OSError):
            # The child died with the document in hand: its pipe broke or reached its end.
            raise ParseError("parser_crashed", _crash_message(self._discard(kill=True))) from None
        if reply is None:
            self._discard(kill=True)
            raise ParseError(
                "parse_timeout",
                f"parsing took longer than the per-document limit of {self.timeout_seconds:g} s "
                f"and was stopped after {time.monotonic() - started:.1f} s; to give it more "
                f"time, raise {TIMEOUT_HINT} (the `parsing.timeout_seconds` resource setting)",
            )
        if reply.document is None:
            raise ParseError(reply.error_code, reply.error_message)
        return reply.document

    def _deliver(self, request: _Request) -> tuple[BaseProcess, Connection]:
        """Hand the request to a live child (starting one if needed) and wait for its receipt.

        Only a child that confirmed receipt can have died of the document. One that died between
        documents may still look alive here: the fork server reports a death only after reaping
        it, and a killed process's end of the pipe was seen to close a few milliseconds after
        that, so a send can even succeed. Such a child is replaced, once, blaming no document.
        """
        for _ in range(2):
            if self._process is None or not self._process.is_alive():
                self._discard(kill=True)
                self._start()
            process, connection = self._process, self._connection
            assert process is not None and connection is not None
            try:
                connection.send(request)
                if _receive(process, connection, self._startup_timeout_seconds) == _RECEIVED:
                    return process, connection
            except (EOFError, OSError):
                pass
            self._discard(kill=True)
        raise ParseWorkerError("two parse worker processes in a row died before taking a document")

    def close(self) -> None:
        """Stop the child (asking first, then killing it); a later `parse` starts a new one."""
        self._discard(kill=False)

    def __enter__(self) -> ParseWorker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # An exception (or Dagster's run termination) may leave the child mid-document.
        self._discard(kill=exc is not None)

    def _start(self) -> None:
        context = multiprocessing.get_context(self._start_method)
        if self._start_method == "forkserver":
            # Takes effect only when this call starts the process-wide fork server.
            context.set_forkserver_preload(PRELOAD_MODULES)
        connection, child_connection = context.Pipe(duplex=True)
        # daemon: multiprocessing kills it when the owner's interpreter exits normally.
        process = context.Process(
            target=_serve,
            args=(child_connection, self._parse_function, self._initializer),
            name="rag-parse-worker",
            daemon=True,
        )
        with _entry_point_hidden():
            process.start()
        # Only the child may hold its end, or the owner would never see the end of the pipe.
        child_connection.close()
        self._process, self._connection = process, connection
        self.children_started += 1
        cause = ""
        try:
            message = _receive(process, connection, self._startup_timeout_seconds)
            if message == _READY:
                return
            if message is None:
                cause = f"no answer within {self._startup_timeout_seconds:g} s"
            else:
                cause = f"its warm-up failed:\n{message}"
        except (EOFError, OSError):
            pass  # it died: its exit code tells more
        exitcode = self._discard(kill=True)
        cause = cause or f"it exited with code {exitcode} before it was ready"
        raise ParseWorkerError(f"the parse worker process did not start: {cause}")

    def _discard(self, *, kill: bool) -> int | None:
        """Stop and forget the current child; returns its exit code (negative: signal)."""
        process, connection = self._process, self._connection
        self._process = self._connection = None
        if process is None or connection is None:
            return None
        if not kill:
            with contextlib.suppress(OSError):  # already gone
                connection.send(None)
            process.join(STOP_GRACE_SECONDS)
        if process.exitcode is None:
            process.kill()
            process.join(STOP_GRACE_SECONDS)
        connection.close()
        exitcode = process.exitcode
        if exitcode is not None:
            process.close()
        return exitcode


@contextlib.contextmanager
def _entry_point_hidden() -> Iterator[None]:
    """Keep the child from re-running the owner's entry point while it is being started.

    `spawn` and `forkserver` children import the owner's `__main__` module again (CPython's fork
    server never preloads it, whatever its preload list says). The child needs nothing from it:
    it runs `_serve` and module-level functions of importable modules. Re-importing it cost each
    child about a second under Dagster or the CLI, and failed outright for a script read from
    stdin or one without a `__name__ == "__main__"` guard. `Process.start()` reads `__main__`
    only while it prepares the child, a few milliseconds.
    """
    entry_point = sys.modules.get("__main__")
    sys.modules["__main__"] = ModuleType("__main__")
    try:
        yield
    finally:
        if entry_point is None:
            del sys.modules["__main__"]
        else:
            sys.modules["__main__"] = entry_point


def _receive(process: BaseProcess, connection: Connection, timeout: float) -> Any:
    """The child's next message; None if none came within `timeout` seconds; EOFError if the
    child ended first."""
    ready = wait([connection, process.sentinel], timeout)
    if not ready:
        return None
    if connection not in ready:
        raise EOFError("the child ended without a message")
    return connection.recv()


def _crash_message(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        cause = (
            " (killed from outside, for example by the out-of-memory killer)"
            if -exitcode == signal.SIGKILL
            else ""
        )
        return f"the parser process died of {name}{cause} while parsing this document"
    return f"the parser process exited (code {exitcode}) while parsing this document"


def _exit_with_owner() -> None:
    """End this child when its owner dies, even in the middle of a document.

    Between documents the child sees the end of its pipe and returns, but a child busy with a
    pathological document would otherwise keep a core busy long after a killed run (the fork
    server's children are not the owner's children, so nothing else tells them). The watcher
    waits on the owner's sentinel, a pipe that reaches its end when the owner's process ends.
    It needs the GIL to act: pure-Python parsing (Python-Markdown) hands it over every 5 ms, a
    single long C call only when it returns.
    """
    owner = multiprocessing.parent_process()
    if owner is None:
        return

    def watch() -> None:
        owner.join()
        os._exit(1)

    threading.Thread(target=watch, name="owner-watch", daemon=True).start()


def warm_up() -> None:
    """Load the parsers and the spaCy model by parsing `WARM_UP_DOCUMENTS` (cheap once done)."""
    use_packaged_spacy_model()
    for content, mime_type in WARM_UP_DOCUMENTS:
        parse_document(content, mime_type, filename="warm-up")


def _serve(
    connection: Connection,
    parse_function: ParseFunction,
    initializer: Callable[[], object] | None,
) -> None:
    """The child: warm up, report ready, then answer requests until told to stop."""
    # Ctrl-C reaches the whole process group; the owner decides when this child ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_owner()
    try:
        # The fork server inherited the owner's environment, but apply it here too: the child
        # must never reach the network whoever started it.
        apply_offline_environment()
        if initializer is not None:
            initializer()
        warm_up()
    except Exception:
        connection.send(traceback.format_exc(limit=5)[-2000:])
        return
    connection.send(_READY)
    while True:
        try:
            request: _Request | None = connection.recv()
        except EOFError:
            return  # the owner closed its end or died
        if request is None:
            return
        connection.send(_RECEIVED)
        try:
            reply = _Reply(
                document=parse_function(
                    request.content,
                    request.mime_type,
                    encoding=request.encoding,
                    filename=request.filename,
                    declared_title=request.declared_title,
                )
            )
        except ParseError as error:
            reply = _Reply(error_code=error.code, error_message=error.message)
        except Exception as error:  # the parse function is ours, but the parser's bugs are not
            reply = _Reply(
                error_code="parser_error",
                error_message=f"{type(error).__name__} in the parser process: {error}"[:500],
            )
        connection.send(reply)
