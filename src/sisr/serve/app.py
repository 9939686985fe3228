"""The HTTP side of ``sisr serve``: one static page and a small JSON API over :class:`JobQueue`.

Routes (every file is reached by job id and position, never by a path the page sends):

- ``GET /`` the page; ``GET /static/NAME`` its script and style, from this package only.
- ``GET /api/config`` the models offered, the precisions and the limits.
- ``POST /api/jobs`` a new job (JSON: model, tile, precision) -> ``{"id": ...}``.
- ``PUT /api/jobs/ID/files?name=NAME`` one file as the raw request body; larger than the upload limit
  is refused from its Content-Length, or as soon as more bytes arrive, before anything is stored.
- ``POST /api/jobs/ID/start`` into the queue; ``POST /api/jobs/ID/cancel`` out of it, or stop at the
  next tile.
- ``GET /api/jobs/ID`` the state: place in the queue, progress, every file's result or error.
- ``GET /api/jobs/ID/files/N/download`` the result as written (``NAME_xS.EXT``);
  ``.../files/N/preview/input|result|bicubic`` 8-bit PNGs for the page; ``GET /api/jobs/ID/zip`` all
  results.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from sisr.errors import SisrError
from sisr.precision import PRECISIONS
from sisr.serve.jobs import FileEntry, Job, JobQueue, download_name

__all__ = ["create_app"]

STATIC = Path(__file__).parent / "static"
# The only static files served, by name: nothing else of the package (or the disk) is reachable.
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
_NO_STORE = {"Cache-Control": "no-store"}


def create_app(jobs: JobQueue, *, default_precision: str = "fp32") -> Starlette:
    """The web app over `jobs` (which the caller closes)."""

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": " ".join(message.split())}, status_code=status, headers=_NO_STORE)

    def job_of(request: Request) -> Job | None:
        return jobs.get(request.path_params["job"])

    def entry_of(job: Job, request: Request) -> FileEntry | None:
        try:
            index = int(request.path_params["index"])
        except ValueError:
            return None
        return job.files[index] if 0 <= index < len(job.files) else None

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=_NO_STORE)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC_FILES:
            return error(404, f"no such file: {name}")
        return FileResponse(STATIC / name, media_type=STATIC_FILES[name], headers=_NO_STORE)

    async def config(request: Request) -> Response:
        return JSONResponse(
            {
                "models": [
                    {"name": m.name, "scale": m.scale, "shipped": m.shipped} for m in jobs.models.values()
                ],
                "precisions": list(PRECISIONS),
                "precision": default_precision,
                "max_pixels": jobs.max_pixels,
                "max_upload_bytes": jobs.max_upload_bytes,
            },
            headers=_NO_STORE,
        )

    async def create(request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError as e:
            return error(400, f"bad request: {e}")
        tile = body.get("tile")
        precision = body.get("precision", default_precision)
        if tile is not None and (not isinstance(tile, int) or isinstance(tile, bool)):
            return error(400, f"tile size must be a whole number, got {tile!r}")
        if precision not in PRECISIONS:
            return error(400, f"unknown precision {precision!r}; one of {', '.join(PRECISIONS)}")
        try:
            job = jobs.create(model=str(body.get("model")), tile=tile, precision=precision)
        except SisrError as e:
            return error(400, str(e))
        return JSONResponse({"id": job.id}, headers=_NO_STORE)

    async def upload(request: Request) -> Response:
        job = job_of(request)
        if job is None:
            return error(404, "no such job")
        name = request.query_params.get("name", "image")
        limit = jobs.max_upload_bytes
        refused = (
            f"{name}: upload is larger than the limit of {limit / 2**20:g} MB (--max-upload-mb); "
            "it was not read"
        )
        try:
            declared = int(request.headers.get("content-length", "0"))
        except ValueError:
            return error(400, "bad Content-Length")
        if declared > limit:  # refused before a byte of the body is read
            return error(413, refused)
        try:
            entry = jobs.add_file(job, name)
        except SisrError as e:
            return error(409, str(e))
        if entry.state == "waiting":  # streamed to disk, so memory holds one chunk at a time
            size = 0
            with open(jobs.path_of(job, entry), "wb") as f:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:  # a body longer than it said, or none said: stop reading
                        break
                    f.write(chunk)
            if size > limit:
                jobs.refuse(job, entry, refused)
                return error(413, refused)
        return JSONResponse(describe_file(job, job.files.index(entry), entry), headers=_NO_STORE)

    async def start(request: Request) -> Response:
        job = job_of(request)
        if job is None:
            return error(404, "no such job")
        jobs.start(job)
        return JSONResponse(describe(job), headers=_NO_STORE)

    async def cancel(request: Request) -> Response:
        job = job_of(request)
        if job is None:
            return error(404, "no such job")
        jobs.cancel(job)
        return JSONResponse(describe(job), headers=_NO_STORE)

    async def status(request: Request) -> Response:
        job = job_of(request)
        if job is None:
            return error(404, "no such job")
        return JSONResponse(describe(job), headers=_NO_STORE)

    async def download(request: Request) -> Response:
        job = job_of(request)
        entry = None if job is None else entry_of(job, request)
        if job is None or entry is None or entry.result is None:
            return error(404, "no such result")
        return FileResponse(
            entry.result, filename=download_name(entry.name, job.model.scale), headers=_NO_STORE
        )

    async def preview(request: Request) -> Response:
        job = job_of(request)
        entry = None if job is None else entry_of(job, request)
        path = None if entry is None else entry.previews.get(request.path_params["kind"])
        if path is None:
            return error(404, "no such preview")
        return FileResponse(path, media_type="image/png", headers=_NO_STORE)

    async def zip_all(request: Request) -> Response:
        job = job_of(request)
        if job is None:
            return error(404, "no such job")
        stem = f"sisr-{job.model.name.replace('/', '_')}-{job.id[:6]}.zip"
        path = jobs.zip_results(job)
        return FileResponse(
            path,
            media_type="application/zip",
            filename=stem,
            headers=_NO_STORE,
            background=BackgroundTask(path.unlink, missing_ok=True),
        )

    def describe(job: Job) -> dict[str, Any]:
        return {
            "id": job.id,
            "state": job.state,
            "error": job.error,
            "ahead": jobs.ahead(job),
            "model": job.model.name,
            "scale": job.model.scale,
            "current": job.current,
            "tiles": list(job.tiles),
            "files": [describe_file(job, i, entry) for i, entry in enumerate(job.files)],
        }

    def describe_file(job: Job, index: int, entry: FileEntry) -> dict[str, Any]:
        base = f"/api/jobs/{job.id}/files/{index}"
        done = entry.result is not None
        return {
            "index": index,
            "name": entry.name,
            "state": entry.state,
            "error": entry.error,
            "input_size": entry.input_size,
            "output_size": entry.output_size,
            "seconds": entry.seconds,
            "download": f"{base}/download" if done else None,
            "download_name": download_name(entry.name, job.model.scale),
            "previews": {kind: f"{base}/preview/{kind}" for kind in entry.previews},
        }

    routes = [
        Route("/", page),
        Route("/static/{name}", static),
        Route("/api/config", config),
        Route("/api/jobs", create, methods=["POST"]),
        Route("/api/jobs/{job}", status),
        Route("/api/jobs/{job}/files", upload, methods=["PUT"]),
        Route("/api/jobs/{job}/start", start, methods=["POST"]),
        Route("/api/jobs/{job}/cancel", cancel, methods=["POST"]),
        Route("/api/jobs/{job}/files/{index}/download", download),
        Route("/api/jobs/{job}/files/{index}/preview/{kind}", preview),
        Route("/api/jobs/{job}/zip", zip_all),
    ]
    return Starlette(routes=routes)
