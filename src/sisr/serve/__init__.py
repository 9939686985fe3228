"""``sisr serve``: a local web page that upscales images and compares the result with the input.

A small Starlette app (:mod:`sisr.serve.app`) with one static page shipped in this package (no CDN, no
web fonts, no analytics) over a queue that runs one job at a time (:mod:`sisr.serve.jobs`) through
:func:`sisr.upscaling.upscale_files`, the function behind ``sisr upscale``. Needs the ``web`` extra
(``pip install 'sisr[web]'``: starlette and uvicorn), imported only here.
"""

from __future__ import annotations

import socket
import threading

from sisr.errors import SisrError
from sisr.precision import Precision
from sisr.serve.jobs import JobQueue, ModelChoice

__all__ = ["Server", "model_choices"]


def model_choices(files: list[str]) -> dict[str, ModelChoice]:
    """The shipped models and the given checkpoint or ONNX files, by name, each with its scale.

    Raises:
        SisrError: A file is missing or does not load (checked now, not when a job asks for it).
    """
    from sisr.shipped import shipped_model_info, shipped_models

    choices = {}
    for name in shipped_models():  # the scale as the file records it (names like seemore-t-x4-real)
        choices[name] = ModelChoice(name=name, scale=shipped_model_info(name).scale, shipped=True)
    for path in files:
        from sisr.onnx_model import is_onnx_path

        if is_onnx_path(path):
            from sisr.onnx_model import load_onnx_model

            scale = load_onnx_model(path).scale
        else:
            from sisr.checkpoint import load_model
            from sisr.models import scale_of

            scale = scale_of(load_model(path))
        choices[path] = ModelChoice(name=path, scale=scale, shipped=False)
    return choices


class Server:
    """The app served by uvicorn on a thread, on a socket bound at construction.

    Args:
        host: Address to bind (``127.0.0.1``: this machine only).
        port: Port (0: any free one; :attr:`url` tells which).
        models: As :func:`model_choices` returns.
        device: Where the network runs.
        precision: The precision the page selects first.
        max_pixels: Inputs with more pixels are refused from their header.
        max_upload_bytes: Larger uploads are refused before they are read.
        root: Parent of the temporary folder (None: the system's).

    Raises:
        SisrError: The address cannot be bound.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 7860,
        models: dict[str, ModelChoice],
        device: str = "cpu",
        precision: Precision = "fp32",
        max_pixels: int,
        max_upload_bytes: int,
        root: str | None = None,
    ) -> None:
        try:
            import uvicorn

            from sisr.serve.app import create_app
        except ImportError as e:
            raise SisrError(f"sisr serve needs the web extra: pip install 'sisr[web]' ({e})") from None
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind((host, port))
            self._socket.listen(64)
        except OSError as e:
            self._socket.close()
            raise SisrError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        self.port = self._socket.getsockname()[1]
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        self.url = f"http://{shown}:{self.port}/"
        self.jobs = JobQueue(
            models=models,
            device=device,
            max_pixels=max_pixels,
            max_upload_bytes=max_upload_bytes,
            root=root,
        )
        app = create_app(self.jobs, default_precision=precision)
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=5
        )
        self._server = uvicorn.Server(config)
        # An event rather than Thread.join: a join that Ctrl-C interrupts may later return too early.
        self._stopped = threading.Event()

        def serve() -> None:
            try:
                self._server.run(sockets=[self._socket])
            finally:
                self._stopped.set()

        # Off the main thread uvicorn installs no signal handlers: Ctrl-C stays the command's.
        threading.Thread(target=serve, name="sisr-serve-http", daemon=True).start()

    def wait(self, timeout: float | None = None) -> bool:
        """Waits until the server stops or `timeout` passes; True when it has stopped."""
        return self._stopped.wait(timeout)

    def close(self) -> None:
        """Stops serving, stops the running job at its next tile and removes every temporary file."""
        self._server.should_exit = True
        if self._stopped.wait(timeout=10):  # uvicorn closes the socket as it stops; never under its feet
            self._socket.close()
        self.jobs.close()
