"""The DICOM node: a storage SCP in front of the cascade, a worker behind it.

Association: C-ECHO and C-STORE of the image SOP classes of :data:`.policy.IMAGE_SOP_CLASSES`
(any transfer syntax pydicom decodes); calling AE titles checked against an allow-list
(association rejected otherwise); optional TLS. C-STORE statuses (PS3.4 Annex B.2.3 /
PS3.7 Annex C): 0x0000 success once the image is on disk and fsynced; 0xA700 "Refused: Out
of Resources" when ``max_queue`` images are waiting; 0xA701 when the spool cannot be
written; 0xA900 "Data Set does not match SOP Class" for a malformed SOP Instance UID;
0xC001 ("Cannot understand" range) for an object the modality policy refuses
(:mod:`.policy`). Every refusal is one log line naming the SOP Instance UID, never the patient.

Worker: one thread takes the spooled images in order, runs the cascade, stores the SEG and
SR in the spool and sends them to the destination, retrying with exponential backoff
(``retry_s`` doubling up to ``retry_max_s``) while it is down; then marks the image delivered.
"""
from __future__ import annotations

import logging
import queue
import ssl
import threading
from pathlib import Path
from typing import Optional, Sequence

from pydicom.dataset import Dataset
from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from .policy import IMAGE_SOP_CLASSES, refusal
from .sender import Destination, SendError, send
from .spool import Spool

log = logging.getLogger("runtime.serve")

SUCCESS, OUT_OF_RESOURCES, SPOOL_ERROR, NOT_MATCHING, REFUSED_POLICY = 0x0000, 0xA700, 0xA701, 0xA900, 0xC001


def _status(code: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]  # LO: at most 64 characters
    return ds


def server_ssl_context(cert: Path, key: Path, ca: Optional[Path] = None) -> ssl.SSLContext:
    """TLS for the node's server side; with ``ca`` callers must present a certificate it signed."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca) if ca else None)
    ctx.load_cert_chain(str(cert), str(key))
    if ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class Node:
    """A storage node running ``cascade`` on what it receives and sending results to ``dest``.

    ``allowed``: calling AE titles accepted (None: any). ``max_queue``: images received and
    not yet delivered beyond which C-STORE is refused. ``mg_only``: see :func:`.policy.refusal`.
    """

    def __init__(self, cascade, spool_dir: Path, ae_title: str, port: int, dest: Destination,
                 host: str = "0.0.0.0", allowed: Optional[Sequence[str]] = None, max_queue: int = 32,
                 mg_only: bool = False, ssl_context: Optional[ssl.SSLContext] = None,
                 retry_s: float = 1.0, retry_max_s: float = 60.0):
        from ..dicomseg import Algorithm

        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self.cascade, self.alg = cascade, Algorithm.from_bundle(cascade.bundle)
        self.spool = Spool(spool_dir)
        self.ae_title, self.host, self.port, self.dest = ae_title, host, int(port), dest
        self.allowed = [a.strip() for a in allowed if a.strip()] if allowed else None
        self.max_queue, self.mg_only, self.ssl_context = int(max_queue), mg_only, ssl_context
        self.retry_s, self.retry_max_s = float(retry_s), float(retry_max_s)
        self._queue: "queue.Queue[str]" = queue.Queue()
        self._waiting: set = set()  # UIDs spooled and not yet delivered
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = None
        self._worker: Optional[threading.Thread] = None

    # ------------------------------------------------------------------ association side
    def _on_echo(self, event) -> int:
        return SUCCESS

    def _on_store(self, event) -> Dataset | int:
        ds = event.dataset
        uid = str(ds.get("SOPInstanceUID", ""))
        try:
            self.spool.check_uid(uid)
        except ValueError as e:
            log.warning("refused C-STORE: %s", e)
            return _status(NOT_MATCHING, "malformed SOP Instance UID")
        reason = refusal(ds, self.mg_only)
        if reason:
            log.warning("refused %s: %s", uid, reason)
            return _status(REFUSED_POLICY, reason)
        with self._lock:
            if uid not in self._waiting and len(self._waiting) >= self.max_queue:
                log.warning("refused %s: queue full (%d images waiting)", uid, len(self._waiting))
                return _status(OUT_OF_RESOURCES, f"queue full ({len(self._waiting)} images waiting)")
            new = uid not in self._waiting
            self._waiting.add(uid)
        try:
            self.spool.put(uid, event.encoded_dataset())
        except OSError as e:
            with self._lock:
                self._waiting.discard(uid)
            log.error("refused %s: spool not writable (%s)", uid, e.strerror or type(e).__name__)
            return _status(SPOOL_ERROR, "spool not writable")
        if new:
            self._queue.put(uid)
        log.info("received %s", uid)
        return SUCCESS

    # ------------------------------------------------------------------ worker side
    def _results(self, uid: str) -> dict:
        """The stored results of ``uid``, made now when missing."""
        from ..dicomseg import make_seg, make_sr, read_source, to_bytes
        from ..io import read_image

        got = self.spool.results(uid)
        if got is not None:
            return got
        path = self.spool.image(uid)
        pixels, meta = read_image(path)
        res = self.cascade.run(pixels, meta)
        ds = read_source(path)
        got = {"seg.dcm": to_bytes(make_seg(ds, res, self.alg)),
               "sr.dcm": to_bytes(make_sr(ds, res, self.alg, meta.pixel_spacing_mm))}
        self.spool.put_results(uid, got)
        log.info("results of %s: %d lesion marks, FGT %.1f%%", uid, len(res.lesions()), 100 * res.fgt_fraction)
        return got

    def _deliver(self, uid: str) -> None:
        from ..dicomseg import DicomOutputError
        from ..io import InputError

        try:
            results = self._results(uid)
        except (InputError, DicomOutputError, ValueError) as e:
            reason = getattr(e, "reason", None) or str(e)
            log.error("no results for %s: %s (kept in failed/)", uid, reason)
            self.spool.fail(uid)
            return
        delay = self.retry_s
        while not self._stop.is_set():
            try:
                send([results["seg.dcm"], results["sr.dcm"]], self.dest, self.ae_title)
                break
            except SendError as e:
                log.warning("sending results of %s: %s; retry in %.1f s", uid, e, delay)
                self._stop.wait(delay)
                delay = min(2 * delay, self.retry_max_s)
        else:
            return  # stopping: the image stays in the spool for the next start
        self.spool.done(uid)
        log.info("sent results of %s to %s", uid, self.dest)

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                uid = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self._deliver(uid)
            except Exception:  # noqa: BLE001 - the worker must outlive any one image
                log.exception("delivering %s failed; it stays in the spool", uid)
                self._stop.wait(self.retry_s)
            finally:
                if not self._stop.is_set():
                    with self._lock:
                        self._waiting.discard(uid)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Resume the spool, start the worker and listen (returns at once)."""
        pending = self.spool.pending()
        with self._lock:
            self._waiting.update(pending)
        for uid in pending:
            self._queue.put(uid)
        if pending:
            log.info("resuming %d spooled images", len(pending))
        self._worker = threading.Thread(target=self._work, name="cascade-worker", daemon=True)
        self._worker.start()
        ae = AE(ae_title=self.ae_title)
        for cls in IMAGE_SOP_CLASSES:
            ae.add_supported_context(cls, AllTransferSyntaxes)
        ae.add_supported_context(Verification)
        ae.maximum_pdu_size = 0  # no limit: mammograms are tens of MB
        if self.allowed:
            ae.require_calling_aet = self.allowed
        handlers = [(evt.EVT_C_ECHO, self._on_echo), (evt.EVT_C_STORE, self._on_store)]
        self._server = ae.start_server((self.host, self.port), block=False, evt_handlers=handlers,
                                       ssl_context=self.ssl_context)
        log.info("listening as %s on %s:%d%s; results to %s", self.ae_title, self.host, self.port,
                 " (TLS)" if self.ssl_context else "", self.dest)

    def stop(self) -> None:
        """Stop listening and stop the worker (undelivered images stay in the spool)."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
        if self._worker is not None:
            self._worker.join(timeout=30)

    def serve_forever(self) -> None:
        """:meth:`start`, then wait for SIGINT/SIGTERM, then :meth:`stop`."""
        import signal

        self.start()
        done = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: done.set())
        done.wait()
        self.stop()
