"""The jobs behind ``sisr serve``: uploads, one queue, one worker, results and previews.

Nothing here knows about HTTP. A :class:`Job` is a batch of uploaded files with the settings chosen in
the page; :class:`JobQueue` runs one job at a time on a worker thread through
:func:`sisr.upscaling.upscale_files`, the function behind ``sisr upscale``, so a result is the file the
command writes for the same input and model. Every file lives under one temporary folder, removed by
:meth:`JobQueue.close`. Files are reached only by job id and position, never by a path from the page.
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np

from sisr.data.images import format_for_path
from sisr.errors import SisrError
from sisr.precision import Precision

__all__ = ["Cancelled", "FileEntry", "Job", "JobQueue", "ModelChoice", "safe_name"]

JobState = Literal["uploading", "queued", "running", "done", "cancelled", "failed"]
FileState = Literal["waiting", "running", "done", "failed", "cancelled"]
PreviewKind = Literal["input", "result", "bicubic"]


class Cancelled(Exception):
    """Raised from the progress callbacks to stop a job at the next tile."""


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    """A model the page offers: a shipped name or a file given with ``--model``."""

    name: str  # what upscale_files gets (shipped name or path) and what the page shows
    scale: int
    shipped: bool


@dataclasses.dataclass
class FileEntry:
    """One uploaded file and what became of it."""

    name: str  # as stored in the job's folder (and as the page shows it)
    state: FileState = "waiting"
    error: str | None = None  # one line, naming the file
    input_size: tuple[int, int] | None = None  # (width, height)
    output_size: tuple[int, int] | None = None
    seconds: float | None = None
    result: Path | None = None  # the upscaled file, in the input's format
    previews: dict[str, Path] = dataclasses.field(default_factory=dict)  # PreviewKind -> 8-bit PNG


@dataclasses.dataclass
class Job:
    """A batch of files upscaled with one model and one set of settings."""

    id: str
    folder: Path
    model: ModelChoice
    tile: int | None
    precision: Precision
    files: list[FileEntry] = dataclasses.field(default_factory=list)
    state: JobState = "uploading"
    error: str | None = None  # a failure of the whole job (the model, the precision)
    current: int | None = None  # position of the file being upscaled
    tiles: tuple[int, int] = (0, 0)  # (done, total) in the current frame
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
    started: float | None = None
    finished: float | None = None


def safe_name(name: str) -> str:
    """A file name from an upload's name that stays inside a folder: its last part, tame characters only.

    ``../../etc/passwd`` becomes ``passwd``, ``C:\\x\\y.png`` becomes ``y.png``; a leading dot is dropped
    so that the name is never hidden or ``..``.
    """
    last = re.split(r"[\\/]", name)[-1]
    tame = re.sub(r"[^\w.+() -]", "_", last).strip(" .")
    return tame[:120] or "image"


class JobQueue:
    """Jobs waiting and running, one at a time, on a worker thread.

    Args:
        models: The models the page offers, by name.
        device: Where the network runs (``upscale_files``'s `device`).
        max_pixels: Inputs with more pixels are refused from their header, before decoding.
        max_upload_bytes: Uploads larger than this are refused before they are stored.
        root: Parent of the temporary folder (None: the system's).
    """

    def __init__(
        self,
        *,
        models: dict[str, ModelChoice],
        device: str = "cpu",
        max_pixels: int,
        max_upload_bytes: int,
        root: str | None = None,
    ) -> None:
        self.models = models
        self.device = device
        self.max_pixels = max_pixels
        self.max_upload_bytes = max_upload_bytes
        self.folder = Path(tempfile.mkdtemp(prefix="sisr-serve-", dir=root))
        self._jobs: dict[str, Job] = {}
        self._waiting: list[Job] = []  # queued, in order; the running job is not in it
        self._running: Job | None = None
        self._lock = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._work, name="sisr-serve-worker", daemon=True)
        self._worker.start()

    # Jobs, as the page drives them.

    def create(self, *, model: str, tile: int | None, precision: Precision) -> Job:
        """A new job in state ``uploading``.

        Raises:
            SisrError: An unknown model or a bad tile size.
        """
        choice = self.models.get(model)
        if choice is None:
            raise SisrError(f"unknown model {model!r}; offered: {', '.join(self.models)}")
        if tile is not None and tile < 1:
            raise SisrError(f"tile size must be at least 1, got {tile}")
        job_id = secrets.token_hex(8)
        folder = self.folder / job_id
        (folder / "in").mkdir(parents=True)
        job = Job(id=job_id, folder=folder, model=choice, tile=tile, precision=precision)
        with self._lock:
            self._jobs[job_id] = job
        return job

    def get(self, job_id: str) -> Job | None:
        """The job of this id, or None."""
        with self._lock:
            return self._jobs.get(job_id)

    def add_file(self, job: Job, name: str) -> FileEntry:
        """A new file of the job, under a name safe in its folder; the caller writes :meth:`path_of`.

        A name whose extension sisr cannot write gets its error at once (the output keeps the input's
        format), and nothing is to be stored for it.

        Raises:
            SisrError: The job has already started.
        """
        with self._lock:
            if job.state != "uploading":
                raise SisrError("the job has already started; start a new one for more files")
            stored = unique_name(safe_name(name), {entry.name for entry in job.files})
            entry = FileEntry(name=stored)
            job.files.append(entry)
        try:
            format_for_path(stored)
        except SisrError as e:
            entry.state, entry.error = "failed", str(e)
        return entry

    def path_of(self, job: Job, entry: FileEntry) -> Path:
        """Where an uploaded file is stored."""
        return job.folder / "in" / entry.name

    def refuse(self, job: Job, entry: FileEntry, message: str) -> None:
        """Marks an upload as refused and removes what was stored of it."""
        entry.state, entry.error = "failed", message
        self.path_of(job, entry).unlink(missing_ok=True)

    def start(self, job: Job) -> None:
        """Puts the job at the end of the queue."""
        with self._lock:
            if job.state != "uploading":
                return
            job.state = "queued"
            self._waiting.append(job)
            self._lock.notify_all()

    def cancel(self, job: Job) -> None:
        """Stops a running job at its next tile, or takes a waiting one out of the queue."""
        with self._lock:
            job.cancel.set()
            if job in self._waiting:
                self._waiting.remove(job)
                self._finish(job, "cancelled")

    def ahead(self, job: Job) -> int:
        """How many jobs run before this one starts (the running one included)."""
        with self._lock:
            if job not in self._waiting:
                return 0
            return self._waiting.index(job) + (self._running is not None)

    def zip_results(self, job: Job) -> Path:
        """The job's results so far in a new zip file (the caller removes it), with their download names."""
        fd, name = tempfile.mkstemp(suffix=".zip", dir=job.folder)
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as archive:
            for entry in job.files:
                if entry.result is not None:
                    archive.write(entry.result, download_name(entry.name, job.model.scale))
        return Path(name)

    def close(self) -> None:
        """Stops the worker (the running job at its next tile) and removes every file."""
        with self._lock:
            self._closed = True
            for job in self._jobs.values():
                job.cancel.set()
            self._lock.notify_all()
        self._worker.join(timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)

    # The worker.

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
                job = self._running = self._waiting.pop(0)
                job.state, job.started = "running", time.monotonic()
            try:
                self._run(job)
            except Cancelled:
                self._finish(job, "cancelled")
            except SisrError as e:  # the job as a whole: the model, the precision, the device
                job.error = str(e)
                self._finish(job, "failed")
            except Exception as e:  # a bug must not stop the server: the page shows it, the next job runs
                job.error = f"internal error: {type(e).__name__}: {e}"
                self._finish(job, "failed")
            else:
                self._finish(job, "done")

    def _finish(self, job: Job, state: JobState) -> None:
        with self._lock:
            for entry in job.files:
                if entry.state in ("waiting", "running"):
                    entry.state = "cancelled" if state == "cancelled" else "failed"
                    if state == "failed" and entry.error is None:
                        entry.error = f"{entry.name}: not upscaled: {job.error}"
            job.state, job.finished, job.current = state, time.monotonic(), None
            if self._running is job:
                self._running = None

    def _run(self, job: Job) -> None:
        from sisr.upscaling import UpscaleResult, upscale_files

        entries = [entry for entry in job.files if entry.state == "waiting"]
        if not entries:
            return
        by_source = {job.folder / "in" / entry.name: entry for entry in entries}
        sources = list(by_source)
        (job.folder / "out").mkdir(exist_ok=True)
        clock = [time.monotonic()]

        def on_start(index: int, total: int, source: Path) -> None:
            if job.cancel.is_set():
                raise Cancelled
            job.current, job.tiles = job.files.index(by_source[source]), (0, 0)
            by_source[source].state = "running"
            clock[0] = time.monotonic()

        def on_tile(done: int, total: int) -> None:
            job.tiles = (done, total)
            if job.cancel.is_set():
                raise Cancelled

        def on_result(result: UpscaleResult) -> None:
            entry = by_source[result.source]
            if result.error is not None:
                entry.state, entry.error = "failed", _shown(str(result.error), result.source, entry.name)
                return
            entry.seconds = time.monotonic() - clock[0]
            try:
                self._previews(job, entry, result.target)
            except SisrError as e:
                entry.state, entry.error = "failed", _shown(str(e), result.target, entry.name)
                return
            entry.result, entry.state = result.target, "done"

        upscale_files(
            [str(s) for s in sources],
            f"{job.folder / 'out'}/",
            model=job.model.name,
            tile=job.tile,
            device=self.device,
            precision=job.precision,
            max_pixels=self.max_pixels,
            on_start=on_start,
            on_result=on_result,
            on_tile=on_tile,
        )

    def _previews(self, job: Job, entry: FileEntry, target: Path) -> None:
        """8-bit PNGs of the input, the result and the input upscaled with MATLAB's bicubic."""
        from sisr.data.images import read_image
        from sisr.imresize import imresize

        scale = job.model.scale
        source = read_image(job.folder / "in" / entry.name, max_pixels=self.max_pixels, all_frames=True)
        result = read_image(target, max_pixels=self.max_pixels * scale * scale, all_frames=True)
        pixels = source.pixels  # the first frame, (H, W, C)
        top = float(np.iinfo(pixels.dtype).max)
        bicubic = imresize(pixels.astype(np.float32) / top, scale)
        bicubic = bicubic.reshape(*bicubic.shape[:2], -1)
        folder = job.folder / "preview"
        folder.mkdir(exist_ok=True)
        index = job.files.index(entry)
        previews = {}
        for kind, image in (("input", pixels), ("result", result.pixels), ("bicubic", bicubic)):
            previews[kind] = folder / f"{index}-{kind}.png"
            _write_preview(previews[kind], image)
        entry.previews = previews  # whole, never while the page reads it
        entry.input_size = (pixels.shape[1], pixels.shape[0])
        entry.output_size = (result.pixels.shape[1], result.pixels.shape[0])


def unique_name(name: str, taken: set[str]) -> str:
    """`name`, or ``STEM-2.EXT``, ``STEM-3.EXT``, ... if a file of the job already has it."""
    if name not in taken:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    n = 2
    while f"{stem}-{n}{dot}{ext}" in taken:
        n += 1
    return f"{stem}-{n}{dot}{ext}"


def download_name(name: str, scale: int) -> str:
    """``photo.png`` -> ``photo_x2.png``, the name ``sisr upscale`` gives its output beside the input."""
    path = Path(name)
    return f"{path.stem}_x{scale}{path.suffix}"


def _shown(message: str, path: Path, name: str) -> str:
    """The message with the temporary path replaced by the file's name, as the user knows it."""
    return " ".join(message.replace(str(path), name).split())


def _write_preview(path: Path, pixels: np.ndarray) -> None:
    """An 8-bit PNG of uint8, uint16 or float ([0, 1]) pixels (H, W, C), for the browser."""
    from PIL import Image as PILImage

    if pixels.dtype == np.uint16:
        pixels = (pixels.astype(np.float32) / 257.0).round()
    elif pixels.dtype != np.uint8:
        pixels = (np.clip(pixels, 0.0, 1.0) * 255.0).round()
    pixels = pixels.astype(np.uint8)
    image = PILImage.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)  # L, LA, RGB, RGBA
    image.save(path, format="PNG", compress_level=1)
