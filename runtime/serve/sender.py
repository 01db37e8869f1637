"""Sending results to the destination node with C-STORE (pynetdicom as SCU)."""
from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from io import BytesIO
from typing import Iterable, Optional

import pydicom
from pynetdicom import AE
from pynetdicom.sop_class import Comprehensive3DSRStorage, SegmentationStorage
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

_DEST_RE = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>[^:]+):(?P<port>[0-9]{1,5})$")


class SendError(Exception):
    """The destination could not be reached or refused an object (retried by the node)."""


@dataclass(frozen=True)
class Destination:
    """Where results go: the called AE title, host and port; ``ssl_context`` for TLS, or None."""

    ae_title: str
    host: str
    port: int
    ssl_context: Optional[ssl.SSLContext] = None

    @classmethod
    def parse(cls, text: str, ssl_context: Optional[ssl.SSLContext] = None) -> "Destination":
        """From 'AE@host:port'. Raises ``ValueError`` naming the expected form."""
        m = _DEST_RE.match(text.strip())
        if not m or not 0 < int(m["port"]) < 65536:
            raise ValueError(f"destination {text!r}: expected AE@host:port, e.g. PACS@10.0.0.5:104")
        return cls(m["ae"], m["host"], int(m["port"]), ssl_context)

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def send(objects: Iterable[bytes], dest: Destination, calling_ae: str, timeout: float = 30.0) -> None:
    """C-STORE each Part 10 file of ``objects`` (SEG or Comprehensive 3D SR) to ``dest`` in one
    association. Raises :class:`SendError` when the association fails or any status is not Success."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for cls in (SegmentationStorage, Comprehensive3DSRStorage):
        ae.add_requested_context(cls, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    tls = (dest.ssl_context, dest.host) if dest.ssl_context is not None else None
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title, tls_args=tls)
    if not assoc.is_established:
        raise SendError(f"no association with {dest}")
    try:
        for blob in objects:
            ds = pydicom.dcmread(BytesIO(blob))
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code != 0x0000:
                raise SendError(f"{dest} answered C-STORE of {ds.SOPInstanceUID} with status "
                                f"{'none' if code is None else f'0x{code:04X}'}")
    finally:
        if assoc.is_established:
            assoc.release()
