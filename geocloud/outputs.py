"""Output files: folders, locks, temporary names, the rename into place.

An interrupted run never leaves a file that looks finished: products are written under
temporary names (:func:`partial_name`) in a work folder (:func:`partial_workdir`) and
renamed when complete (:func:`atomic_output`, :class:`OutputTransaction`); what a killed
run left is swept by the next (:func:`remove_stale_partials`).  One run at a time writes a
scene's products into a folder (:func:`scene_lock`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import GeocloudError, OutputError

log = logging.getLogger(__name__)


def check_writable_dir(outdir: Path, flag: str = "-o/--outdir") -> None:
    """Create ``outdir`` if needed and check that files can be created in it (errors name
    the option ``flag`` that chose it)."""
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"output directory {str(outdir)!r} cannot be created ({exc.strerror}); pass a writable {flag}"
        ) from None
    if not outdir.is_dir():
        raise OutputError(f"output path {str(outdir)!r} is not a directory; pass a directory to {flag}")
    probe = outdir / f".geocloud-write-test-{os.getpid()}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise OutputError(
            f"output directory {str(outdir)!r} is not writable ({exc.strerror}); pass a writable {flag}"
        ) from None


@contextlib.contextmanager
def scene_lock(outdir: Path, stem: str) -> Iterator[None]:
    """Hold an advisory lock on ``stem``'s products in ``outdir`` for the block's duration.

    A second run for the same scene and folder fails at once with :class:`OutputError`
    naming the running process (the lock file ``.STEM.geocloud-lock`` holds its host and
    pid).  The lock is ``flock`` on that file, so the system releases it when a process
    dies; the file is removed on exit.  Locks need a local file system (``flock`` on NFS
    depends on the server).
    """
    check_writable_dir(outdir)
    try:
        import fcntl
    except ImportError:  # no flock (Windows): run unlocked, as before
        yield
        return
    path = outdir / f".{stem}.geocloud-lock"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise OutputError(
                f"another geocloud run ({holder}) is writing the products of {stem!r} into {str(outdir)!r}; "
                "wait for it to finish, or pass another -o"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file another run removed after we opened it
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {_HOST}".encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)


#: a write that fails with less than this free on the output's disk is reported as a full
#: disk (GDAL's TIFF errors carry no errno).
LOW_SPACE_BYTES = 64 * 2**20


def disk_full_error(outdir: Path, exc: BaseException) -> OutputError | None:
    """The :class:`OutputError` to raise instead of ``exc`` when it came from a full disk
    (ENOSPC or EDQUOT, or any failure with less than :data:`LOW_SPACE_BYTES` left where
    ``outdir`` is); ``None`` when the disk is not the cause."""
    if isinstance(exc, GeocloudError):
        return None
    try:
        free = shutil.disk_usage(outdir).free
    except OSError:
        return None
    no_space = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if not (no_space or free < LOW_SPACE_BYTES):
        return None
    return OutputError(
        f"no space left on the disk of {str(outdir)!r} ({free / 2**20:.0f} MB free) while writing "
        "the outputs; free some space or pass another -o (no partial outputs were kept)"
    )


#: this host's name as it appears in temporary names (see :func:`partial_name`).
_HOST = "".join(c if c.isalnum() or c in ".-" else "_" for c in socket.gethostname()) or "host"


def _run_tag() -> str:
    """This process's mark in temporary names: host and pid, so that a later run can tell
    what a run that died on this host left behind (:func:`remove_stale_partials`)."""
    return f"{_HOST}-{os.getpid()}"


def partial_name(final: Path, *, keep_suffix: bool = False) -> Path:
    """The temporary name a file is written under before being renamed to ``final``
    (``keep_suffix``: ending in ``final``'s extension, for writers that choose the format
    from it, such as GDAL's GeoPackage driver)."""
    if keep_suffix:
        return final.with_name(f".{final.stem}.{_run_tag()}.partial{final.suffix}")
    return final.with_name(f".{final.name}.{_run_tag()}.partial")


def partial_workdir(outdir: Path, stem: str) -> Path:
    """The hidden folder of a scene run's intermediate files in ``outdir``."""
    return outdir / f".geocloud-{stem}-{_run_tag()}.partial"


def delivery_workdir(outdir: Path, stem: str) -> Path:
    """The hidden folder a vendor delivery archive is extracted into in ``outdir`` (on the
    outputs' disk; swept by a later run of ``stem`` when this one is killed)."""
    return outdir / f".geocloud-{stem}-{_run_tag()}.delivery.partial"


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":  # os.kill would end the process there: assume alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def remove_stale_partials(outdir: Path, stem: str, finals: Iterable[Path]) -> list[Path]:
    """Remove what runs of scene ``stem`` on this host left in ``outdir`` when they were
    killed (SIGKILL, out of memory, a dask worker stopped): the work folders of
    :func:`partial_workdir` and :func:`delivery_workdir` and the temporary names of
    ``finals``, where the process that
    made them is gone.  A run still alive, or one of another host (a shared disk), is left
    alone.  Returns what was removed."""
    host = re.escape(f"{_HOST}-")
    patterns = [re.compile(re.escape(f".geocloud-{stem}-") + host + r"(\d+)(?:\.delivery)?\.partial")]
    for f in finals:
        patterns.append(re.compile(re.escape(f".{f.name}.") + host + r"(\d+)\.partial"))
        patterns.append(re.compile(re.escape(f".{f.stem}.") + host + r"(\d+)\.partial" + re.escape(f.suffix)))
    removed = []
    for entry in outdir.glob(".*.partial*"):
        match = next((m for pat in patterns if (m := pat.fullmatch(entry.name))), None)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


@contextmanager
def atomic_output(
    final: Path,
    *,
    keep_suffix: bool = False,
    what: str = "",
    errors: tuple[type[BaseException], ...] = (OSError,),
) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; when the block completes it is renamed onto
    ``final``, otherwise removed, so no file that looks finished is ever left half written.

    ``keep_suffix`` keeps ``final``'s extension at the end of the temporary name (for writers
    that choose the format from it).  ``errors`` raised in the block or by the rename become
    an :class:`OutputError` naming the file (``what`` prefixes it, e.g. ``"catalogue "``).
    """
    tmp = partial_name(final, keep_suffix=keep_suffix)
    tmp.unlink(missing_ok=True)  # a stale one would make some drivers append or refuse
    try:
        yield tmp
        os.replace(tmp, final)
    except OutputError:
        raise
    except errors as exc:
        raise OutputError(f"cannot write {what}{final} ({exc}); check the output folder") from exc
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(final: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``final`` through a temporary file and a rename."""
    with atomic_output(final) as tmp:
        tmp.write_text(text, encoding="utf-8")



class OutputTransaction:
    """All the products of one run, written together or not at all.

    On entry: what killed runs of the scene left is swept (:func:`remove_stale_partials`),
    and the work folder (:func:`partial_workdir`) is made.  Products are written under
    :meth:`temporary` names; :meth:`commit` renames them all into place and removes the
    ``stale`` products of an earlier run in the same step.  On exit, whatever was not
    committed is removed, the work folder too; a write that failed on a full disk is
    reported as such (:func:`disk_full_error`: GDAL's write errors do not say why).
    """

    def __init__(self, outdir: Path, stem: str, finals: Iterable[Path]) -> None:
        self.outdir, self.stem = Path(outdir), stem
        self.finals = list(finals)
        self.workdir = partial_workdir(self.outdir, stem)
        self.partials: list[tuple[Path, Path]] = []  # (temporary, final)

    def __enter__(self) -> OutputTransaction:
        stale = remove_stale_partials(self.outdir, self.stem, self.finals)
        if stale:
            log.info("removed %d temporary file(s) of killed runs: %s", len(stale), ", ".join(p.name for p in stale))
        self.workdir.mkdir(exist_ok=True)
        return self

    def temporary(self, final: Path, *, keep_suffix: bool = False) -> Path:
        """The temporary name ``final`` is written under until :meth:`commit`."""
        tmp = partial_name(final, keep_suffix=keep_suffix)
        self.partials.append((tmp, final))
        return tmp

    def commit(self, stale: Iterable[Path] = ()) -> None:
        """Rename every product into place, then remove ``stale`` files (an earlier run's
        products of the scene that this run did not write)."""
        for tmp, final in self.partials:
            os.replace(tmp, final)
        self.partials.clear()
        removed = []
        for p in stale:
            p.unlink(missing_ok=True)
            removed.append(p.name)
        if removed:
            log.info("--overwrite: removed %s of an earlier run", ", ".join(removed))

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        try:
            if isinstance(exc, Exception):
                full = disk_full_error(self.outdir, exc)
                if full is not None:
                    raise full from exc
        finally:
            for tmp, _ in self.partials:
                if tmp.exists():
                    tmp.unlink()
            shutil.rmtree(self.workdir, ignore_errors=True)
