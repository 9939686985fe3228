"""Sharded ``sisr upscale`` under torchrun: the split, and a 2-process Gloo run."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sisr.upscaling import shard_jobs

SRC = Path(__file__).resolve().parents[1] / "src"


def test_shard_jobs_round_robin_covers_every_job_once() -> None:
    jobs = [(Path(f"in/{i}.png"), Path(f"out/{i}.png")) for i in range(7)]
    for world_size in (1, 2, 3, 7, 9):
        shares = [shard_jobs(jobs, rank=r, world_size=world_size) for r in range(world_size)]
        flat = [job for share in shares for job in share]
        assert sorted(flat) == sorted(jobs)  # none twice, none skipped
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
        assert shares[0][0] == jobs[0]
    assert shard_jobs(jobs, rank=1, world_size=3) == [jobs[1], jobs[4]]
    assert shard_jobs(jobs, rank=0, world_size=1) == jobs
    with pytest.raises(ValueError):
        shard_jobs(jobs, rank=2, world_size=2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}


def _torchrun(*args: str) -> subprocess.CompletedProcess[str]:
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={_free_port()}"]
    cmd += ["--tee=3", "-m", "sisr", "upscale", *args, "-m", "seemore-t-x2"]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)


def _images(folder: Path, count: int) -> list[str]:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(folder / f"i{i}.png")
    return [f"i{i}.png" for i in range(count)]


def _lines_by_rank(stdout: str) -> dict[int, list[str]]:
    ranks: dict[int, list[str]] = {0: [], 1: []}
    for line in stdout.splitlines():
        m = re.match(r"\[default(\d)\]:(.*)", line)
        if m:
            ranks[int(m.group(1))].append(m.group(2))
    return ranks


@pytest.mark.slow
def test_two_gloo_processes_share_the_files(tmp_path: Path) -> None:
    names = _images(tmp_path / "in", 5)
    single = subprocess.run(
        [
            sys.executable,
            "-m",
            "sisr",
            "upscale",
            str(tmp_path / "in"),
            "-o",
            str(tmp_path / "one"),
            "-m",
            "seemore-t-x2",
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    proc = _torchrun(str(tmp_path / "in"), "-o", str(tmp_path / "two"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == names  # each once, no temporaries
    for name in names:
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()
    ranks = _lines_by_rank(proc.stdout)
    done = {r: [Path(line.split(" -> ")[0]).name for line in ranks[r] if " -> " in line] for r in (0, 1)}
    assert done == {0: ["i0.png", "i2.png", "i4.png"], 1: ["i1.png", "i3.png"]}
    assert "5 of 5 images upscaled by 2 processes" in ranks[0]
    assert not any("images upscaled" in line for line in ranks[1])


@pytest.mark.slow
def test_a_failure_on_one_rank_fails_every_rank(tmp_path: Path) -> None:
    # The two ranks are started by hand with torchrun's variables: torchrun itself stops the other
    # workers once one has exited non-zero, so their own exit status is not observable through it.
    _images(tmp_path / "in", 4)
    (tmp_path / "in" / "i1.png").write_bytes(b"not a png")  # rank 1's file
    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        env = {**_env(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": "2"}
        env |= {"RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2"}
        cmd = [sys.executable, "-m", "sisr", "upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out")]
        cmd += ["-m", "seemore-t-x2"]
        pipe = subprocess.PIPE
        procs.append(subprocess.Popen(cmd, env=env, stdout=pipe, stderr=pipe, text=True))
    outputs = [proc.communicate(timeout=300) for proc in procs]
    assert [proc.returncode for proc in procs] == [1, 1], outputs
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["i0.png", "i2.png", "i3.png"]
    (out0, err0), (out1, err1) = outputs
    assert "3 of 4 images upscaled by 2 processes" in out0
    assert "sisr: error: 1 of 4 images failed" in err0
    assert "i1.png" in err1 and "images" not in out1 + err1  # rank 1 reports its own file, not the total
    assert [Path(line.split(" -> ")[0]).name for line in out1.splitlines()] == ["i3.png"]
