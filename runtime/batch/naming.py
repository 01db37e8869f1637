"""Output names of a batch's images: the file stem or the DICOM SOP Instance UID, made unique
without folder names (hospital exports often name folders after patients)."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Dict, List

from ..io import is_dicom

NAME_FROM_CHOICES = ("stem", "sop-instance-uid")


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()[:8]


def unique_stems(files: List[Path], root: Path, name_from: str = "stem") -> Dict[Path, str]:
    """Output name per file.

    ``name_from='stem'``: the file stem. ``'sop-instance-uid'``: the DICOM SOP Instance
    UID (0008,0018) read from the header (files without one keep their stem). Names that
    collide (case-insensitively, for case-insensitive file systems) get '__' and the
    first 8 hex digits of the sha1 of the file's path relative to ``root`` appended:
    deterministic (``--resume`` finds them again) and free of folder names.
    """
    if name_from not in NAME_FROM_CHOICES:
        raise ValueError(f"name_from must be one of {NAME_FROM_CHOICES}, got {name_from!r}")
    base: Dict[Path, str] = {}
    for f in files:
        name = f.stem
        if name_from == "sop-instance-uid" and f.exists() and is_dicom(f):
            from ..io.dicom import read_sop_instance_uid

            name = read_sop_instance_uid(f) or name
        base[f] = name
    counts: Dict[str, int] = {}
    for name in base.values():
        counts[name.lower()] = counts.get(name.lower(), 0) + 1
    out = {}
    for f, name in base.items():
        if counts[name.lower()] == 1:
            out[f] = name
        else:
            out[f] = f"{name}__{_short_hash(_relpath(f, root))}"
    return out


def _relpath(f: Path, root: Path) -> str:
    try:
        return Path(f).relative_to(root).as_posix()
    except ValueError:
        return Path(f).as_posix()
