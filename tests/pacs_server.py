"""A real Orthanc PACS for the DICOMweb tests (Debian packages ``orthanc`` and ``orthanc-dicomweb``).

:func:`orthanc` starts ``Orthanc`` on a free loopback port with a temporary storage folder and a
generated JSON configuration: the DICOMweb plugin on (``/dicom-web/``), HTTP authentication on with
one test user, no DICOM port reachable from outside (loopback only), optionally a Lua filter that
refuses every incoming Segmentation (a PACS that rejects the upload).  :func:`https_qido` is a
stand-in HTTPS server with a self-signed certificate for the TLS checks.  It waits until the server
answers and stops it afterwards.  Without the packages the test is skipped locally and fails in CI
(the ``require`` fixture of tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: where the Debian package orthanc-dicomweb puts the plugin (a link to /usr/lib/orthanc/libOrthancDicomWeb.so.*)
PLUGIN_PATHS = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc/libOrthancDicomWeb.so")
USER, PASSWORD = "orbitseg-test", "s3cret-for-tests"
#: Orthanc's Lua hook: refuse every Segmentation sent to it (the STOW-RS answer then lists it as failed)
REFUSE_SEG_LUA = """
function ReceivedInstanceFilter(dicom, origin, info)
   if dicom.Modality == 'SEG' then
      return false
   end
   return true
end
"""


@dataclass(frozen=True)
class Orthanc:
    """A running test Orthanc: ``url`` is its DICOMweb root; ``rest`` its REST API root."""

    url: str
    rest: str
    user: str
    password: str
    storage: Path
    log: Path
    ca: Path | None = None  # the self-signed certificate of a TLS Orthanc (its CA bundle)

    @property
    def verify(self):
        return str(self.ca) if self.ca else True

    def get(self, path: str):
        """JSON answer of Orthanc's REST API at ``path`` (e.g. ``/statistics``)."""
        import requests

        r = requests.get(self.rest + path, auth=(self.user, self.password), timeout=30, verify=self.verify)
        r.raise_for_status()
        return r.json()

    def upload(self, files) -> None:
        """Store DICOM files through Orthanc's REST API (not through orbitseg)."""
        import requests

        for f in files:
            r = requests.post(self.rest + "/instances", data=Path(f).read_bytes(), auth=(self.user, self.password),
                              timeout=30, verify=self.verify)
            r.raise_for_status()

    def instances(self) -> int:
        return int(self.get("/statistics")["CountInstances"])


def executable() -> str | None:
    return shutil.which("Orthanc") or next((p for p in ("/usr/sbin/Orthanc",) if Path(p).is_file()), None)


def plugin() -> str | None:
    return next((p for p in PLUGIN_PATHS if Path(p).exists()), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def self_signed_certificate(folder: Path, require) -> tuple[Path, Path]:
    """(certificate, key) for 127.0.0.1, made with the openssl command (Debian ``openssl``)."""
    exe = shutil.which("openssl")
    require(exe is not None, "the openssl command is not installed (Debian: apt-get install -y openssl)")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run([exe, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@contextlib.contextmanager
def https_qido(folder: Path, require) -> Iterator[tuple[str, Path]]:
    """A loopback HTTPS server with a self-signed certificate answering every GET with an empty DICOM JSON
    list (a QIDO-RS search that finds nothing): yields (its DICOMweb URL, the certificate to trust)."""
    import http.server
    import ssl
    import threading

    cert, key = self_signed_certificate(folder, require)

    class Empty(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server name
            body = b"[]"
            self.send_response(200)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Empty)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/dicom-web", cert
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def orthanc(folder: Path, require, *, refuse_seg: bool = False, timeout: float = 30.0) -> Iterator[Orthanc]:
    """Start Orthanc in ``folder`` (config, storage, log), yield it, stop it.  (Not over HTTPS: Debian 12's
    Orthanc 1.10 drops the connection at the first TLS request; :func:`https_qido` serves the TLS tests.)"""
    import requests

    exe, so = executable(), plugin()
    require(exe is not None, "Orthanc is not installed (Debian: apt-get install -y orthanc orthanc-dicomweb)")
    require(so is not None, "the Orthanc DICOMweb plugin is not installed (Debian: apt-get install -y orthanc-dicomweb)")
    folder.mkdir(parents=True, exist_ok=True)
    port, dicom_port = free_port(), free_port()
    config = {
        "Name": "orbitseg-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "StorageCompression": False,
        "HttpPort": port,
        "DicomPort": dicom_port,
        "DicomAet": "ORBITSEGTEST",
        "RemoteAccessAllowed": False,  # loopback only
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [so],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False, "Ssl": False},
        "HttpDescribeErrors": True,
        "ConcurrentJobs": 1,
        "HttpThreadsCount": 4,
        "LuaScripts": [],
    }
    if refuse_seg:
        lua = folder / "refuse_seg.lua"
        lua.write_text(REFUSE_SEG_LUA)
        config["LuaScripts"] = [str(lua)]
    ca = None
    cfg = folder / "orthanc.json"
    cfg.write_text(json.dumps(config, indent=1))
    log = folder / "orthanc.log"
    rest = f"http://127.0.0.1:{port}"
    verify = str(ca) if ca else True
    with open(log, "wb") as out:
        proc = subprocess.Popen([exe, str(cfg)], stdout=out, stderr=subprocess.STDOUT, cwd=folder)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {proc.returncode} at start:\n{log.read_text()[-3000:]}")
            try:
                if requests.get(rest + "/system", auth=(USER, PASSWORD), timeout=2, verify=verify).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not answer within {timeout:g} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        plugins = requests.get(rest + "/plugins", auth=(USER, PASSWORD), timeout=5, verify=verify).json()
        assert "dicom-web" in plugins, f"the DICOMweb plugin did not load: {plugins}"
        yield Orthanc(rest + "/dicom-web", rest, USER, PASSWORD, folder / "storage", log, ca)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
