"""``sisr serve``: a local web page to upscale and compare, over :class:`sisr.serve.Server`."""

from __future__ import annotations

import argparse

from sisr.cli.argtypes import add_inference_device_arguments, positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declares the arguments of ``sisr serve``."""
    p.description = (
        "Serve a web page that upscales images as `sisr upscale` does and shows each result beside its "
        "input, until Ctrl-C. One job runs at a time; the others wait in a queue the page shows. "
        "Everything the page needs comes from the package (no network). By default only this machine "
        "can reach it (127.0.0.1). Binding another address (--host 0.0.0.0) lets anyone who reaches that "
        "address and port use the page: upload images, run jobs on this machine's CPU or GPU and "
        "download the results of any job whose id they know; there is no login and no TLS. "
        "Needs the web extra: pip install 'sisr[web]'."
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind; anything but 127.0.0.1 or ::1 exposes the page to the network "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--port", type=int, default=7860, help="port to listen on, 0 for any free one (default: 7860)"
    )
    p.add_argument(
        "-m",
        "--model",
        nargs="+",
        action="extend",
        default=[],
        metavar="PATH",
        help="checkpoint or ONNX files offered beside the shipped models (checked at start)",
    )
    add_inference_device_arguments(p, max_pixels_note=", from their header")
    p.add_argument(
        "--max-upload-mb",
        type=positive_int,
        default=200,
        metavar="N",
        help="refuse uploaded files larger than N MB before reading them (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    """Serves until Ctrl-C or SIGTERM, then removes every temporary file."""
    from sisr.runtime import resolve_device
    from sisr.serve import Server, model_choices

    resolve_device(args.device)  # a device this machine lacks fails now, not in the first job
    server = Server(
        host=args.host,
        port=args.port,
        models=model_choices(args.model),
        device=args.device,
        precision=args.precision,
        max_pixels=args.max_pixels,
        max_upload_bytes=args.max_upload_mb * 2**20,
    )
    try:
        print(f"sisr serve: {server.url} (Ctrl-C to stop)", flush=True)
        while not server.wait(0.5):
            pass
    finally:
        server.close()
    return 0
