"""DICOMweb transport: list a study's series (QIDO-RS), fetch a series (WADO-RS), store objects (STOW-RS).

A thin layer over the maintained ``dicomweb-client`` package that turns every failure into one
clear line (:class:`DicomWebError`, naming the server): an unreachable server, refused credentials,
an answer that is not DICOMweb, an upload the server refuses.  It knows no pipeline;
:mod:`orbitseg.predict.pacs` is the fetch-segment-store workflow.

Credentials never come from the command line: the environment (:data:`ENV_USER` and
:data:`ENV_PASSWORD` for HTTP basic authentication, or :data:`ENV_TOKEN` for a bearer token) wins over
a JSON configuration file (``{"user": ..., "password": ...}`` or ``{"token": ...}``, optionally
``"ca_bundle"``) named by ``config=`` or :data:`ENV_CONFIG`; the file must not be readable by other
users.  A URL with a user or password in it is refused.  TLS certificates are verified (the system's
CA bundle, or ``ca_bundle=``); there is no switch to turn verification off.
"""

from __future__ import annotations

import json
import os
import stat
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests

from orbitseg.errors import InputError, OrbitsegError

__all__ = ["DicomWebError", "Credentials", "DicomWeb", "credentials_from_env", "ENV_USER", "ENV_PASSWORD",
           "ENV_TOKEN", "ENV_CONFIG", "SEG_MODALITY"]

ENV_USER, ENV_PASSWORD, ENV_TOKEN = "ORBITSEG_DICOMWEB_USER", "ORBITSEG_DICOMWEB_PASSWORD", "ORBITSEG_DICOMWEB_TOKEN"
#: a JSON file with ``user`` / ``password`` or ``token``, and optionally ``ca_bundle``
ENV_CONFIG = "ORBITSEG_DICOMWEB_CONFIG"
SEG_MODALITY = "SEG"
#: (connect, read) seconds: a server that does not answer is named quickly, a large series still arrives
TIMEOUT = (10.0, 300.0)


class DicomWebError(OrbitsegError):
    """A DICOMweb server cannot be reached, refuses the request, or answers something unusable."""

    def __init__(self, url: str, problem: str):
        self.url, self.problem = url, problem
        super().__init__(f"{url}: {problem}")


@dataclass(frozen=True)
class Credentials:
    """How to authenticate: HTTP basic (``user`` + ``password``) or a bearer ``token``; ``ca_bundle`` is
    the CA certificates (PEM) to verify the server with instead of the system's."""

    user: str | None = None
    password: str | None = None
    token: str | None = None
    ca_bundle: str | None = None

    def __repr__(self) -> str:  # never print a secret
        how = "token" if self.token else f"user {self.user!r}" if self.user else "anonymous"
        return f"Credentials({how}, ca_bundle={self.ca_bundle!r})"


def credentials_from_env(config: str | Path | None = None, environ: dict | None = None) -> Credentials:
    """Credentials from the environment and / or a configuration file (see the module docstring).

    Raises
    ------
    InputError : the configuration file is missing, not JSON, readable by other users, or holds a user
        without a password
    """
    env = os.environ if environ is None else environ
    values: dict = {}
    config = config or env.get(ENV_CONFIG) or None
    if config:
        values = _read_config(Path(config))
    user = env.get(ENV_USER) or values.get("user")
    password = env.get(ENV_PASSWORD) or values.get("password")
    token = env.get(ENV_TOKEN) or values.get("token")
    ca_bundle = values.get("ca_bundle")
    if user and not password:
        raise InputError(Path(config) if config else None,
                         f"a DICOMweb user ({user!r}) is given without a password: set {ENV_PASSWORD} or "
                         "\"password\" in the configuration file")
    if ca_bundle and not Path(ca_bundle).is_file():
        raise InputError(Path(ca_bundle), "the CA bundle named in the DICOMweb configuration does not exist")
    return Credentials(user or None, password or None, token or None, ca_bundle or None)


def _read_config(path: Path) -> dict:
    if not path.is_file():
        raise InputError(path, "the DICOMweb configuration file does not exist")
    if os.name == "posix" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InputError(path, "holds DICOMweb credentials but other users may read it; chmod 600 it")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(path, f"is not a JSON DICOMweb configuration ({exc})") from None
    if not isinstance(values, dict) or set(values) - {"user", "password", "token", "ca_bundle"}:
        raise InputError(path, "a DICOMweb configuration is a JSON object with the keys user, password, token, "
                               "ca_bundle")
    return values


#: QIDO-RS page size, and how many pages at most (a server that pages wrongly cannot keep us asking)
_PAGE, _MAX_PAGES = 500, 200


def _key(item: dict) -> tuple:
    """What tells matches apart: study, series and instance UIDs."""
    return tuple(str(_value(item, tag, "")) for tag in ("0020000D", "0020000E", "00080018"))


def _value(item: dict, tag: str, default=None):
    """First value of ``tag`` (e.g. ``"0020000E"``) in a DICOM JSON item."""
    values = (item.get(tag) or {}).get("Value") or []
    return values[0] if values else default


class DicomWeb:
    """A DICOMweb server at ``url`` (its root, e.g. ``https://pacs.example.org/dicom-web``).

    Parameters
    ----------
    url : http(s) URL without a user or password in it
    credentials : :func:`credentials_from_env` by default
    ca_bundle : CA certificates (PEM) to verify the server's TLS certificate (default: the credentials'
        ``ca_bundle``, else the system's)
    """

    def __init__(self, url: str, *, credentials: Credentials | None = None, ca_bundle: str | Path | None = None):
        from dicomweb_client import DICOMwebClient

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DicomWebError(url, "is not an http(s) URL of a DICOMweb server")
        if parts.username or parts.password:
            raise DicomWebError(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")).geturl(),
                                f"credentials do not go in the URL (it is seen in process lists and logs): set "
                                f"{ENV_USER} / {ENV_PASSWORD} or {ENV_TOKEN}, or a configuration file")
        self.url = url.rstrip("/")
        creds = credentials if credentials is not None else credentials_from_env()
        session = _Session()
        session.verify = True
        bundle = ca_bundle or creds.ca_bundle
        if bundle:
            if not Path(bundle).is_file():
                raise InputError(Path(bundle), "the CA bundle does not exist")
            session.verify = str(bundle)
        headers = {}
        if creds.token:
            headers["Authorization"] = f"Bearer {creds.token}"
        elif creds.user:
            session.auth = (creds.user, creds.password or "")
        self.authenticated = bool(creds.token or creds.user)
        try:
            self.client = DICOMwebClient(self.url, session=session, headers=headers or None, timeout=TIMEOUT)
        except ValueError as exc:
            raise DicomWebError(url, f"is not a usable DICOMweb URL ({exc})") from None
        # a busy server (429, 503...) is asked again twice, quickly; an unreachable one is named at once
        self.client.set_http_retry_params(retry=True, max_attempts=3, wait_exponential_multiplier=200)

    # ---- errors ---------------------------------------------------------------------------------
    def _fail(self, exc: BaseException, doing: str) -> DicomWebError:
        if isinstance(exc, requests.exceptions.SSLError):
            return DicomWebError(self.url, f"TLS certificate not trusted while {doing} ({_short(exc)}); give the "
                                           "server's CA certificates with --ca-bundle (verification stays on)")
        if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            return DicomWebError(self.url, f"cannot reach the server while {doing} ({_short(exc)})")
        if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
            code = exc.response.status_code
            if code in (401, 403):
                who = "the credentials given" if self.authenticated else "no credentials"
                return DicomWebError(self.url, f"refused {who} (HTTP {code}) while {doing}; set {ENV_USER} / "
                                               f"{ENV_PASSWORD} or {ENV_TOKEN}, or a configuration file")
            return DicomWebError(self.url, f"answered HTTP {code} {exc.response.reason} while {doing}"
                                           f"{_body(exc.response)}")
        if isinstance(exc, requests.exceptions.RequestException):
            return DicomWebError(self.url, f"request failed while {doing} ({_short(exc)})")
        return DicomWebError(self.url, f"gave an answer that is not DICOMweb while {doing} ({_short(exc)})")

    def _call(self, doing: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (requests.exceptions.RequestException, ValueError, KeyError, TypeError) as exc:
            raise self._fail(exc, doing) from None
        except Exception as exc:  # noqa: BLE001 - retrying re-raises what the session raised, wrapped or not
            cause = exc.__cause__ or exc
            raise self._fail(cause, doing) from None

    # ---- QIDO-RS --------------------------------------------------------------------------------
    def _search(self, doing: str, fn, *args, **kwargs) -> list[dict]:
        """Every match of a QIDO-RS search, page by page (``limit`` / ``offset``).  A server that ignores the
        offset (Orthanc 1.10 does with ``ModalitiesInStudy``) answers the same page again: dicomweb-client's own
        ``get_remaining`` then asks forever; here a page with nothing new ends the search."""
        out, seen, offset = [], set(), 0
        for _ in range(_MAX_PAGES):
            items = self._call(doing, fn, *args, offset=offset, limit=_PAGE, **kwargs) or []
            new = [it for it in items if _key(it) not in seen]
            seen.update(_key(it) for it in new)
            out += new
            if len(items) < _PAGE:
                return out
            if not new:
                warnings.warn(f"{self.url} ignores the offset of its QIDO-RS answers while {doing}: only the "
                              f"first {len(out)} matches are used", stacklevel=3)
                return out
            offset += len(items)
        return out

    def series(self, study_uid: str) -> list[dict]:
        """The series of a study: dicts with ``uid``, ``modality``, ``description``, ``number``,
        ``instances`` (the server's count, None when it gives none), sorted by series number."""
        items = self._search(f"listing the series of study {study_uid} (QIDO-RS)", self.client.search_for_series,
                             study_uid, fields=["SeriesDescription", "NumberOfSeriesRelatedInstances"])
        out = []
        for it in items or []:
            number = _value(it, "00200011")
            count = _value(it, "00201209")
            out.append({"uid": str(_value(it, "0020000E", "")), "modality": str(_value(it, "00080060", "") or ""),
                        "description": str(_value(it, "0008103E", "") or ""),
                        "number": None if number in (None, "") else int(number),
                        "instances": None if count in (None, "") else int(count)})
        return sorted(out, key=lambda s: (s["number"] is None, s["number"] or 0, s["uid"]))

    def studies(self, *, modality: str | None = None, since: str | None = None) -> list[str]:
        """StudyInstanceUIDs of the studies holding ``modality`` (QIDO-RS ``ModalitiesInStudy``), dated
        ``since`` (YYYYMMDD) or later, oldest first."""
        filters = {}
        if modality:
            filters["ModalitiesInStudy"] = modality
        if since:
            filters["StudyDate"] = f"{since}-"
        items = self._search("listing studies (QIDO-RS)", self.client.search_for_studies,
                             search_filters=filters or None, fields=["StudyDate"])
        found = sorted((str(_value(it, "00080020", "") or ""), str(_value(it, "0020000D", ""))) for it in items or [])
        return [uid for _, uid in found if uid]

    def has_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> bool:
        """Whether the server holds instance ``sop_uid`` of that series (QIDO-RS)."""
        items = self._call(f"looking for instance {sop_uid} (QIDO-RS)", self.client.search_for_instances,
                           study_uid, series_uid, search_filters={"SOPInstanceUID": sop_uid})
        return any(str(_value(it, "00080018", "")) == sop_uid for it in items or [])

    # ---- WADO-RS --------------------------------------------------------------------------------
    def fetch_series(self, study_uid: str, series_uid: str, folder: str | Path) -> list[Path]:
        """Retrieve every instance of a series into ``folder`` (one ``.dcm`` file per instance, named by its
        SOPInstanceUID); the files written."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        out = []
        instances = self._call(f"retrieving series {series_uid} (WADO-RS)", self.client.iter_series,
                               study_uid, series_uid)
        it = iter(instances)
        while True:
            ds = self._call(f"retrieving series {series_uid} (WADO-RS)", next, it, None)
            if ds is None:
                break
            sop = str(ds.get("SOPInstanceUID", "") or len(out))
            path = folder / f"{_safe(sop)}.dcm"
            ds.save_as(path, enforce_file_format=True)
            out.append(path)
        if not out:
            raise DicomWebError(self.url, f"returned no instance of series {series_uid} of study {study_uid}")
        return out

    def retrieve_instance(self, study_uid: str, series_uid: str, sop_uid: str, path: str | Path) -> Path:
        """Retrieve one instance into the file ``path``."""
        ds = self._call(f"retrieving instance {sop_uid} (WADO-RS)", self.client.retrieve_instance,
                        study_uid, series_uid, sop_uid)
        ds.save_as(Path(path), enforce_file_format=True)
        return Path(path)

    # ---- STOW-RS --------------------------------------------------------------------------------
    def store(self, files: Sequence[str | Path] | Iterable[str | Path], study_uid: str | None = None) -> list[str]:
        """Store DICOM files (STOW-RS); the SOPInstanceUIDs stored, each confirmed by QIDO-RS afterwards.

        Raises
        ------
        DicomWebError : the server refuses the request or any of the instances (its reason when it gives one),
            or answers that it stored an instance it then does not list
        """
        import pydicom

        datasets = [pydicom.dcmread(f) for f in files]
        doing = f"storing {len(datasets)} instance(s) (STOW-RS)"
        answer = self._call(doing, self.client.store_instances, datasets, study_uid)
        failed = [(str(it.get("ReferencedSOPInstanceUID", "?")), it.get("FailureReason"))
                  for it in answer.get("FailedSOPSequence", []) or []]
        if failed:
            why = ", ".join(f"{uid} (failure reason {_reason(code)})" for uid, code in failed)
            raise DicomWebError(self.url, f"refused to store {why}")
        stored = [str(it.get("ReferencedSOPInstanceUID", "")) for it in answer.get("ReferencedSOPSequence", []) or []]
        missing = [str(ds.SOPInstanceUID) for ds in datasets if str(ds.SOPInstanceUID) not in stored]
        if missing:
            raise DicomWebError(self.url, f"did not confirm storing {', '.join(missing)} (its STOW-RS answer lists "
                                          f"{len(stored)} stored instance(s))")
        # a server may answer "stored" and drop the object (Orthanc 1.10 does when a filter refuses it): look
        dropped = [str(ds.SOPInstanceUID) for ds in datasets
                   if not self.has_instance(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))]
        if dropped:
            raise DicomWebError(self.url, f"did not keep {', '.join(dropped)}: its STOW-RS answer said stored, but "
                                          "QIDO-RS does not find it (a rule of the server refused it?)")
        return stored


class _Session(requests.Session):
    """A requests Session whose own CA bundle wins over ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` (plain
    requests lets those replace a session's ``verify`` path on every request: --ca-bundle would be ignored
    wherever they are set, as on many servers and on the machine these tests first ran on)."""

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if verify is None and isinstance(self.verify, str):
            settings["verify"] = self.verify
        return settings


def _short(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    # requests' connection errors repeat the pool and object; the last clause is the reason
    if "Errno" in text:
        text = text[text.rfind("[Errno"):].rstrip("'\")]")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _body(response, limit: int = 200) -> str:
    try:
        text = " ".join(response.text.split())
    except Exception:  # noqa: BLE001 - no readable body
        return ""
    return f": {text[:limit]}" if text else ""


#: STOW-RS failure reasons (DICOM PS3.18 table I.2-1 and PS3.4 C.4.2.1.4)
_REASONS = {0x0110: "processing failure", 0x0122: "SOP class not supported", 0xA700: "out of resources",
            0xA900: "data set does not match SOP class", 0xC000: "cannot understand", 0x0124: "not authorized",
            0xA770: "transfer syntax not supported", 0x0111: "duplicate SOP instance"}


def _reason(code) -> str:
    try:
        value = int(code)
    except (TypeError, ValueError):
        return str(code)
    return f"0x{value:04X}" + (f", {_REASONS[value]}" if value in _REASONS else "")


def _safe(uid: str) -> str:
    return "".join(c if c.isalnum() or c in ".-_" else "_" for c in uid)[:120]
