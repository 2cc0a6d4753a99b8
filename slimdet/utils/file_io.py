"""Writing files so that nothing saved is ever half-written: every checkpoint, config, result
and export of slimdet goes through :func:`atomic_write`."""
from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import tempfile
from typing import Callable, List, Mapping, Optional, Sequence

logger = logging.getLogger("slimdet")


class OutputError(RuntimeError):
    """A file or folder a job must write cannot be written (a user's path or disk; one line)."""


_TEMP = re.compile(r"\.tmp\.(?P<host>.+)\.(?P<pid>\d+)$")


def _temp_name(path: str) -> str:
    # Host and pid: a start on this host can tell a dead writer's leftover from a live one's.
    return f"{path}.tmp.{socket.gethostname()}.{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temp_files(folder: str) -> List[str]:
    """Delete the temporary files in ``folder`` that writers on this host left when they were
    killed mid-write (their process is gone). Returns the removed paths."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    host = socket.gethostname()
    for name in names:
        m = _TEMP.search(name)
        if m and m.group("host") == host and not _alive(int(m.group("pid"))):
            path = os.path.join(folder, name)
            try:
                os.remove(path)
                removed.append(path)
            except OSError:
                pass
    if removed:
        logger.info("Removed %d temporary file(s) of interrupted writes in %s", len(removed), folder)
    return removed


def atomic_write(path: str, write: Callable, check: Optional[Callable[[str], None]] = None) -> None:
    """``write(f)`` to a temporary file beside ``path``, then rename it over ``path``: a crash
    mid-write leaves the old file (or none), never a truncated one. The folder is created if
    needed; a failure names ``path`` (never the temporary file) and leaves no temporary file.

    ``check(temporary path)``, when given, runs on the complete file before the rename: if it
    raises, ``path`` is left as it was (an earlier good file is not replaced by a bad one)."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create the folder {folder!r} to write {path!r}: "
                          f"{e.strerror or e}") from None
    tmp = _temp_name(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise OutputError(f"cannot write {path!r}: {e.strerror or e}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def file_sha256(path: str, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of the local file ``path`` (read in 4 MiB pieces)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(chunk), b""):
            digest.update(piece)
    return digest.hexdigest()


def same_file(a: str, b: str) -> bool:
    """Whether paths ``a`` and ``b`` name one file (through links, ``..``, another spelling);
    a path that does not exist yet is the other only if both resolve to the same name."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return os.path.realpath(a) == os.path.realpath(b)


def check_not_input(output: str, inputs: Mapping[str, str], output_flag: str = "--output") -> None:
    """:class:`OutputError` when ``output`` is one of ``inputs`` (``{flag: path}``): writing it
    would replace the file being read (a checkpoint would lose what the output leaves out)."""
    for flag, path in inputs.items():
        if path and same_file(output, path):
            raise OutputError(f"{output_flag} {output!r} is the {flag} file itself: writing it "
                              f"would replace the input; choose another {output_flag}")


def _nearest_existing(path: str) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    return folder


def _check_can_create_in(folder: str, path: str, flag: str) -> None:
    """:class:`OutputError` unless a file can be made in ``folder`` (the nearest existing folder
    on the way to ``path``). Tried with a real file, removed at once: ``os.access`` says yes to
    root on folders that refuse every write (``/sys``)."""
    if not os.path.isdir(folder):
        raise OutputError(f"{flag} {path!r}: {folder!r} is a file, not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".slimdet-write-test."):
            pass
    except OSError as e:
        raise OutputError(f"{flag} {path!r}: cannot write in {folder!r}: "
                          f"{e.strerror or e}") from None


def check_output_file(path: str, flag: str = "--output", overwrite: bool = False,
                      inputs: Optional[Mapping[str, str]] = None,
                      extensions: Sequence[str] = ()) -> None:
    """Before any long work, :class:`OutputError` (one line naming ``flag`` and ``path``) when
    the file a tool will write there cannot or must not be written: it is one of ``inputs``
    (``{flag: path}``, refused even with ``overwrite``), a folder, an existing file without
    ``overwrite`` (nothing saved is replaced unasked), of an extension not in ``extensions``
    (when given: ``.png`` ...; a plot library would otherwise add one or fail after the work),
    or in a folder that cannot be made or written."""
    check_not_input(path, inputs or {}, flag)
    if os.path.isdir(path):
        raise OutputError(f"{flag} {path!r} is a folder, not a file")
    if os.path.lexists(path) and not overwrite:
        raise OutputError(f"{flag} {path} exists: pass --overwrite to replace it, or choose "
                          "another file")
    if extensions:
        ext = os.path.splitext(path)[1].lower()
        if ext not in extensions:
            raise OutputError(f"{flag} {path!r}: {'no extension' if not ext else f'{ext} is not a format it writes'}; "
                              f"give a file ending in one of {', '.join(extensions)}")
    _check_can_create_in(_nearest_existing(path), path, flag)


def check_output_folder(path: str, flag: str) -> None:
    """:class:`OutputError` unless ``path`` is a folder, or can be made as one, that files can
    be written in (checked before any long work)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputError(f"{flag} {path!r} is a file, not a folder")
    _check_can_create_in(path if os.path.isdir(path) else _nearest_existing(path), path, flag)
