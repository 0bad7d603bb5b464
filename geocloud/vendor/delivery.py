"""Vendor deliveries: a folder or a tar archive holding a scene, its XML and its RPCs."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import ArchiveError, InputError, SceneNotFoundError
from .metadata import RASTER_SUFFIXES, VendorMetadata, find_vendor_metadata
from .rpc import find_rpb


@dataclass(frozen=True)
class ExtractLimits:
    """Bounds on what :func:`safe_extract` accepts."""

    max_total_bytes: int = 64 * 1024**3
    max_member_bytes: int = 32 * 1024**3
    max_members: int = 10_000


def _check_member(m: tarfile.TarInfo, archive: Path) -> None:
    name = m.name
    p = Path(name)
    if name.startswith(("/", "\\")) or p.is_absolute() or re.match(r"^[A-Za-z]:", name):
        raise ArchiveError(f"archive {archive} member {name!r} has an absolute path; refusing to extract it")
    if ".." in p.parts or ".." in Path(name.replace("\\", "/")).parts:
        raise ArchiveError(
            f"archive {archive} member {name!r} points outside the folder (..); refusing to extract it"
        )
    if m.issym() or m.islnk():
        target = Path(m.linkname)
        if target.is_absolute() or ".." in (p.parent / target).parts or ".." in target.parts:
            raise ArchiveError(
                f"archive {archive} member {name!r} is a link to {m.linkname!r} outside the folder; refusing to extract it"
            )
    elif not (m.isfile() or m.isdir()):
        raise ArchiveError(f"archive {archive} member {name!r} is a device or fifo; refusing to extract it")


def safe_extract(
    archive: str | os.PathLike[str], dest: str | os.PathLike[str], limits: ExtractLimits | None = None
) -> Path:
    """Extract a (gzipped) tar archive into ``dest`` after checking every member.

    Refuses absolute paths, ``..`` components, links pointing out of ``dest``, device
    files, more than ``max_members`` members, and members or totals above the size
    limits; raises :class:`ArchiveError` naming the member.  Nothing is written when a
    check fails.
    """
    limits = limits or ExtractLimits()
    archive, dest = Path(archive), Path(dest)
    try:
        tf = tarfile.open(archive, "r:*")  # noqa: SIM115 (closed by the with below)
    except (tarfile.TarError, OSError) as exc:
        raise ArchiveError(
            f"{archive} is not a readable tar archive ({exc}); pass a .tar or .tar.gz delivery"
        ) from exc
    with tf:
        members = []
        total = 0
        for i, m in enumerate(tf):
            if i >= limits.max_members:
                raise ArchiveError(
                    f"archive {archive} has more than {limits.max_members} members; refusing it"
                )
            _check_member(m, archive)
            if m.size > limits.max_member_bytes:
                raise ArchiveError(
                    f"archive {archive} member {m.name!r} is {m.size} bytes, above the "
                    f"{limits.max_member_bytes}-byte limit per member; raise ExtractLimits.max_member_bytes"
                )
            total += m.size
            if total > limits.max_total_bytes:
                raise ArchiveError(
                    f"archive {archive} unpacks to more than {limits.max_total_bytes} bytes; "
                    "raise ExtractLimits.max_total_bytes or free space"
                )
            members.append(m)
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        for m in members:
            target = (root / m.name).resolve()
            if root != target and root not in target.parents:
                raise ArchiveError(
                    f"archive {archive} member {m.name!r} resolves outside {dest}; refusing it"
                )
        tf.extractall(dest, members=members, filter="data")
    return dest


@dataclass(frozen=True)
class Delivery:
    """The pieces of one vendor delivery (multispectral part)."""

    root: Path
    raster: Path
    metadata: VendorMetadata | None
    rpb: Path | None


def is_archive(p: Path) -> bool:
    """Whether ``p`` is a tar delivery file (``.tar``, ``.tar.gz``, ``.tgz``)."""
    n = p.name.lower()
    return p.is_file() and n.endswith((".tar.gz", ".tgz", ".tar"))


def open_delivery(
    path: str | os.PathLike[str],
    workdir: str | os.PathLike[str] | None = None,
    limits: ExtractLimits | None = None,
) -> Delivery:
    """A folder or ``.tar.gz`` delivery -> its multispectral raster, XML and RPCs.

    Archives are extracted safely into ``workdir`` (a new temporary folder by default;
    the caller removes it).  PAN rasters are skipped: geocloud needs the 4-band MSS/WFV/MUX part.
    """
    p = Path(path)
    if not p.exists():
        raise SceneNotFoundError(f"delivery {p} does not exist; check the path")
    if is_archive(p):
        base = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="geocloud-delivery-"))
        folder = safe_extract(p, base / re.sub(r"\.(tar\.gz|tgz|tar)$", "", p.name, flags=re.I), limits)
    elif p.is_dir():
        folder = p
    else:
        raise InputError(f"{p} is neither a folder nor a .tar/.tar.gz delivery")
    rasters = sorted(q for q in folder.rglob("*") if q.suffix.lower() in RASTER_SUFFIXES and q.is_file())
    ms = [q for q in rasters if "-pan" not in q.name.lower()]
    if not ms:
        raise InputError(
            f"delivery {p} holds no multispectral GeoTIFF (found: {[q.name for q in rasters] or 'none'}); "
            "expected a *.tif/*.tiff beside the product XML"
        )
    raster = ms[0]
    return Delivery(root=folder, raster=raster, metadata=find_vendor_metadata(raster), rpb=find_rpb(raster))


def cleanup_delivery(delivery: Delivery, workdir: str | os.PathLike[str]) -> None:
    """Remove what :func:`open_delivery` extracted into ``workdir``."""
    shutil.rmtree(workdir, ignore_errors=True)


_ARCHIVE_SUFFIX = re.compile(r"\.(tar\.gz|tgz|tar)$", re.I)


def is_delivery(p: str | os.PathLike[str]) -> bool:
    """Whether ``p`` is a vendor delivery rather than a scene file: a folder or a tar archive."""
    q = Path(p)
    return is_archive(q) or q.is_dir()


def delivery_stem(p: str | os.PathLike[str]) -> str:
    """The name of a delivery's products: its folder's name, or its archive's without
    ``.tar``/``.tar.gz``/``.tgz`` (``GF1_WFV1_E117.0_N40.0_..._L1A0004819525``)."""
    q = Path(p)
    return _ARCHIVE_SUFFIX.sub("", q.name) if is_archive(q) else q.name


def corrupt_archive_error(path: Path, exc: BaseException) -> ArchiveError:
    """The refusal of an archive that cannot be read to its end (``geocloud process`` and the
    catalogue's error row say the same)."""
    return ArchiveError(
        f"{path} is truncated or corrupt ({type(exc).__name__}: {exc or 'unexpected end of data'}); "
        "download the delivery again"
    )


@contextlib.contextmanager
def delivery_scene(
    path: str | os.PathLike[str], outdir: str | os.PathLike[str], limits: ExtractLimits | None = None
) -> Iterator[tuple[Path, str | None, Path | None]]:
    """What ``geocloud process`` processes for ``path``: ``(scene, stem, source)``.

    A scene file is yielded as it is, ``(path, None, None)``.  A vendor delivery, a folder
    or a tar archive, yields its multispectral raster (processed with the vendor XML and
    RPCs beside it), the delivery's stem (:func:`delivery_stem`, which names the outputs)
    and the delivery itself.  An archive is extracted safely (:func:`safe_extract`) into a
    hidden work folder in ``outdir`` (:func:`geocloud.outputs.delivery_workdir`: on the
    outputs' disk, and swept by a later run when this one is killed), which is removed when
    the block ends, whatever happens.  A delivery holding several multispectral rasters is
    refused: ``geocloud catalog`` processes folders of scenes.
    """
    from ..outputs import check_writable_dir, delivery_workdir, remove_stale_partials

    p = Path(path)
    if not is_delivery(p):
        yield p, None, None
        return
    stem = delivery_stem(p)
    if p.is_dir():
        yield _single_raster(open_delivery(p), p), stem, p
        return
    out = Path(outdir)
    created = not out.exists()
    check_writable_dir(out)
    remove_stale_partials(out, stem, ())  # what a killed run of this delivery left
    work = delivery_workdir(out, stem)
    try:
        try:
            delivery = open_delivery(p, work, limits)
        except (EOFError, tarfile.TarError, zlib.error) as exc:
            raise corrupt_archive_error(p, exc) from None
        yield _single_raster(delivery, p), stem, p
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if created:  # a refused or failed run leaves no folder it made behind
            with contextlib.suppress(OSError):
                out.rmdir()  # only when empty


def _single_raster(delivery: Delivery, path: Path) -> Path:
    """The delivery's multispectral raster; refuses a folder of several scenes."""
    rasters = sorted(
        q.relative_to(delivery.root)
        for q in delivery.root.rglob("*")
        if q.suffix.lower() in RASTER_SUFFIXES and q.is_file() and "-pan" not in q.name.lower()
    )
    if len(rasters) > 1:
        shown = ", ".join(str(r) for r in rasters[:3]) + (", ..." if len(rasters) > 3 else "")
        raise InputError(
            f"{path} holds {len(rasters)} multispectral GeoTIFFs ({shown}), not one vendor delivery; "
            "pass one scene file, or use 'geocloud catalog' for a folder of scenes"
        )
    return delivery.raster
