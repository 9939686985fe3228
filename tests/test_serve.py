"""``sisr serve`` over HTTP: the queue, cancel, the limits, bad files, downloads, path traversal, cleanup.

The server runs in this process on a free port (so the network can be held back or a decoder watched),
except for the shutdown tests, which run ``python -m sisr serve`` and send it a signal.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("starlette", reason="sisr serve needs the web extra (starlette, uvicorn)")
pytest.importorskip("uvicorn", reason="sisr serve needs the web extra (starlette, uvicorn)")

from sisr.cli import main
from sisr.data.images import Image, read_image, write_image
from sisr.heldout import photo
from sisr.inference import tile_starts, upscale, upscale_tensor
from sisr.serve import Server, model_choices
from sisr.shipped import shipped_model_info, shipped_models
from sisr.upscaling import upscale_files

MODEL = "seemore-t-x2"


def png_bytes(pixels: np.ndarray, tmp_path: Path, name: str = "x.png") -> bytes:
    """The bytes sisr writes for `pixels` as PNG (8 or 16 bits)."""
    path = tmp_path / f"enc-{name}"
    write_image(path, Image(pixels=pixels if pixels.ndim == 3 else pixels[:, :, None], format="PNG"))
    return path.read_bytes()


def crop(height: int = 24, width: int = 32) -> np.ndarray:
    """A crop of a held-out photograph (scikit-image's chelsea: not in the shipped models' training set)."""
    return np.ascontiguousarray(photo("chelsea")[100 : 100 + height, 150 : 150 + width])


class Client:
    """Plain HTTP to a running server."""

    def __init__(self, port: int, server: Server | None = None) -> None:
        self.port = port
        self.server = server  # when it runs in this process

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, dict[str, str]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read(), dict(response.getheaders())
        finally:
            conn.close()

    def json(self, method: str, path: str, body: object = None) -> tuple[int, dict]:
        data = None if body is None else json.dumps(body).encode()
        status, raw, _ = self.request(method, path, data, {"Content-Type": "application/json"})
        return status, json.loads(raw)

    def job(self, files: dict[str, bytes], *, model: str = MODEL, tile: int | None = None, start=True) -> str:
        status, created = self.json("POST", "/api/jobs", {"model": model, "tile": tile})
        assert status == 200, created
        for name, data in files.items():
            status, raw, _ = self.request("PUT", f"/api/jobs/{created['id']}/files?name={name}", data)
            assert status == 200, raw
        if start:
            self.json("POST", f"/api/jobs/{created['id']}/start")
        return created["id"]

    def state(self, job: str) -> dict:
        status, state = self.json("GET", f"/api/jobs/{job}")
        assert status == 200
        return state

    def wait(self, job: str, until: tuple[str, ...] = ("done", "failed", "cancelled"), timeout=120) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            state = self.state(job)
            if state["state"] in until:
                return state
            time.sleep(0.05)
        raise AssertionError(f"job {job} still {state['state']} after {timeout} s")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(
        port=0, models=model_choices([]), max_pixels=100_000, max_upload_bytes=200_000, root=str(tmp_path)
    )
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def client(server: Server) -> Client:
    return Client(server.port, server)


class _Up(nn.Module):
    """x2 nearest neighbour with one parameter (upscale_tensor reads the device from it)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x * self.w, scale_factor=2, mode="nearest")


def test_on_tile_reports_every_tile_and_stops_where_it_raises() -> None:
    model, x = _Up(), torch.rand(1, 3, 40, 50)
    seen: list[tuple[int, int]] = []
    tiled = upscale_tensor(model, x, tile=16, overlap=4, on_tile=lambda d, t: seen.append((d, t)))
    total = seen[-1][1]
    assert total == len(tile_starts(40, 16, 4)) * len(tile_starts(50, 16, 4)) == 12
    assert seen == [(k, total) for k in range(1, total + 1)]
    assert torch.equal(tiled, upscale_tensor(model, x, tile=16, overlap=4))  # the callback changes nothing
    whole: list[tuple[int, int]] = []
    upscale(model, np.zeros((8, 8, 3), np.uint8), on_tile=lambda d, t: whole.append((d, t)))
    assert whole == [(1, 1)]

    class Stop(Exception):
        pass

    def stop(done: int, total: int) -> None:
        if done == 3:
            raise Stop

    calls = []
    with pytest.raises(Stop):
        upscale_tensor(model, x, tile=16, overlap=4, on_tile=lambda d, t: (calls.append(d), stop(d, t)))
    assert calls == [1, 2, 3]


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Holds every image at the start of its network run until the event is set."""
    import sisr.inference

    gate = threading.Event()
    real = sisr.inference.upscale_image

    def held_upscale_image(*args, **kwargs):
        assert gate.wait(60), "the test never released the job"
        return real(*args, **kwargs)

    monkeypatch.setattr(sisr.inference, "upscale_image", held_upscale_image)
    yield gate
    gate.set()


@pytest.mark.slow
def test_one_job_at_a_time_the_others_wait_in_order(client: Client, tmp_path: Path, held) -> None:
    data = png_bytes(crop(), tmp_path)
    first = client.job({"a.png": data})
    client.wait(first, until=("running",))
    second = client.job({"b.png": data})
    third = client.job({"c.png": data})
    state = client.state(second), client.state(third)
    assert [s["state"] for s in state] == ["queued", "queued"]
    assert [s["ahead"] for s in state] == [1, 2]  # the page shows "1 ahead of you", "2 ahead of you"
    time.sleep(0.3)  # nothing moves while the first job holds the model
    assert client.state(first)["state"] == "running" and client.state(second)["state"] == "queued"
    held.set()
    done = [client.wait(job) for job in (first, second, third)]
    assert [s["state"] for s in done] == ["done"] * 3
    assert [s["files"][0]["state"] for s in done] == ["done"] * 3


@pytest.mark.slow
def test_cancel_stops_at_the_next_tile_and_leaves_the_queue(client: Client, tmp_path: Path, held) -> None:
    data = png_bytes(crop(), tmp_path)
    first = client.job({"a.png": data, "b.png": data}, tile=16)
    client.wait(first, until=("running",))
    second = client.job({"c.png": data})
    third = client.job({"d.png": data})
    client.json("POST", f"/api/jobs/{second}/cancel")  # a waiting job just leaves the queue
    assert client.state(second)["state"] == "cancelled"
    assert client.state(third)["ahead"] == 1
    client.json("POST", f"/api/jobs/{first}/cancel")
    held.set()  # the first tile's callback sees the cancel
    state = client.wait(first)
    assert state["state"] == "cancelled" and state["tiles"][0] <= 1
    assert [f["state"] for f in state["files"]] == ["cancelled", "cancelled"]
    assert not any((client.server.jobs.folder / first / "out").glob("*.png"))  # nothing half written
    assert client.wait(third)["state"] == "done"  # the queue goes on


@pytest.mark.slow
def test_download_equals_upscale_files_and_keeps_16_bits(client: Client, tmp_path: Path) -> None:
    rgb8 = crop()
    rgb16 = (rgb8.astype(np.uint16) << 8) | np.random.default_rng(0).integers(0, 256, rgb8.shape, np.uint16)
    inputs = {
        "photo.png": png_bytes(rgb8, tmp_path, "8.png"),
        "deep.png": png_bytes(rgb16, tmp_path, "16.png"),
    }
    state = client.wait(client.job(inputs))
    assert state["state"] == "done", state
    reference = tmp_path / "reference"
    reference.mkdir()
    for name, data in inputs.items():
        (reference / name).write_bytes(data)
    upscale_files([str(reference / n) for n in inputs], str(tmp_path / "cli") + "/", model=MODEL)
    archive = zipfile.ZipFile(io.BytesIO(client.request("GET", f"/api/jobs/{state['id']}/zip")[1]))
    for file in state["files"]:
        status, body, headers = client.request("GET", file["download"])
        assert status == 200
        assert body == (tmp_path / "cli" / file["name"]).read_bytes()  # bit for bit
        download = file["download_name"]
        assert download == file["name"].replace(".png", "_x2.png")
        assert download in headers["content-disposition"]
        assert archive.read(download) == body
        assert file["output_size"] == [64, 48] and file["seconds"] > 0
        for kind in ("input", "result", "bicubic"):
            preview = client.request("GET", file["previews"][kind])
            assert preview[0] == 200 and preview[1].startswith(b"\x89PNG")
    assert read_image(tmp_path / "cli" / "deep.png").pixels.dtype == np.uint16
    assert sorted(archive.namelist()) == ["deep_x2.png", "photo_x2.png"]


@pytest.mark.slow
def test_bad_files_are_named_and_the_others_go_through(client: Client, tmp_path: Path) -> None:
    good = png_bytes(crop(), tmp_path)
    job = client.job({"truncated.png": good[: len(good) // 2], "good.png": good, "notes.txt": b"hello"})
    state = client.wait(job)
    files = {f["name"]: f for f in state["files"]}
    assert files["good.png"]["state"] == "done"
    truncated = files["truncated.png"]["error"]
    assert truncated.startswith("truncated.png: ") and "truncated" in truncated[15:]
    assert str(client.server.jobs.folder) not in truncated  # the name the user knows, not the temporary path
    assert files["notes.txt"]["error"].startswith("notes.txt: cannot choose an image format")
    assert "\n" not in truncated
    # A job-level failure (an unknown model) is refused with one line; the server still answers.
    status, body = client.json("POST", "/api/jobs", {"model": "/etc/passwd"})
    assert status == 400 and body["error"].startswith("unknown model '/etc/passwd'")
    assert client.request("GET", "/api/config")[0] == 200


@pytest.mark.slow
def test_oversized_inputs_are_refused_before_decoding(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sisr.data.images

    decoded: list[str] = []
    real = sisr.data.images._decode
    monkeypatch.setattr(
        sisr.data.images,
        "_decode",
        lambda im, data, name, **kw: (decoded.append(name), real(im, data, name, **kw))[1],
    )
    status, created = client.json("POST", "/api/jobs", {"model": MODEL})
    job = created["id"]
    # Too many bytes: refused from Content-Length, and from the bytes themselves when none is given.
    big = os.urandom(client.server.jobs.max_upload_bytes + 1)
    status, body, _ = client.request("PUT", f"/api/jobs/{job}/files?name=huge.png", big)
    assert status == 413 and json.loads(body)["error"].startswith("huge.png: upload is larger than the limit")
    conn = http.client.HTTPConnection("127.0.0.1", client.port, timeout=60)
    conn.request(
        "PUT", f"/api/jobs/{job}/files?name=chunked.png", body=iter([big[:150_000]] * 2), encode_chunked=True
    )
    response = conn.getresponse()
    assert response.status == 413 and b"chunked.png: upload is larger" in response.read()
    conn.close()
    assert not any((client.server.jobs.folder / job / "in").iterdir())  # nothing stored
    # Too many pixels (the fixture's limit is 100,000): refused from the header, never decoded.
    wide = np.zeros((400, 300, 3), np.uint8)
    assert len(png_bytes(wide, tmp_path)) < client.server.jobs.max_upload_bytes
    client.request("PUT", f"/api/jobs/{job}/files?name=wide.png", png_bytes(wide, tmp_path))
    client.request("PUT", f"/api/jobs/{job}/files?name=small.png", png_bytes(crop(), tmp_path))
    client.json("POST", f"/api/jobs/{job}/start")
    files = {f["name"]: f for f in client.wait(job)["files"]}
    assert files["wide.png"]["error"] == (
        "wide.png: image is 300x400 = 120000 pixels, more than the limit of 100000 (a decompression bomb?)"
    )
    assert files["small.png"]["state"] == "done"
    assert files["chunked.png"]["error"].startswith("chunked.png: upload is larger than the limit")
    assert not any(name.endswith("wide.png") for name in decoded) and decoded


@pytest.mark.slow
def test_downloads_reach_only_this_servers_results(client: Client, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-CONTENT")
    job = client.job({"../../escape.png": png_bytes(crop(), tmp_path), "..": png_bytes(crop(), tmp_path)})
    state = client.wait(job)
    names = [f["name"] for f in state["files"]]
    assert names == ["escape.png", "image"]  # the last part of the name, never "..", inside the job
    assert not (tmp_path / "escape.png").exists() and not (client.server.jobs.folder / "escape.png").exists()
    assert (client.server.jobs.folder / job / "in" / "escape.png").is_file()
    crafted = [
        "/static/../jobs.py",
        "/static/%2e%2e%2fjobs.py",
        "/static/..%2F..%2F..%2Fsecret.txt",
        "/static/index.html/../../app.py",
        f"/api/jobs/{job}/files/0/preview/..%2F..%2Fin%2Fescape.png",
        f"/api/jobs/{job}/files/..%2F0/download",
        f"/api/jobs/{job}/files/-1/download",
        f"/api/jobs/{job}/files/0x0/download",
        f"/api/jobs/{job}/files/9/download",
        "/api/jobs/..%2F..%2Fsecret.txt/files/0/download",
        f"/api/jobs/{'0' * 16}/files/0/download",
        f"/api/jobs/{job}/files/{secret}/download",
    ]
    for path in crafted:
        status, body, _ = client.request("GET", path)
        assert status == 404, (path, status)
        assert b"SECRET" not in body and b"import" not in body
    assert client.request("GET", f"/api/jobs/{job}/files/0/download")[0] == 200


def test_close_removes_every_file(tmp_path: Path) -> None:
    server = Server(
        port=0, models=model_choices([]), max_pixels=10**6, max_upload_bytes=10**6, root=str(tmp_path)
    )
    client = Client(server.port, server)
    job = client.job({"a.png": b"not yet run"}, start=False)
    assert (server.jobs.folder / job / "in" / "a.png").is_file()
    server.close()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OSError):
        client.request("GET", "/api/config")


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig, status, line", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_shutdown_removes_the_temporary_folder(tmp_path: Path, sig: int, status: int, line: str) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sisr", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        first = proc.stdout.readline()
        assert first.startswith("sisr serve: http://127.0.0.1:"), first + proc.stderr.read()
        port = int(first.split(":")[3].split("/")[0])
        client = Client(port)
        state = client.wait(client.job({"a.png": png_bytes(crop(), tmp_path)}))
        assert state["state"] == "done"
        assert [p.name[:11] for p in temp.iterdir()] == ["sisr-serve-"]
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == status, err
    assert err.strip() == f"sisr: error: {line}", err
    assert list(temp.iterdir()) == []


def test_cli_refuses_a_busy_port_and_a_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import socket

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        assert main(["serve", "--port", str(busy.getsockname()[1])]) == 1
    finally:
        busy.close()
    assert capsys.readouterr().err.startswith("sisr: error: cannot listen on 127.0.0.1:")
    assert main(["serve", "--port", "0", "--model", str(tmp_path / "missing.pth")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.pth" in err


@pytest.mark.slow
def test_an_unexpected_error_fails_its_job_only(client: Client, tmp_path: Path, monkeypatch) -> None:
    import sisr.upscaling

    real = sisr.upscaling.upscale_files
    calls = []

    def broken_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("a bug")
        return real(*args, **kwargs)

    monkeypatch.setattr(sisr.upscaling, "upscale_files", broken_once)
    data = png_bytes(crop(), tmp_path)
    failed = client.wait(client.job({"a.png": data}))
    assert failed["state"] == "failed" and failed["error"] == "internal error: ValueError: a bug"
    assert failed["files"][0]["error"] == "a.png: not upscaled: internal error: ValueError: a bug"
    assert client.wait(client.job({"b.png": data}))["state"] == "done"  # the worker goes on


def test_without_the_web_extra_one_line_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from sisr.errors import SisrError

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn raises ImportError
    with pytest.raises(SisrError, match=r"^sisr serve needs the web extra: pip install 'sisr\[web\]'"):
        Server(port=0, models={}, max_pixels=1, max_upload_bytes=1)


def test_model_files_given_at_start_are_offered(tmp_path: Path) -> None:
    import shutil

    from sisr.shipped import shipped_models

    own = tmp_path / "mine.safetensors"
    shutil.copyfile(shipped_models()[MODEL], own)
    server = Server(
        port=0, models=model_choices([str(own)]), max_pixels=10**6, max_upload_bytes=10**6, root=str(tmp_path)
    )
    try:
        status, config = Client(server.port).json("GET", "/api/config")
        assert status == 200
    finally:
        server.close()
    offered = {m["name"]: (m["scale"], m["shipped"]) for m in config["models"]}
    assert offered[str(own)] == (2, False) and offered[MODEL] == (2, True)
    assert set(offered) == {*shipped_models(), str(own)}


def test_every_shipped_model_is_offered_with_the_scale_its_file_records() -> None:
    # Names such as seemore-t-x4-real carry more than the scale after "-x".
    choices = model_choices([])
    assert set(choices) == set(shipped_models())
    for name, choice in choices.items():
        assert choice.shipped and choice.scale == shipped_model_info(name).scale
    assert choices["seemore-t-x4-real"].scale == 4
