"""One process per run folder: an advisory lock file that names its holder.

Two runs of the same folder would both train (two paid SageMaker jobs) and both render into the same
pack. :class:`RunLock` takes ``<folder>/.lensa.lock`` with an exclusive ``flock`` and writes the
holder's pid, host and start time into it; a second process fails at once with
:class:`~lensa_for_all.errors.RunInUseError` naming the first. The kernel drops a ``flock`` when its
process dies, however it dies, so a lock file left by a killed run is simply taken over (with a
message saying whose it was). Where ``fcntl`` does not exist (Windows) the pid in the file decides:
a lock whose process is gone is stale.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from .errors import RunInUseError

__all__ = ["RunLock", "LOCK_FILE", "lock_folders"]

LOCK_FILE = ".lensa.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists but belongs to someone else (or we cannot tell): assume alive
    return True


def _describe(holder: dict[str, Any]) -> str:
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"
            + (f" ({holder['what']})" if holder.get("what") else ""))


class RunLock:
    """Hold ``folder``'s lock for the duration of a ``with`` block (or between :meth:`acquire` and :meth:`release`).

    ``what`` says what the holder is doing (shown to a second process); ``on_takeover`` hears the message
    when a stale lock from a dead process is taken over.
    """

    def __init__(self, folder: str | os.PathLike[str], *, what: str = "",
                 on_takeover: Callable[[str], None] | None = None) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.what = what
        self.on_takeover = on_takeover
        self._fh: IO[str] | None = None
        self._depth = 0

    def __repr__(self) -> str:
        return f"RunLock({str(self.folder)!r}, held={self._fh is not None})"

    def holder(self) -> dict[str, Any]:
        """What the lock file says about its (last) holder; empty if it says nothing readable."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def acquire(self) -> RunLock:
        if self._fh is not None:  # re-entrant within one object (Pipeline.run inside a locked CLI call)
            self._depth += 1
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
        try:
            previous = self._lock(fh)
        except BaseException:
            fh.close()
            raise
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "what": self.what}
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps(me) + "\n")
        fh.flush()
        self._fh = fh
        self._depth = 1
        if previous and previous.get("pid") != os.getpid() and self.on_takeover is not None:
            self.on_takeover(f"Took over the lock on {self.folder} left by a run that is no longer running "
                             f"({_describe(previous)}).")
        return self

    def _lock(self, fh: IO[str]) -> dict[str, Any]:
        """Lock ``fh``; return what the file said before (a stale holder), or raise RunInUseError."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            previous = self.holder()
            pid = previous.get("pid")
            if isinstance(pid, int) and pid != os.getpid() and _pid_alive(pid):
                raise RunInUseError(self._busy_message(previous)) from None
            return previous
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunInUseError(self._busy_message(self.holder())) from None
        return self.holder()

    def _busy_message(self, holder: dict[str, Any]) -> str:
        who = _describe(holder) if holder else "another process"
        stop = f" (kill {holder['pid']})" if holder.get("pid") else ""
        return (f"{self.folder} is in use by another lensa-for-all run: {who}. Wait for it to finish or stop "
                f"it{stop}, or use another folder; running both would train and render twice.")

    def release(self) -> None:
        if self._fh is None:
            return
        self._depth -= 1
        if self._depth > 0:
            return
        fh, self._fh = self._fh, None
        try:
            fh.seek(0)
            fh.truncate()  # an empty file says nobody holds it; the file stays (removing it would race)
        except OSError:
            pass
        finally:
            fh.close()  # closing drops the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


@contextlib.contextmanager
def lock_folders(*folders: str | os.PathLike[str], what: str = "",
                 on_takeover: Callable[[str], None] | None = None) -> Iterator[list[RunLock]]:
    """Lock each folder (one lock covers the folders inside it), released in reverse order on exit."""
    chosen: list[Path] = []
    for folder in sorted({Path(f).resolve() for f in folders}, key=lambda p: len(p.parts)):
        if not any(folder == c or folder.is_relative_to(c) for c in chosen):
            chosen.append(folder)
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(RunLock(f, what=what, on_takeover=on_takeover)) for f in chosen]
