"""FastAPI app of ``orbitseg label``: JSON + raw-bytes API and the static page.

Transfer formats (all little-endian, C order, canonical LPS orientation as
:func:`orbitseg.io.orient.to_canonical` gives it: ``array[k]`` is an axial slice,
rows run anterior -> posterior, columns patient right -> left):

* ``GET  /api/cases/{case}/slice?axis=&index=`` - raw int16 HU of one slice
  (``format=png&level=&width=``: an 8-bit windowed PNG instead)
* ``GET  /api/cases/{case}/label`` - raw uint8 label volume (nz, ny, nx), gzip
  encoded, version token in ``X-Label-Version``
* ``PUT  /api/cases/{case}/label?base=TOKEN`` - the same bytes (gzip allowed)
  back; 409 when the file changed since ``base``
* ``GET  /api/cases/{case}`` - shape, spacing, status, history and ``orbits``: where the orbits are
  (slices to open, region to frame; :meth:`DatasetStore.orbits`)
* ``GET  /api/cases/{case}/measurements`` - per-orbit clinical measurements (volumes, rectus thickness,
  proptosis, ``outside_reference``) of the saved label, or of the last Predict's draft when none is saved
  (``source`` says which; :meth:`DatasetStore.measurements`)
* ``GET  /api/cases/{case}/superpixels?index=&n=`` - uint8 map of superpixel borders (in the orbits,
  not in air, bone or brain)
* ``POST /api/cases/{case}/pencil|smartfill|autocorrect`` - body: raw uint8 mask
  (and strokes) of a slab ``z0..z1``; answer: the new mask slab

Every error is ``{"error": code, "message": text}`` with a text a person can act on.
"""

from __future__ import annotations

import gzip
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from orbitseg.constants import LABEL_COLOURS, LABEL_TITLES, STRUCTURES, WINDOW_PRESETS, label_colour_hex
from orbitseg.app.store import AppError, DatasetStore, OpenScan, measurement_rows
from orbitseg.errors import InputError, OrbitsegError
from orbitseg.preprocess.window import apply_window

if TYPE_CHECKING:
    from orbitseg.preprocess.pipeline import BoxProbabilities

__all__ = ["create_app", "serve", "MAX_BODY_BYTES"]

STATIC = Path(__file__).parent / "static"
#: largest request body accepted (a gzip-compressed label volume is far smaller)
MAX_BODY_BYTES = 64 * 1024 * 1024
#: largest label volume (voxels) a save may decompress to
MAX_VOXELS = 1024 * 1024 * 1024
#: slab depth limit (slices) for 3-D SmartFill / AutoCorrection
MAX_SLAB = 96
#: cases whose network probabilities the server keeps after Predict (see create_app)
PRIOR_CASES = 2


def _err(status: int, code: str, message: str, **extra) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status)


async def _read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, refusing more than ``limit`` bytes even without a Content-Length."""
    n = request.headers.get("content-length")
    if n is not None:
        try:
            if int(n) > limit:
                raise AppError(413, "too_large", f"request body of {int(n)} bytes exceeds the limit of {limit} bytes")
        except ValueError:
            raise AppError(400, "bad_request", "Content-Length is not a number") from None
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise AppError(413, "too_large", f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _gunzip_bounded(data: bytes, expected: int) -> bytes:
    """Decompress gzip ``data`` to exactly ``expected`` bytes (refuses a bomb or a short volume)."""
    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(data, expected + 1)
    except zlib.error as exc:
        raise AppError(400, "bad_body", f"body is not valid gzip data ({exc})") from None
    if len(out) != expected or d.unconsumed_tail:
        raise AppError(413 if len(out) > expected else 422, "bad_size",
                       f"label data decompresses to {'more than ' if len(out) > expected else ''}{len(out)} bytes; "
                       f"the scan needs exactly {expected} (one byte per voxel)")
    return out


def _array_response(a: np.ndarray, *, gzipped: bool = False, **headers) -> Response:
    """The bytes of ``a`` (C order) with its shape in ``X-Shape``; gzip-encoded when ``gzipped``."""
    body = np.ascontiguousarray(a).tobytes()
    h = {"X-Shape": ",".join(str(v) for v in a.shape), "Cache-Control": "no-store"}
    if gzipped:
        body = gzip.compress(body, compresslevel=1, mtime=0)
        h = {"Content-Encoding": "gzip", **h}
    h.update({k: str(v) for k, v in headers.items()})
    return Response(body, media_type="application/octet-stream", headers=h)


def _raw(a: np.ndarray, **headers) -> Response:
    return _array_response(a, **headers)


def _gzip_response(a: np.ndarray, **headers) -> Response:
    return _array_response(a, gzipped=True, **headers)


def _png_gray(img8: np.ndarray) -> bytes:
    """Tiny grayscale PNG encoder (zlib level 1; no imaging library needed)."""
    import struct

    h, w = img8.shape
    raw = np.zeros((h, w + 1), np.uint8)
    raw[:, 1:] = img8

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), 1)) + chunk(b"IEND", b""))


def _int(request: Request, name: str, default: int | None = None, lo: int | None = None, hi: int | None = None) -> int:
    v = request.query_params.get(name)
    if v is None:
        if default is None:
            raise AppError(422, "missing_parameter", f"query parameter {name!r} is required")
        return default
    try:
        x = int(v)
    except ValueError:
        raise AppError(422, "bad_parameter", f"query parameter {name!r} must be an integer, got {v[:40]!r}") from None
    if (lo is not None and x < lo) or (hi is not None and x > hi):
        raise AppError(422, "bad_parameter", f"query parameter {name!r} must be in {lo}..{hi}, got {x}")
    return x


def _float(request: Request, name: str, default: float, *, positive: bool = False) -> float:
    v = request.query_params.get(name)
    if v is None:
        return default
    try:
        x = float(v)
    except ValueError:
        raise AppError(422, "bad_parameter", f"query parameter {name!r} must be a number, got {v[:40]!r}") from None
    if not np.isfinite(x):
        raise AppError(422, "bad_parameter", f"query parameter {name!r} must be finite")
    if positive and x <= 0:
        raise AppError(422, "bad_parameter", f"{name} must be positive")
    return x


def _flag(request: Request, name: str) -> bool:
    """A yes/no query parameter: ``1`` or ``true`` is yes, anything else (or none) no."""
    return request.query_params.get(name) in ("1", "true")


def _labels_param(request: Request) -> tuple[int, ...]:
    v = request.query_params.get("labels", "1,2,3")
    try:
        labs = tuple(sorted({int(x) for x in v.split(",") if x.strip()}))
    except ValueError:
        raise AppError(422, "bad_parameter", f"labels must be a comma-separated list of 1, 2, 3, got {v[:40]!r}") from None
    if not labs or any(lab not in STRUCTURES for lab in labs):
        raise AppError(422, "bad_parameter", f"labels must be a comma-separated list of 1, 2, 3, got {v[:40]!r}")
    return labs


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")


def _host_name(value: str) -> str:
    """Host name of a Host header or an Origin URL, without scheme and port."""
    v = value.split("://", 1)[-1].split("/", 1)[0].lower()
    if v.startswith("["):
        return v.split("]", 1)[0] + "]"
    return v.rsplit(":", 1)[0] if v.count(":") == 1 else v


def _same_origin(origin: str, host: str) -> bool:
    """Whether the Origin header names this server itself: same host name and port as the Host header
    (``null`` and any other port, loopback included, are foreign)."""
    netloc = origin.split("://", 1)[-1].split("/", 1)[0].lower()
    return "://" in origin and netloc == host.lower()


def _prior_header(prior: np.ndarray | None) -> dict:
    """Tells the page whether a tool ran with the network's probabilities."""
    return {"X-Orbitseg-Prior": "none" if prior is None else "network"}


def _zyx_spacing(o: OpenScan) -> tuple[float, float, float]:
    """Voxel size ``(sz, sy, sx)`` in mm of the canonical array (the order :mod:`orbitseg.labeling` takes)."""
    sx, sy, sz = o.canon.geometry.spacing
    return sz, sy, sx


@dataclass(frozen=True)
class _Slab:
    """Slices ``z0..z1-1`` of an open scan and the uint8 layers a tool request sent for them."""

    scan: OpenScan
    z0: int
    z1: int
    layers: np.ndarray  # (n_layers, z1 - z0, ny, nx) uint8, read-only: layer 0 the mask, 1 the strokes

    @property
    def image(self) -> np.ndarray:
        """(nz, ny, nx) HU of the slab."""
        return self.scan.canon.array[self.z0:self.z1]

    @property
    def mask(self) -> np.ndarray:
        return self.layers[0]

    @property
    def strokes(self) -> np.ndarray:
        return self.layers[1]


async def _run_tool(run: Callable[[], np.ndarray], code: str, what: str, **headers) -> Response:
    """Run a labeling algorithm off the event loop; its ValueError becomes a 422 the page shows."""
    from orbitseg.labeling import NoStrokesError

    try:
        out = await run_in_threadpool(run)
    except NoStrokesError as exc:
        raise AppError(422, "no_strokes", str(exc)) from None
    except ValueError as exc:
        raise AppError(422, code, f"{what}: {exc}") from None
    return _raw(out.astype(np.uint8), **headers)


def _quality(segmenter, result, scan) -> tuple[list[dict], str]:
    """The quality flags of a Predict (:func:`orbitseg.evaluate.quality.quality_flags`: anatomy, field of view,
    fold disagreement, acquisition against the model's training range) and their one-line summary."""
    from orbitseg.evaluate.quality import flags_summary, quality_flags
    from orbitseg.predict.segmenter import fold_limits, training_acquisition

    flags = quality_flags(result.labels, scan, agreement=result.fold_agreement,
                          training_acquisition=training_acquisition(segmenter), fold_limits=fold_limits(segmenter))
    return flags, flags_summary(flags)


def create_app(dataset: Path, *, model: Path | None = None, folds: str = "all",
               allowed_hosts: tuple[str, ...] | None = LOOPBACK_NAMES) -> FastAPI:
    """The labeling app for the dataset folder ``dataset`` (nnU-Net layout with dataset.json).

    ``model``: an orbitseg training checkpoint, run or model folder for the Predict button (loaded on first
    use); ``folds``: which of its networks, as ``orbitseg predict --folds`` (``full``: the one network trained on
    every case, a quarter of the ensemble's time).
    ``allowed_hosts``: host names the page may be reached under (Host header; and the Origin of
    requests that change something).  The loopback default stops other web sites from reading
    scans or writing labels through the browser (DNS rebinding, cross-site posts); None allows any.
    """
    store = DatasetStore(Path(dataset))
    app = FastAPI(title="orbitseg label", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store
    model_path = None if model is None else Path(model)
    #: what Predict records as its model: the file or folder, and the networks taken from it when not all
    model_name = None if model_path is None else model_path.name + ("" if folds == "all" else f" --folds {folds}")
    model_state: dict = {"lock": threading.Lock(), "segmenter": None}
    # the network's probabilities of the cases Predict ran on, over the orbits' bounding box of the
    # canonical grid as uint8 (1/255 steps; ~10 MB per case), the last PRIOR_CASES only: SmartFill
    # and AutoCorrection use them as prior / data term on those cases (issue 8)
    priors: OrderedDict[str, BoxProbabilities] = OrderedDict()

    def _prior(case_id: str, z0: int, z1: int) -> np.ndarray | None:
        q = priors.get(case_id)
        return None if q is None else q.region(slice(z0, z1))
    from orbitseg.labeling import (RESOLUTIONS, SuperpixelCache, auto_correct_slab, pencil_click, smart_fill_slab,
                                   soft_tissue, superpixel_borders, visible_borders)

    spx_cache = SuperpixelCache(maxsize=256)

    async def _open(case_id: str) -> OpenScan:
        """The case's scan, opened (or taken from the store's cache) off the event loop."""
        return await run_in_threadpool(store.open, case_id)

    # ---- errors: always JSON with an actionable message -------------------------------
    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError):
        return _err(exc.status, exc.code, exc.message, **exc.extra)

    @app.exception_handler(OrbitsegError)
    async def _orbitseg_error(request: Request, exc: OrbitsegError):
        return _err(422, "input_error", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        msg = {404: f"nothing at {request.url.path}; the page is at / and the API under /api",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return _err(exc.status_code, "http_error", msg)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
        return _err(422, "bad_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        return _err(500, "internal_error", f"unexpected {type(exc).__name__}: {exc}; the server log has details")

    allowed = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}

    @app.middleware("http")
    async def _limit_size(request: Request, call_next):
        if allowed is not None:
            host = _host_name(request.headers.get("host", ""))
            if host not in allowed:
                return _err(400, "bad_host", f"this server answers only to {', '.join(sorted(allowed))}, not {host!r}; "
                            "open the address `orbitseg label` printed (or start it with --host)")
        origin = request.headers.get("origin")
        if request.method not in ("GET", "HEAD") and origin and not _same_origin(origin, request.headers.get("host", "")):
            # another site, or another local server (any loopback port), may not change labels here
            return _err(403, "bad_origin", f"requests from {origin} may not change labels here; "
                        "use the page this server serves")
        n = request.headers.get("content-length")
        if n is not None and n.isdigit() and int(n) > MAX_BODY_BYTES:
            return _err(413, "too_large", f"request body of {n} bytes exceeds the limit of {MAX_BODY_BYTES} bytes")
        if len(request.url.path) > 2048 or len(str(request.url.query)) > 4096:
            return _err(414, "too_long", "request URL too long")
        return await call_next(request)

    # ---- page --------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # ---- dataset -------------------------------------------------------------------------------
    @app.get("/api/info")
    def info():
        return {
            "dataset": store.root.name,
            "labels": [{"id": s, "title": LABEL_TITLES[s], "colour": label_colour_hex(s), "rgb": LABEL_COLOURS[s]}
                       for s in STRUCTURES],
            "window_presets": {k: {"level": v[0], "width": v[1]} for k, v in WINDOW_PRESETS.items()},
            "resolutions": list(RESOLUTIONS),
            "model": model_name,
            "max_body_bytes": MAX_BODY_BYTES,
            "max_slab": MAX_SLAB,
        }

    @app.get("/api/cases")
    def cases():
        return {"cases": [store.summary(c) for c in store.cases().values()]}

    @app.get("/api/cases/{case_id}")
    def case_meta(case_id: str):
        return store.meta(case_id)

    @app.get("/api/cases/{case_id}/slice")
    def get_slice(case_id: str, request: Request):
        axis = _int(request, "axis", 0, 0, 2)
        index = _int(request, "index")
        s = store.slice(case_id, axis, index)
        fmt = request.query_params.get("format", "raw")
        if fmt == "png":
            level = _float(request, "level", WINDOW_PRESETS["orbit"][0])
            width = _float(request, "width", WINDOW_PRESETS["orbit"][1], positive=True)
            x = apply_window(s, level=level, width=width)
            return Response(_png_gray((x * 255 + 0.5).astype(np.uint8)), media_type="image/png",
                            headers={"Cache-Control": "no-store"})
        if fmt != "raw":
            raise AppError(422, "bad_parameter", "format must be 'raw' or 'png'")
        return _raw(s)

    @app.get("/api/cases/{case_id}/label")
    def get_label(case_id: str):
        arr, token = store.read_label_canonical(case_id)
        return _gzip_response(arr, **{"X-Label-Version": token})

    @app.put("/api/cases/{case_id}/label")
    async def put_label(case_id: str, request: Request):
        base = request.query_params.get("base")
        if not base:
            raise AppError(422, "missing_parameter", "query parameter 'base' (the version you started from) is required")
        force = _flag(request, "force")
        o = await _open(case_id)
        expected = int(np.prod(o.canon.shape))
        body = await _read_body(request)
        if request.headers.get("content-encoding", "").lower() == "gzip" or body[:2] == b"\x1f\x8b":
            body = _gunzip_bounded(body, expected)
        if len(body) != expected:
            raise AppError(422, "bad_size", f"label data has {len(body)} bytes; the scan needs exactly {expected} "
                           f"(one byte per voxel of {tuple(o.canon.shape)})")
        arr = np.frombuffer(body, np.uint8).reshape(o.canon.shape)
        return await run_in_threadpool(store.save, case_id, arr, base, force=force)

    @app.post("/api/cases/{case_id}/status")
    async def set_status(case_id: str, request: Request):
        body = await _read_body(request, 4096)
        import json

        try:
            status = json.loads(body or b"{}").get("status")
        except (ValueError, AttributeError):
            raise AppError(400, "bad_body", 'body must be JSON like {"status": "done"}') from None
        return {"status": store.set_status(store.case(case_id), status)}

    @app.get("/api/cases/{case_id}/measurements")
    async def measurements(case_id: str):
        return await run_in_threadpool(store.measurements, case_id)

    @app.get("/api/cases/{case_id}/history")
    def history(case_id: str):
        return {"versions": store.history(case_id)}

    @app.get("/api/cases/{case_id}/history/{name}")
    def history_version(case_id: str, name: str):
        path = store.history_file(case_id, name)
        arr, token = store.read_label_canonical(case_id, path)
        return _gzip_response(arr, **{"X-History-Version": token})

    # ---- labeling aids ---------------------------------------------------------------------------
    def _spx(o: OpenScan, index: int, n: int) -> np.ndarray:
        """(ny, nx) superpixel map of axial slice ``index`` with about ``n`` superpixels (cached)."""
        return spx_cache.get(o.key, 0, index, o.canon.array[index], n_segments=n, spacing=_zyx_spacing(o)[1:])

    def _n_param(request: Request) -> int:
        n = _int(request, "n", 1000)
        if n not in RESOLUTIONS:
            raise AppError(422, "bad_parameter", f"n must be one of {list(RESOLUTIONS)}, got {n}")
        return n

    @app.get("/api/cases/{case_id}/superpixels")
    async def superpixels(case_id: str, request: Request):
        """Borders where they help: in the orbits (:meth:`OrbitFrame.border_region`), or, when no orbit is
        known, in the slice's soft tissue.  SmartPencil itself still uses the whole slice's map."""
        o = await _open(case_id)
        index = _int(request, "index", None, 0, o.canon.shape[0] - 1)
        n = _n_param(request)
        frame, _ = await run_in_threadpool(store.orbit_frame, case_id)
        if frame is not None and not frame.crosses(index):  # no orbit on this slice: no borders, no SLIC
            return _raw(np.zeros(o.canon.shape[1:], np.uint8), **{"X-Superpixels": 0})
        image = o.canon.array[index]

        def run() -> tuple[np.ndarray, int]:
            spx = _spx(o, index, n)
            region = soft_tissue(image) if frame is None else frame.border_region(image, index, _zyx_spacing(o))
            return visible_borders(superpixel_borders(spx), region), int(spx.max()) + 1

        borders, count = await run_in_threadpool(run)
        return _raw(borders, **{"X-Superpixels": count})

    async def _slab(case_id: str, request: Request, layers: int) -> _Slab:
        """The slab ``z0..z1`` of a tool request: its query range and a body of ``layers`` uint8 volumes."""
        o = await _open(case_id)
        nz, ny, nx = o.canon.shape
        z0 = _int(request, "z0", None, 0, nz - 1)
        z1 = _int(request, "z1", z0 + 1, z0 + 1, nz)
        if z1 - z0 > MAX_SLAB:
            raise AppError(413, "too_large", f"slab of {z1 - z0} slices exceeds the limit of {MAX_SLAB}")
        n = (z1 - z0) * ny * nx
        try:
            body = await _read_body(request, layers * n)
        except AppError:
            body = b"x" * (layers * n + 1)  # too large: say what size was needed
        if len(body) != layers * n:
            got = f"{len(body)} bytes" if len(body) <= layers * n else "more bytes"
            raise AppError(422, "bad_size", f"body has {got}; slices {z0}..{z1 - 1} need {layers} x {n} "
                           f"(uint8 {'mask + strokes' if layers == 2 else 'mask'}, {z1 - z0} x {ny} x {nx})")
        arr = np.frombuffer(body, np.uint8).reshape(layers, z1 - z0, ny, nx)
        if arr[0].max(initial=0) > 3:
            raise AppError(422, "bad_values", "mask values must be 0..3")
        return _Slab(o, z0, z1, arr)

    @app.post("/api/cases/{case_id}/pencil")
    async def pencil(case_id: str, request: Request):
        slab = await _slab(case_id, request, 1)
        if slab.z1 - slab.z0 != 1:
            raise AppError(422, "bad_parameter", "SmartPencil works on one slice: z1 must be z0 + 1")
        n = _n_param(request)
        ny, nx = slab.mask.shape[1:]
        row, col = _int(request, "row", None, 0, ny - 1), _int(request, "col", None, 0, nx - 1)
        label = _int(request, "label", None, 1, 3)
        eraser = _flag(request, "eraser")
        spx = await run_in_threadpool(_spx, slab.scan, slab.z0, n)
        out = pencil_click(slab.mask[0], spx, (row, col), label, eraser=eraser)
        return _raw(out[None])

    @app.post("/api/cases/{case_id}/smartfill")
    async def smartfill(case_id: str, request: Request):
        slab = await _slab(case_id, request, 2)
        labels = _labels_param(request)
        prior = _prior(case_id, slab.z0, slab.z1)
        return await _run_tool(
            lambda: smart_fill_slab(slab.image, slab.mask, slab.strokes, spacing=_zyx_spacing(slab.scan),
                                    labels=labels, probabilities=prior),
            "smartfill_failed", "SmartFill", **_prior_header(prior))

    @app.post("/api/cases/{case_id}/autocorrect")
    async def autocorrect(case_id: str, request: Request):
        slab = await _slab(case_id, request, 1)
        labels = _labels_param(request)
        if not np.isin(slab.mask, labels).any():  # nothing to correct: no tool runs (and no prior header)
            return _raw(slab.mask)
        prior = _prior(case_id, slab.z0, slab.z1)
        return await _run_tool(
            lambda: auto_correct_slab(slab.image, slab.mask, spacing=_zyx_spacing(slab.scan), labels=labels,
                                      probabilities=prior),
            "autocorrect_failed", "AutoCorrection", **_prior_header(prior))

    @app.post("/api/cases/{case_id}/predict")
    def predict(case_id: str):
        if model_path is None:
            raise AppError(503, "no_model",
                           "no model is configured, so Predict has nothing to run. Train one (`orbitseg train`) and "
                           "restart with `orbitseg label DATASET --model CKPT` (e.g. .../checkpoint_best.pt)")
        if not model_path.exists():
            raise AppError(503, "no_model", f"model checkpoint {model_path} was not found; restart with "
                           "`orbitseg label DATASET --model CKPT` pointing at an existing checkpoint_best.pt")
        from orbitseg.io.orient import to_canonical
        from orbitseg.predict.segmenter import Segmenter

        o = store.open(case_id)
        with model_state["lock"]:
            if model_state["segmenter"] is None:
                try:  # a checkpoint, a run folder or a model folder (folds ensembled), loaded once
                    model_state["segmenter"] = Segmenter.load(model_path, folds=folds, precision="auto",
                                                                 engine="auto")
                except InputError as exc:
                    raise AppError(503, "no_model", f"{exc}; restart with `orbitseg label DATASET --model RUN_OR_CKPT`")
            segmenter = model_state["segmenter"]
            result = segmenter.segment(o.scan, probabilities=True, fold_agreement=True)
            priors[case_id] = result.probabilities.quantized()
            priors.move_to_end(case_id)
            while len(priors) > PRIOR_CASES:
                priors.popitem(last=False)
            flags, summary = _quality(segmenter, result, o.scan)
            store.record_prediction(case_id, result.labels.array, flags, summary, model_name,
                                    measurement_rows(result.labels, o.scan))
        return _gzip_response(np.ascontiguousarray(to_canonical(result.labels).array, dtype=np.uint8),
                              **{"X-Quality-Flags": len(flags)})

    return app


def serve(dataset: Path, host: str = "127.0.0.1", port: int = 8000, model: Path | None = None,
          folds: str = "all") -> None:
    """Run the labeling app under uvicorn until Ctrl+C; prints the address to open."""
    import uvicorn

    hosts = None if host in ("0.0.0.0", "::", "") else tuple(sorted(set(LOOPBACK_NAMES) | {host}))
    app = create_app(Path(dataset), model=model, folds=folds, allowed_hosts=hosts)
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    shown = f"[{shown}]" if ":" in shown else shown
    print(f"orbitseg label: labeling {Path(dataset).resolve()}\n  open http://{shown}:{port}/ in a browser "
          "(Ctrl+C stops the server)", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"  note: bound to {host}, so other machines on the network can reach this server", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
