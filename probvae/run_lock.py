"""One writer per run directory: RUN_DIR/writer.lock.

`RunLock` holds RUN_DIR/writer.lock (an exclusive `flock`, released by the
kernel when the process ends, however it ends, and the holder's PID, host,
command and start time) from before a run writes anything until it stops. A
second writer gets a `UserError` naming the holder; a lock file left by a
process that died is taken over with a message. Readers (`load_run`,
evaluation, inspection) take no lock: every file they read is renamed into
place whole.

The lock file is never reached through a symbolic link (it is opened with
`O_NOFOLLOW`), so a `writer.lock` that points elsewhere is refused rather
than truncated; a lock whose holder cannot be written (a full disk) is
removed again and refused in one line. `probvae.runs` re-exports both names.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import sys
from typing import Callable

from probvae.errors import UserError

__all__ = ["LOCK_FILE", "RunLock"]

LOCK_FILE = "writer.lock"
# Not on every platform (Windows has none): there the link is looked for before opening.
_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """The exclusive right to write one run directory (see the module docstring).

    `acquire()` (or entering the context) takes RUN_DIR/writer.lock if the
    directory exists, and is a no-op if it is held already; `release()` (or
    leaving the context) gives it up and removes the file. A directory that
    does not exist yet is locked when `probvae.runs.prepare_run_dir` creates it.

    Raises:
      UserError: another live process holds the lock (the message names it),
        writer.lock is a symbolic link, or it cannot be created or written.
    """

    def __init__(self, run_dir: str, log: Callable[[str], None] = print):
        self.run_dir, self.log, self._fd = run_dir, log, None

    @property
    def path(self) -> str:
        return os.path.join(self.run_dir, LOCK_FILE)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "RunLock":
        if os.path.isdir(self.run_dir):
            self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    @staticmethod
    def _holder(fd: int) -> dict:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            holder = json.loads(os.read(fd, 65536).decode() or "{}")
            return holder if isinstance(holder, dict) else {}
        except (OSError, ValueError):
            return {}

    @staticmethod
    def describe(holder: dict) -> str:
        """"PID 123 on host h (fit.py ..., since ...)" of a lock file's contents."""
        if not holder:
            return "another process"
        text = f"PID {holder.get('pid')} on host {holder.get('host')}"
        if holder.get("since"):
            text += f", since {holder['since']}"
        return text

    def _open(self, flags: int) -> int:
        """A descriptor of the lock file, never through a symbolic link.

        Raises:
          UserError: the lock file is a symbolic link.
          OSError: it cannot be opened otherwise.
        """
        try:
            if _NO_FOLLOW or not os.path.islink(self.path):
                return os.open(self.path, flags | _NO_FOLLOW, 0o644)
        except OSError:
            if not os.path.islink(self.path):
                raise
        raise UserError(f"cannot lock run directory {self.run_dir}: {self.path} is a symbolic link, which probvae "
                        "does not follow; remove the link (probvae makes that file itself)")

    def _lock(self, fd: int, holder: dict) -> None:
        """flock `fd` (without flock: check the PID the file names).

        Raises:
          UserError: another live process holds the lock.
        """
        try:
            import fcntl
        except ImportError:  # no flock on this platform: the PID in the file is the lock
            fcntl = None
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            elif holder.get("host") == socket.gethostname() and _process_alive(int(holder.get("pid", -1))):
                raise BlockingIOError
        except (BlockingIOError, PermissionError):
            raise UserError(f"run directory {self.run_dir} is being written by {self.describe(holder)}; wait "
                            f"for that run to end or stop it (it saves a checkpoint), then pass --resume "
                            f"{self.run_dir}") from None

    def check(self) -> None:
        """Refuse as `acquire` would if another live process holds the lock
        now (or writer.lock is a symbolic link), taking nothing: fit.py asks
        before TensorFlow loads, so a locked run is refused in a moment
        (`acquire` still decides)."""
        if self.held:
            return
        try:
            fd = self._open(os.O_RDONLY)
        except OSError:  # no lock file, or one acquire will report on
            return
        try:
            self._lock(fd, self._holder(fd))
        finally:
            os.close(fd)  # and with it the flock, if it was taken

    def acquire(self) -> None:
        if self.held:
            return
        while True:
            try:
                fd = self._open(os.O_RDWR | os.O_CREAT)
            except OSError as error:
                raise UserError(f"cannot lock run directory {self.run_dir}: {error.strerror}; "
                                "fix its permissions") from None
            if os.fstat(fd).st_nlink > 1:  # a hard link: writing it would change another file too
                os.close(fd)
                raise UserError(f"cannot lock run directory {self.run_dir}: {self.path} has other names (a hard "
                                "link); remove it (probvae makes that file itself)")
            holder = self._holder(fd)
            try:
                self._lock(fd, holder)
            except UserError:
                os.close(fd)
                raise
            try:  # the file may have been released and removed between open and flock: lock the current one
                if os.fstat(fd).st_ino == os.lstat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        if holder.get("pid") not in (None, os.getpid()):
            self.log(f"taking over the lock of {self.describe(holder)}, which is no longer running")
        self._write_holder(fd)
        self._fd = fd

    def _write_holder(self, fd: int) -> None:
        """Write this process into the locked file `fd`; on failure remove the
        file and release the lock.

        Raises:
          UserError: the file cannot be written (a full disk).
        """
        mine = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
                "since": datetime.datetime.now().isoformat(timespec="seconds")}
        text = json.dumps(mine).encode()
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            while text:
                text = text[os.write(fd, text):]
            os.fsync(fd)
        except OSError as error:
            self._remove_and_close(fd)
            raise UserError(f"cannot lock run directory {self.run_dir}: cannot write {self.path} "
                            f"({error.strerror}); free disk space or fix permissions") from None

    def _remove_and_close(self, fd: int) -> None:
        try:  # removed while still locked; a process that opened it meanwhile sees another inode and retries
            os.remove(self.path)
        except OSError:
            pass
        os.close(fd)  # closing the last descriptor releases the flock

    def release(self) -> None:
        if not self.held:
            return
        fd, self._fd = self._fd, None
        self._remove_and_close(fd)
