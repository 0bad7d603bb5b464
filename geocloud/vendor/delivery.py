"""Vendor deliveries: a folder or a tar archive holding a scene, its XML and its RPCs."""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import tempfile
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
