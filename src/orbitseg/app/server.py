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
* ``GET  /api/cases/{case}/superpixels?index=&n=`` - uint8 map of superpixel borders
* ``POST /api/cases/{case}/pencil|smartfill|autocorrect`` - body: raw uint8 mask
  (and strokes) of a slab ``z0..z1``; answer: the new mask slab

Every error is ``{"error": code, "message": text}`` with a text a person can act on.
"""

from __future__ import annotations

import gzip
import threading
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from orbitseg.constants import LABEL_COLOURS, LABEL_TITLES, STRUCTURES, WINDOW_PRESETS, label_colour_hex
from orbitseg.app.store import AppError, DatasetStore
from orbitseg.errors import InputError, OrbitsegError

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


def _raw(a: np.ndarray, **headers) -> Response:
    h = {"X-Shape": ",".join(str(v) for v in a.shape), "Cache-Control": "no-store"}
    h.update({k: str(v) for k, v in headers.items()})
    return Response(np.ascontiguousarray(a).tobytes(), media_type="application/octet-stream", headers=h)


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


def _float(request: Request, name: str, default: float) -> float:
    v = request.query_params.get(name)
    if v is None:
        return default
    try:
        x = float(v)
    except ValueError:
        raise AppError(422, "bad_parameter", f"query parameter {name!r} must be a number, got {v[:40]!r}") from None
    if not np.isfinite(x):
        raise AppError(422, "bad_parameter", f"query parameter {name!r} must be finite")
    return x


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


def _prior_header(prior: np.ndarray | None) -> dict:
    """Tells the page whether a tool ran with the network's probabilities."""
    return {"X-Orbitseg-Prior": "none" if prior is None else "network"}


async def _run_tool(run, code: str, what: str, **headers) -> Response:
    """Run a labeling algorithm off the event loop; its ValueError becomes a 422 the page shows."""
    from starlette.concurrency import run_in_threadpool

    try:
        out = await run_in_threadpool(run)
    except ValueError as exc:
        raise AppError(422, code, f"{what}: {exc}") from None
    return _raw(out.astype(np.uint8), **headers)


def create_app(dataset: Path, *, model: Path | None = None, allowed_hosts: tuple[str, ...] | None = LOOPBACK_NAMES) -> FastAPI:
    """The labeling app for the dataset folder ``dataset`` (nnU-Net layout with dataset.json).

    ``model``: an orbitseg training checkpoint for the Predict button (loaded on first use).
    ``allowed_hosts``: host names the page may be reached under (Host header; and the Origin of
    requests that change something).  The loopback default stops other web sites from reading
    scans or writing labels through the browser (DNS rebinding, cross-site posts); None allows any.
    """
    store = DatasetStore(Path(dataset))
    app = FastAPI(title="orbitseg label", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store
    model_path = None if model is None else Path(model)
    model_state: dict = {"lock": threading.Lock(), "loaded": None}
    # the network's probabilities of the cases Predict ran on, over the orbits' bounding box of the
    # canonical grid as uint8 (1/255 steps; ~10 MB per case), the last PRIOR_CASES only: SmartFill
    # and AutoCorrection use them as prior / data term on those cases (issue 8)
    priors: OrderedDict[str, BoxProbabilities] = OrderedDict()

    def _prior(case_id: str, z0: int, z1: int) -> np.ndarray | None:
        q = priors.get(case_id)
        return None if q is None else q.region(slice(z0, z1))
    from orbitseg.labeling import SuperpixelCache

    spx_cache = SuperpixelCache(maxsize=256)

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
            if request.method not in ("GET", "HEAD") and origin and _host_name(origin) not in allowed:
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
        from orbitseg.labeling import RESOLUTIONS

        return {
            "dataset": store.root.name,
            "labels": [{"id": s, "title": LABEL_TITLES[s], "colour": label_colour_hex(s), "rgb": LABEL_COLOURS[s]}
                       for s in STRUCTURES],
            "window_presets": {k: {"level": v[0], "width": v[1]} for k, v in WINDOW_PRESETS.items()},
            "resolutions": list(RESOLUTIONS),
            "model": None if model_path is None else model_path.name,
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
        if request.query_params.get("format", "raw") == "png":
            level = _float(request, "level", WINDOW_PRESETS["orbit"][0])
            width = _float(request, "width", WINDOW_PRESETS["orbit"][1])
            if width <= 0:
                raise AppError(422, "bad_parameter", "width must be positive")
            x = np.clip((s.astype(np.float32) - (level - width / 2)) / width, 0, 1)
            return Response(_png_gray((x * 255 + 0.5).astype(np.uint8)), media_type="image/png",
                            headers={"Cache-Control": "no-store"})
        if request.query_params.get("format", "raw") != "raw":
            raise AppError(422, "bad_parameter", "format must be 'raw' or 'png'")
        return _raw(s)

    def _gzip_response(a: np.ndarray, **headers) -> Response:
        body = gzip.compress(np.ascontiguousarray(a).tobytes(), compresslevel=1, mtime=0)
        h = {"Content-Encoding": "gzip", "X-Shape": ",".join(str(v) for v in a.shape), "Cache-Control": "no-store"}
        h.update({k: str(v) for k, v in headers.items()})
        return Response(body, media_type="application/octet-stream", headers=h)

    @app.get("/api/cases/{case_id}/label")
    def get_label(case_id: str):
        arr, token = store.read_label_canonical(case_id)
        return _gzip_response(arr, **{"X-Label-Version": token})

    @app.put("/api/cases/{case_id}/label")
    async def put_label(case_id: str, request: Request):
        base = request.query_params.get("base")
        if not base:
            raise AppError(422, "missing_parameter", "query parameter 'base' (the version you started from) is required")
        force = request.query_params.get("force") in ("1", "true")
        from starlette.concurrency import run_in_threadpool

        o = await run_in_threadpool(store.open, case_id)
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

    @app.get("/api/cases/{case_id}/history")
    def history(case_id: str):
        return {"versions": store.history(case_id)}

    @app.get("/api/cases/{case_id}/history/{name}")
    def history_version(case_id: str, name: str):
        path = store.history_file(case_id, name)
        arr, token = store.read_label_canonical(case_id, path)
        return _gzip_response(arr, **{"X-History-Version": token})

    # ---- labeling aids ---------------------------------------------------------------------------
    def _spx(o, index: int, n: int):
        sp = o.canon.geometry.spacing  # (sx, sy, sz)
        return spx_cache.get(o.key, 0, index, o.canon.array[index], n_segments=n, spacing=(sp[1], sp[0]))

    def _n_param(request: Request) -> int:
        from orbitseg.labeling import RESOLUTIONS

        n = _int(request, "n", 1000)
        if n not in RESOLUTIONS:
            raise AppError(422, "bad_parameter", f"n must be one of {list(RESOLUTIONS)}, got {n}")
        return n

    @app.get("/api/cases/{case_id}/superpixels")
    def superpixel_borders(case_id: str, request: Request):
        o = store.open(case_id)
        index = _int(request, "index", None, 0, o.canon.shape[0] - 1)
        spx = _spx(o, index, _n_param(request))
        b = np.zeros(spx.shape, np.uint8)
        b[:, 1:] |= spx[:, 1:] != spx[:, :-1]
        b[1:, :] |= spx[1:, :] != spx[:-1, :]
        return _raw(b, **{"X-Superpixels": int(spx.max()) + 1})

    async def _slab(case_id: str, request: Request, layers: int):
        from starlette.concurrency import run_in_threadpool

        o = await run_in_threadpool(store.open, case_id)
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
        return o, z0, z1, arr

    @app.post("/api/cases/{case_id}/pencil")
    async def pencil(case_id: str, request: Request):
        from orbitseg.labeling import pencil_click
        from starlette.concurrency import run_in_threadpool

        o, z0, z1, arr = await _slab(case_id, request, 1)
        if z1 - z0 != 1:
            raise AppError(422, "bad_parameter", "SmartPencil works on one slice: z1 must be z0 + 1")
        n = _n_param(request)
        ny, nx = arr.shape[2:]
        row, col = _int(request, "row", None, 0, ny - 1), _int(request, "col", None, 0, nx - 1)
        label = _int(request, "label", None, 1, 3)
        eraser = request.query_params.get("eraser") in ("1", "true")
        spx = await run_in_threadpool(_spx, o, z0, n)
        out = pencil_click(arr[0, 0], spx, (row, col), label, eraser=eraser)
        return _raw(out[None])

    @app.post("/api/cases/{case_id}/smartfill")
    async def smartfill(case_id: str, request: Request):
        from orbitseg.labeling import smart_fill

        o, z0, z1, arr = await _slab(case_id, request, 2)
        labels = _labels_param(request)
        mask, strokes = arr[0], arr[1].copy()
        if not strokes.any():  # no strokes: grow from the labels already drawn
            strokes = np.where(np.isin(mask, labels), mask, strokes).astype(np.uint8)
        # background strokes alone correct the labels already drawn (SmartFill's keep_weight)
        if not np.isin(strokes, labels).any() and not (strokes.any() and np.isin(mask, labels).any()):
            raise AppError(422, "no_strokes", "SmartFill needs strokes or a few labelled pixels of the chosen "
                           "structure on these slices: draw a stroke (or a SmartPencil click) inside it first")
        sp = o.canon.geometry.spacing
        img = o.canon.array[z0:z1]
        prior = _prior(case_id, z0, z1)

        def run():
            from scipy import ndimage as ndi

            two_d = z1 - z0 == 1
            im, st, cur = (img[0], strokes[0], mask[0]) if two_d else (img, strokes, mask)
            pr = None if prior is None else (prior[:, 0] if two_d else prior)
            spacing = (sp[1], sp[0]) if two_d else (sp[2], sp[1], sp[0])
            # one fill per separate group of strokes (e.g. both globes): each cut then models its own
            # orbit's intensities in a local ROI (globe Dice from a click per globe, 6 small synthetic
            # patients: 0.70-0.91 with one cut over both orbits, 0.81-0.91 with a cut per group)
            marked = st != 0
            groups, n_groups = ndi.label(ndi.binary_dilation(marked, iterations=2))
            if n_groups > 8:
                n_groups = 1
            for g in range(1, n_groups + 1):
                cur = smart_fill(im, st, spacing=spacing, labels=labels, mask=cur, probabilities=pr,
                                 focus=((groups == g) & marked) if n_groups > 1 else None)
            return cur[None] if two_d else cur

        return await _run_tool(run, "smartfill_failed", "SmartFill", **_prior_header(prior))

    @app.post("/api/cases/{case_id}/autocorrect")
    async def autocorrect(case_id: str, request: Request):
        from orbitseg.labeling import auto_correct

        o, z0, z1, arr = await _slab(case_id, request, 1)
        labels = _labels_param(request)
        mask = arr[0]
        if not np.isin(mask, labels).any():
            return _raw(mask)
        sp = o.canon.geometry.spacing
        img = o.canon.array[z0:z1]
        prior = _prior(case_id, z0, z1)

        def run():
            # work on the labels' bounding box plus a margin: the result only changes near borders
            out = mask.copy()
            nz_, ny, nx = mask.shape
            idx = np.nonzero(mask)
            my, mx = int(np.ceil(10 / sp[1])), int(np.ceil(10 / sp[0]))
            y0, y1 = max(0, idx[1].min() - my), min(ny, idx[1].max() + 1 + my)
            x0, x1 = max(0, idx[2].min() - mx), min(nx, idx[2].max() + 1 + mx)
            pr = None if prior is None else prior[:, :, y0:y1, x0:x1]
            if nz_ == 1:
                r = auto_correct(img[0, y0:y1, x0:x1], mask[0, y0:y1, x0:x1], spacing=(sp[1], sp[0]), labels=labels,
                                 probabilities=None if pr is None else pr[:, 0])
                out[0, y0:y1, x0:x1] = r
            else:
                r = auto_correct(img[:, y0:y1, x0:x1], mask[:, y0:y1, x0:x1], spacing=(sp[2], sp[1], sp[0]),
                                 labels=labels, probabilities=pr)
                out[:, y0:y1, x0:x1] = r
            return out

        return await _run_tool(run, "autocorrect_failed", "AutoCorrection", **_prior_header(prior))

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
        from orbitseg.predict.core import load_model, predict_scan
        from orbitseg.predict.postprocess import apply_postprocessing
        from orbitseg.predict.run import model_checkpoints, model_postprocessing

        try:
            ckpts = model_checkpoints(model_path)  # a checkpoint, a run folder or a shipped model (folds ensembled)
        except InputError as exc:
            raise AppError(503, "no_model", f"{exc}; restart with `orbitseg label DATASET --model RUN_OR_CKPT`")
        o = store.open(case_id)
        with model_state["lock"]:
            if model_state["loaded"] is None:
                model_state["loaded"] = [load_model(c) for c in ckpts]
                model_state["postprocess"] = model_postprocessing(ckpts)[0]
            nets = [net for net, _ in model_state["loaded"]]
            config = model_state["loaded"][0][1]
            labels, probs = predict_scan(nets, o.scan, config, return_probabilities=True, precision="auto")
            labels = apply_postprocessing(labels, model_state["postprocess"])
            priors[case_id] = probs.quantized()
            priors.move_to_end(case_id)
            while len(priors) > PRIOR_CASES:
                priors.popitem(last=False)
        return _gzip_response(np.ascontiguousarray(to_canonical(labels).array, dtype=np.uint8))

    return app


def serve(dataset: Path, host: str = "127.0.0.1", port: int = 8000, model: Path | None = None) -> None:
    """Run the labeling app under uvicorn until Ctrl+C; prints the address to open."""
    import uvicorn

    hosts = None if host in ("0.0.0.0", "::", "") else tuple(sorted(set(LOOPBACK_NAMES) | {host}))
    app = create_app(Path(dataset), model=model, allowed_hosts=hosts)
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    shown = f"[{shown}]" if ":" in shown else shown
    print(f"orbitseg label: labeling {Path(dataset).resolve()}\n  open http://{shown}:{port}/ in a browser "
          "(Ctrl+C stops the server)", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"  note: bound to {host}, so other machines on the network can reach this server", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
