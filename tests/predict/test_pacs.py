"""Straight from and back to a PACS (issue 22) against a real Orthanc with its DICOMweb plugin
(tests/pacs_server.py; Debian ``orthanc`` + ``orthanc-dicomweb``, HTTP authentication on).

A synthetic study - a small patient's head CT and an MR series beside it - is uploaded; ``orbitseg pacs``
(the library function and the command) fetches the CT over DICOMweb, segments it with the shipped
model and stores the DICOM-SEG back.  The SEG is then found with plain dicomweb-client calls (QIDO-RS
for modality SEG, WADO-RS), read against the source series and compared with the NIfTI that
``orbitseg predict`` writes for the same series: identical voxels.  The fixed UIDs make a rerun store
nothing (Orthanc's instance count) and make ``predict --format dicom-seg`` write the very object the
PACS holds.  Errors: a study without CT, an unreachable server, refused credentials, a refused upload,
credentials in a URL or in a file others can read.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from orbitseg.cli import main
from orbitseg.errors import InputError
from orbitseg.io.dicomseg import read_dicom_seg
from orbitseg.io.dicomweb import (ENV_CONFIG, ENV_PASSWORD, ENV_TOKEN, ENV_USER, Credentials, DicomWeb, DicomWebError,
                                  credentials_from_env)
from orbitseg.io.read import read_label, read_scan
from orbitseg.io.write import write_dicom_series
from orbitseg.predict.pacs import segment_study
from orbitseg.predict.run import dicom_output_uids, dicom_uid_key
from orbitseg.predict.segmenter import Segmenter
from dicom_cases import patient
from pacs_server import orthanc

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning:highdicom"), pytest.mark.slow]
#: the engine of every segmentation here (``auto`` would measure both engines first)
ENGINE = "torch"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def _as_mr(files, folder, *, study_uid: str | None = None, seed: str) -> list:
    """Copies of CT slice files turned into an MR series (other series, instance UIDs; ``study_uid`` to
    move them to another study)."""
    folder.mkdir(parents=True)
    series = generate_uid(entropy_srcs=[seed, "series"])
    out = []
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        sop = generate_uid(entropy_srcs=[seed, str(k)])
        ds.Modality, ds.SOPClassUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = "MR", MR_IMAGE_STORAGE, series, sop
        ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = MR_IMAGE_STORAGE, sop
        ds.SeriesNumber, ds.SeriesDescription = 2, "T1 orbits"
        if study_uid is not None:
            ds.StudyInstanceUID = study_uid
        ds.save_as(folder / f.name, enforce_file_format=True)
        out.append(folder / f.name)
    return out


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A head CT series and an MR series of one study, and an MR-only study: dict of folders and UIDs."""
    root = tmp_path_factory.mktemp("pacs_study")
    ct, _ = patient("identity")
    ct_dir = write_dicom_series(ct, root / "ct", patient_id="pacs1", series_uid="orbitseg-pacs-test-ct")
    ct_files = sorted(ct_dir.iterdir())
    mr_files = _as_mr(ct_files[:4], root / "mr", seed="orbitseg-pacs-test-mr")
    mr_only = generate_uid(entropy_srcs=["orbitseg-pacs-test-mr-only"])
    mr_only_files = _as_mr(ct_files[:3], root / "mr_only", study_uid=mr_only, seed="orbitseg-pacs-test-mr-only")
    head = pydicom.dcmread(ct_files[0])
    return {"ct_dir": ct_dir, "files": ct_files + mr_files + mr_only_files, "study": str(head.StudyInstanceUID),
            "ct_series": str(head.SeriesInstanceUID), "mr_series": str(pydicom.dcmread(mr_files[0]).SeriesInstanceUID),
            "mr_only_study": mr_only}


@pytest.fixture(scope="module")
def pacs(study, tmp_path_factory, require):
    """A running Orthanc holding the study (nothing else)."""
    with orthanc(tmp_path_factory.mktemp("orthanc"), require) as server:
        server.upload(study["files"])
        yield server


@pytest.fixture
def login(pacs, monkeypatch):
    """The test user's credentials in the environment, as a user would set them."""
    monkeypatch.setenv(ENV_USER, pacs.user)
    monkeypatch.setenv(ENV_PASSWORD, pacs.password)
    monkeypatch.delenv(ENV_TOKEN, raising=False)
    monkeypatch.delenv(ENV_CONFIG, raising=False)


def _segs_in_pacs(pacs, study_uid: str) -> list[dict]:
    """The study's SEG instances, found with dicomweb-client alone (not through orbitseg)."""
    from dicomweb_client import DICOMwebClient
    from dicomweb_client.session_utils import create_session_from_user_pass

    client = DICOMwebClient(pacs.url, session=create_session_from_user_pass(pacs.user, pacs.password))
    return client.search_for_instances(study_uid, search_filters={"Modality": "SEG"}), client


def test_pacs_stores_a_seg_identical_to_predict_and_a_rerun_stores_nothing(pacs, study, login, tmp_path, capsys):
    before = pacs.instances()
    # the command, credentials from the environment: every study with a CT (the MR-only study is not one)
    assert main(["pacs", pacs.url, "--new", "--since", "19990101", "--engine", ENGINE]) == 0
    text = capsys.readouterr().out
    assert "1 study with a CT" in text and f"CT series {study['ct_series']}" in text, text
    assert f"not retrieved: MR series {study['mr_series']}" in text and "stored (STOW-RS)" in text, text
    assert pacs.instances() == before + 1

    # the SEG as any DICOMweb client finds it: QIDO-RS for modality SEG, WADO-RS retrieve
    found, client = _segs_in_pacs(pacs, study["study"])
    assert len(found) == 1
    sop = found[0]["00080018"]["Value"][0]
    series = found[0]["0020000E"]["Value"][0]
    ds = client.retrieve_instance(study["study"], series, sop)
    assert [str(it.SeriesInstanceUID) for it in ds.ReferencedSeriesSequence] == [study["ct_series"]]
    seg_file = tmp_path / "from_pacs.seg.dcm"
    ds.save_as(seg_file, enforce_file_format=True)

    # orbitseg predict on the same series: its NIfTI has the same voxels, its DICOM-SEG the same UIDs
    out = tmp_path / "predict"
    assert main(["predict", str(study["ct_dir"]), str(out), "--engine", ENGINE, "--format", ".nii.gz",
                 "dicom-seg"]) == 0
    scan = read_scan(study["ct_dir"])
    nifti = read_label(out / "ct.nii.gz", reference=scan)
    assert nifti.array.any()
    np.testing.assert_array_equal(read_dicom_seg(seg_file, reference=scan).array, nifti.array)
    local = pydicom.dcmread(out / "ct.seg.dcm", stop_before_pixels=True)
    assert (str(local.SeriesInstanceUID), str(local.SOPInstanceUID)) == (series, sop)
    # and the same quality flags (anatomy, fold disagreement, acquisition) as predict records for it
    import json

    from orbitseg.evaluate.quality import flags_summary

    recorded = json.loads((out / "prediction.json").read_text())["cases"]["ct"]["quality"]
    assert f"quality: {flags_summary(recorded)}" in text, text
    assert all(f"{f['side']}: {f['message']}" in text for f in recorded)
    from orbitseg.evaluate.quality import QUALITY_CHECKS

    # four networks and a model folder with its training acquisition: every check made, none said missing
    assert json.loads((out / "prediction.json").read_text())["cases"]["ct"]["quality_checks"] == list(QUALITY_CHECKS)
    assert "not checked" not in text, text

    # a rerun (the library function) finds the SEG before fetching anything: nothing sent, same volumes
    lines = []
    result = segment_study(pacs.url, study["study"], engine=ENGINE, log=lines.append)
    assert not result.stored and (result.seg_series_uid, result.seg_sop_uid) == (series, sop)
    assert not any("retrieving" in ln for ln in lines) and "already stored" in result.describe()
    assert result.flags is None and "quality:" not in result.describe()  # no scan fetched: nothing checked
    assert [s["uid"] for s in result.skipped] == [study["mr_series"], series]  # the MR, our SEG
    from orbitseg.evaluate.measure import orbit_measurements

    np.testing.assert_allclose([r["globe_ml"] for r in result.measurements[:2]],
                               [r["globe_ml"] for r in orbit_measurements(nifti)[:2]], rtol=1e-6)
    assert pacs.instances() == before + 1
    assert len(_segs_in_pacs(pacs, study["study"])[0]) == 1


def test_other_settings_give_other_uids(pacs, study):
    """Fixed UIDs differ with the model's settings (here --mirror) and the source series; the same settings
    give the same ones (a second Segmenter, loaded afresh)."""
    a = Segmenter.load(None, engine=ENGINE, log=lambda _: None)
    b = Segmenter.load(None, engine=ENGINE, log=lambda _: None)
    m = Segmenter.load(None, engine=ENGINE, mirror=True, log=lambda _: None)
    same = dicom_output_uids(study["ct_series"], dicom_uid_key(a), "dicom-seg")
    assert same == dicom_output_uids(study["ct_series"], dicom_uid_key(b), "dicom-seg")
    others = [dicom_output_uids(study["ct_series"], dicom_uid_key(m), "dicom-seg"),
              dicom_output_uids(study["mr_series"], dicom_uid_key(a), "dicom-seg"),
              dicom_output_uids(study["ct_series"], dicom_uid_key(a), "rtstruct")]
    uids = {u for pair in [same, *others] for u in pair}
    assert len(uids) == 8  # all different, series and instance UIDs too
    assert all(len(u) <= 64 and u.replace(".", "").isdigit() for u in uids)


def test_a_study_without_ct_is_refused_naming_it(pacs, study, tmp_path, monkeypatch, capsys):
    """Credentials from a configuration file readable by its owner alone."""
    config = tmp_path / "dicomweb.json"
    config.write_text(json.dumps({"user": pacs.user, "password": pacs.password}))
    config.chmod(0o600)
    for var in (ENV_USER, ENV_PASSWORD, ENV_TOKEN, ENV_CONFIG):
        monkeypatch.delenv(var, raising=False)
    rc = main(["pacs", pacs.url, "--study", study["mr_only_study"], "--config", str(config)])
    err = capsys.readouterr().err
    assert rc == 1 and "refused" in err and "holds no CT series" in err and study["mr_only_study"] in err, err
    assert "MR series" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    config.chmod(0o644)
    assert main(["pacs", pacs.url, "--study", study["mr_only_study"], "--config", str(config)]) == 2
    assert "other users may read it" in capsys.readouterr().err
    with pytest.raises(InputError, match="is not a DICOM UID"):
        segment_study(pacs.url, "1.2.03", credentials=Credentials(pacs.user, pacs.password))
    with pytest.raises(InputError, match="no such study"):
        segment_study(pacs.url, "1.2.3.4.5", credentials=Credentials(pacs.user, pacs.password))


def test_unreachable_server_and_refused_credentials_are_one_line_errors(pacs, study, monkeypatch, capsys):
    from pacs_server import free_port

    monkeypatch.setenv(ENV_USER, pacs.user)
    monkeypatch.setenv(ENV_PASSWORD, pacs.password)
    rc = main(["pacs", f"http://127.0.0.1:{free_port()}/dicom-web", "--study", study["study"]])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot reach the server" in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1
    monkeypatch.setenv(ENV_PASSWORD, "not-the-password")
    rc = main(["pacs", pacs.url, "--study", study["study"]])
    err = capsys.readouterr().err
    assert rc == 2 and "refused the credentials given (HTTP 401)" in err and "not-the-password" not in err, err
    monkeypatch.delenv(ENV_USER)
    monkeypatch.delenv(ENV_PASSWORD)
    assert main(["pacs", pacs.url, "--study", study["study"]]) == 2
    assert "refused no credentials (HTTP 401)" in capsys.readouterr().err
    with pytest.raises(DicomWebError, match="credentials do not go in the URL") as e:
        DicomWeb(pacs.url.replace("http://", f"http://{pacs.user}:{pacs.password}@"))
    assert pacs.password not in str(e.value)


def test_a_refused_upload_is_an_error_and_nothing_is_stored(study, tiny_run, tmp_path_factory, require):
    """An Orthanc whose filter refuses every Segmentation (Orthanc 1.10 still answers the STOW-RS with
    "stored": only looking for it afterwards shows it was dropped)."""
    with orthanc(tmp_path_factory.mktemp("orthanc_refusing"), require, refuse_seg=True) as server:
        server.upload(study["files"])
        before = server.instances()
        with pytest.raises(DicomWebError, match="did not keep") as e:
            segment_study(server.url, study["study"], model=tiny_run, engine=ENGINE,
                          credentials=Credentials(server.user, server.password))
        assert server.url in str(e.value)
        assert server.instances() == before


def test_credentials_come_from_the_environment_before_the_file(tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"user": "file-user", "password": "file-pw", "ca_bundle": str(config)}))
    os.chmod(config, 0o600)
    env = {ENV_CONFIG: str(config), ENV_USER: "env-user", ENV_PASSWORD: "env-pw"}
    c = credentials_from_env(environ=env)
    assert (c.user, c.password, c.ca_bundle) == ("env-user", "env-pw", str(config))
    assert "env-pw" not in repr(c)
    assert credentials_from_env(environ={ENV_CONFIG: str(config)}).user == "file-user"
    assert credentials_from_env(environ={ENV_TOKEN: "t"}).token == "t"
    with pytest.raises(InputError, match="without a password"):
        credentials_from_env(environ={ENV_USER: "u"})
    shutil.copy(config, tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text("{not json")
    os.chmod(tmp_path / "bad.json", 0o600)
    with pytest.raises(InputError, match="not a JSON"):
        credentials_from_env(tmp_path / "bad.json", environ={})


def test_a_stow_answer_listing_failures_is_an_error_naming_the_reason(tmp_path, monkeypatch):
    """The STOW-RS answer's Failed SOP Sequence (a server that refuses and says so) becomes one line with
    the failure reason; a bearer token goes in the Authorization header."""
    from pydicom.dataset import Dataset, FileMetaDataset

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = "1.2.3.4"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3", "1.2.3.5"
    path = tmp_path / "x.dcm"
    ds.save_as(path, enforce_file_format=True)
    server = DicomWeb("https://pacs.invalid/dicom-web", credentials=Credentials(token="tok"))
    assert server.client._session.headers["Authorization"] == "Bearer tok"
    assert server.client._session.verify is True
    failed = Dataset()
    item = Dataset()
    item.ReferencedSOPInstanceUID, item.FailureReason = "1.2.3.4", 0xA700
    failed.FailedSOPSequence = [item]
    monkeypatch.setattr(server.client, "store_instances", lambda *a, **k: failed)
    with pytest.raises(DicomWebError, match=r"refused to store 1\.2\.3\.4 \(failure reason 0xA700, out of resources\)"):
        server.store([path])


def test_qido_pages_end_when_a_server_ignores_the_offset(monkeypatch):
    """Orthanc 1.10 answers the same page whatever the offset when ModalitiesInStudy is given: the search
    stops at the first page with nothing new (with a warning) instead of asking forever; a server that
    pages properly is read to the end."""
    import orbitseg.io.dicomweb as dw

    monkeypatch.setattr(dw, "_PAGE", 2)
    items = [{"0020000D": {"Value": [f"1.2.{k}"]}} for k in range(5)]
    server = DicomWeb("http://127.0.0.1:9/dicom-web", credentials=Credentials())
    paged = lambda offset, limit: items[offset:offset + limit]  # noqa: E731
    assert server._search("listing", paged) == items
    asked = []

    def ignoring(offset, limit):
        asked.append(offset)
        return items[:limit]

    with pytest.warns(UserWarning, match="ignores the offset"):
        assert server._search("listing", ignoring) == items[:2]
    assert asked == [0, 2]


def test_tls_is_verified_and_a_ca_bundle_makes_a_private_certificate_trusted(tmp_path, capsys, monkeypatch, require):
    """An HTTPS server with a self-signed certificate: refused as untrusted by default (verification stays
    on), trusted with --ca-bundle (the empty answer then means no such study)."""
    from pacs_server import https_qido

    import requests

    for var in (ENV_USER, ENV_PASSWORD, ENV_TOKEN, ENV_CONFIG):
        monkeypatch.delenv(var, raising=False)
    # as on many machines: requests would let this replace --ca-bundle on every request
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", requests.certs.where())
    with https_qido(tmp_path, require) as (url, cert):
        assert main(["pacs", url, "--study", "1.2.3.4"]) == 2
        err = capsys.readouterr().err
        assert "TLS certificate not trusted" in err and "--ca-bundle" in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1
        assert main(["pacs", url, "--study", "1.2.3.4", "--ca-bundle", str(cert)]) == 1
        assert "no such study" in capsys.readouterr().err


def test_two_ct_volumes_in_a_study_are_named_and_one_must_be_chosen(study, tmp_path, tmp_path_factory, require):
    """The series choice is the local reader's: two equally thin CT volumes that no kernel tells apart are listed
    and refused until --series names one; nothing is segmented or stored.  (A soft-tissue series beside a bone
    kernel's twin is read without asking: tests/io/test_dicom_variants.py.)"""
    second = tmp_path / "ct2"
    second.mkdir()
    series = generate_uid(entropy_srcs=["orbitseg-pacs-test-ct2"])
    for k, f in enumerate(sorted(study["ct_dir"].iterdir())):
        ds = pydicom.dcmread(f)
        sop = generate_uid(entropy_srcs=["orbitseg-pacs-test-ct2", str(k)])
        ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.file_meta.MediaStorageSOPInstanceUID = series, sop, sop
        ds.SeriesDescription, ds.SeriesNumber = "second reconstruction", 3
        ds.save_as(second / f.name, enforce_file_format=True)
    with orthanc(tmp_path_factory.mktemp("orthanc_two_ct"), require) as server:
        server.upload([*sorted(study["ct_dir"].iterdir()), *sorted(second.iterdir())])
        before = server.instances()
        with pytest.raises(InputError, match="holds several CT series; choose one with --series") as e:
            segment_study(server.url, study["study"], engine=ENGINE, credentials=Credentials(server.user, server.password))
        assert study["ct_series"] in str(e.value) and series in str(e.value) and "second reconstruction" in str(e.value)
        assert server.instances() == before


def test_pacs_result_names_the_checks_not_made():
    """One network (``--folds 0``, a full model) cannot check fold disagreement: the printed result says so
    instead of an unqualified "ok"."""
    from orbitseg.evaluate.quality import QUALITY_CHECKS
    from orbitseg.predict.pacs import PacsResult

    result = PacsResult("http://pacs", "1.2", "1.2.3", "head", 100, "1.2.4", "1.2.5", stored=True, flags=[],
                        checks=[c for c in QUALITY_CHECKS if c != "fold_disagreement"])
    assert "quality: ok (not checked: fold disagreement)" in result.describe()
    result.checks = list(QUALITY_CHECKS)
    assert "quality: ok\n" in result.describe() + "\n" and "not checked" not in result.describe()
