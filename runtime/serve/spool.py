"""The node's spool: every received image stays on disk until its results are delivered.

Layout under the spool folder, one name per SOP Instance UID (digits and dots only)::

    in/<uid>.dcm        received image (fsynced, and its folder entry too, before C-STORE success)
    out/<uid>/seg.dcm   its results, once made (each written atomically: a restart resends the
    out/<uid>/sr.dcm    same SOP instances, never computes new ones)
    done/<uid>          delivered; the files above are then removed, then this marker
    failed/<uid>.dcm    an image the cascade could not run on (kept for inspection, never retried)

On restart :meth:`Spool.pending` lists the images still to deliver; a crash between delivery
and the ``done`` marker makes the results be sent again with the same SOP Instance UIDs, which a
PACS stores once.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Dict, List, Optional

from ..outputs import atomic_write_bytes

#: What may name a spool file: a DICOM UID (PS3.5 9.1: digits and dots, at most 64 characters).
UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
RESULT_NAMES = ("seg.dcm", "sr.dcm")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """A spool folder (created if missing). Not thread-safe by itself: the node calls
    :meth:`put` from association threads for different UIDs and the rest from its one worker."""

    def __init__(self, root: Path):
        self.root = Path(root)
        for sub in ("in", "out", "done", "failed"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    @staticmethod
    def check_uid(uid: str) -> str:
        """``uid`` if it is a well-formed DICOM UID, else ``ValueError``."""
        if not (0 < len(uid) <= 64 and UID_RE.match(uid)):
            raise ValueError(f"malformed SOP Instance UID {uid[:70]!r}")
        return uid

    def image(self, uid: str) -> Path:
        return self.root / "in" / f"{self.check_uid(uid)}.dcm"

    def put(self, uid: str, data: bytes) -> Path:
        """Store a received Part 10 file durably (file and folder entry fsynced) -> its path. Raises OSError."""
        p = self.image(uid)
        atomic_write_bytes(p, data)
        _fsync_dir(p.parent)
        return p

    def pending(self) -> List[str]:
        """UIDs received and not delivered, oldest first; leftovers of delivered ones are cleaned up."""
        items = []
        for p in sorted((self.root / "in").glob("*.dcm"), key=lambda q: q.stat().st_mtime_ns):
            uid = p.stem
            if (self.root / "done" / uid).exists():
                self._cleanup(uid)
            elif UID_RE.match(uid):
                items.append(uid)
        for marker in (self.root / "done").iterdir():
            if not (self.root / "in" / f"{marker.name}.dcm").exists():
                marker.unlink(missing_ok=True)
        return items

    def results(self, uid: str) -> Optional[Dict[str, bytes]]:
        """The stored results of ``uid`` ({'seg.dcm': bytes, 'sr.dcm': bytes}) or None when not made yet."""
        d = self.root / "out" / self.check_uid(uid)
        if not all((d / n).is_file() for n in RESULT_NAMES):
            return None
        return {n: (d / n).read_bytes() for n in RESULT_NAMES}

    def put_results(self, uid: str, results: Dict[str, bytes]) -> None:
        """Store the results of ``uid`` (keys :data:`RESULT_NAMES`), each atomically. Raises OSError."""
        d = self.root / "out" / self.check_uid(uid)
        for n in RESULT_NAMES:
            atomic_write_bytes(d / n, results[n])
        _fsync_dir(d)

    def done(self, uid: str) -> None:
        """Mark ``uid`` delivered (marker fsynced first), then remove its files."""
        marker = self.root / "done" / self.check_uid(uid)
        atomic_write_bytes(marker, b"")
        _fsync_dir(marker.parent)
        self._cleanup(uid)

    def fail(self, uid: str) -> None:
        """Move the image of ``uid`` to ``failed/`` (never retried) and drop any partial results."""
        os.replace(self.image(uid), self.root / "failed" / f"{uid}.dcm")
        shutil.rmtree(self.root / "out" / uid, ignore_errors=True)

    def _cleanup(self, uid: str) -> None:
        shutil.rmtree(self.root / "out" / uid, ignore_errors=True)
        (self.root / "in" / f"{uid}.dcm").unlink(missing_ok=True)
        _fsync_dir(self.root / "in")
        (self.root / "done" / uid).unlink(missing_ok=True)
