"""Benchmark evaluation exactly as the SR papers measure it (``sisr evaluate`` and ``sisr test``).

The protocol is BasicSR's ``SRModel.validation``, which MMA and SeemoRe report:

1. the network runs on the whole LR image (or in tiles, optionally with the x8 self-ensemble);
2. its output is clamped to ``[0, 1]`` and quantised like BasicSR's ``tensor2img``: ``round(x * 255)``
   in float32, half to even, to uint8; the GT becomes uint8 the same way (exact for 8-bit files);
3. the GT is cropped to the output's size (a GT a few pixels larger than ``scale`` times its LR loses its
   bottom rows / right columns, the usual mod-crop);
4. PSNR / SSIM (:mod:`sisr.metrics`) after removing ``crop_border`` pixels (default: the scale) from
   every edge, on the BT.601 luma by default; the dataset's number is the mean over its images.

Images are grouped into batches of equal LR size (sorted by size when the sizes are known up front), and
every image is scored on its own, so the numbers do not depend on the batch size. With
``torch.distributed`` initialised, ranks take every ``world``-th image and the per-image values are
gathered, so every rank returns exactly the numbers one process would.

Benchmark folders are found in their usual layouts (:func:`sisr.data.build.find_benchmark`): ``Set5/HR``
with ``Set5/LR_bicubic/X4/{name}x4.png`` (EDSR / DIV2K naming), or BasicSR's ``Set5/GTmod12`` with
``Set5/LRbicx4``. A folder with HR images only gets its LR images made on the fly
(:func:`sisr.imresize.bicubic_lr`: mod-crop, MATLAB bicubic, rounded like MATLAB's ``im2uint8``, what the
published LR files hold). The sets are the datasets the configs build (:mod:`sisr.data.datasets`).

Nothing finished is lost to a bad image: :func:`find_benchmarks` / :func:`check_datasets` decode every
image of every set before the first forward pass and report all problems in one error, and
:func:`evaluate_datasets` keeps the results of the sets that finished when a later one fails.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from sisr.data.build import find_benchmark
from sisr.data.datasets import format_problems
from sisr.errors import SisrError
from sisr.precision import Precision, check_model_precision

if TYPE_CHECKING:
    from sisr.config import Config

__all__ = [
    "Failure",
    "MetricSpec",
    "check_datasets",
    "dataset_name",
    "evaluate_benchmarks",
    "evaluate_config",
    "evaluate_dataset",
    "evaluate_datasets",
    "find_benchmark",
    "find_benchmarks",
    "format_results",
    "raise_failures",
    "save_dir_of",
]

MetricKind = Literal["psnr", "ssim"]
Format = Literal["text", "markdown", "json"]


@dataclass(frozen=True)
class MetricSpec:
    """One metric to compute: its kind and the protocol's settings.

    Attributes:
        kind: ``"psnr"`` or ``"ssim"``.
        crop_border: Pixels removed from each edge; None means the scale.
        y_channel: Score the BT.601 luma only.
    """

    kind: MetricKind
    crop_border: int | None = None
    y_channel: bool = True


# ---------------------------------------------------------------------------------------------------------
# Benchmark folders


def dataset_name(dataset: Dataset) -> str:
    """A set's name in reports: its ``name`` attribute, or its class's name."""
    return getattr(dataset, "name", None) or type(dataset).__name__


def check_datasets(datasets: Sequence[Dataset], *, found: Sequence[str] = ()) -> None:
    """Decodes every image of every set, before any forward pass, and reports every problem at once.

    Decoding (not only the headers) finds truncated and corrupt files too; it costs one more read of the
    images, little beside running a network on them. Datasets without ``problems()`` (your own) are not
    checked.

    Args:
        datasets: The sets to check, e.g. from :func:`find_benchmarks` or
            :func:`~sisr.data.build.datasets_from_config`.
        found: Problems met earlier (e.g. folders that could not be recognised), reported with these.

    Raises:
        SisrError: One line listing the problems (the first ten, and how many more), each naming its set
            and file: size mismatches, images smaller than the scale, unreadable files.
    """
    problems = list(found)
    for dataset in datasets:
        check = getattr(dataset, "problems", None)
        if check is not None:
            problems += [f"{dataset_name(dataset)}: {p}" for p in check(decode=True)]
    if problems:
        n = len(problems)
        raise SisrError(
            format_problems(f"{n} problem{'s' * (n > 1)} in the test sets, nothing was run", problems)
        )


def find_benchmarks(roots: Sequence[str | os.PathLike[str]], scale: int) -> list[Dataset]:
    """:func:`~sisr.data.build.find_benchmark` for every folder, every image checked before any work.

    Sets that would share a name are named by their folder as given instead.

    Raises:
        SisrError: One line listing every problem of every folder (see :func:`check_datasets`).
    """
    found: list[tuple[str, Dataset]] = []
    problems = []
    for root in roots:
        try:
            found.append((str(root), find_benchmark(root, scale)))
        except SisrError as e:
            problems.append(str(e))
    names = [dataset_name(d) for _, d in found]
    for root, dataset in found:
        if names.count(dataset_name(dataset)) > 1:
            dataset.name = root  # type: ignore[attr-defined]
    datasets = [d for _, d in found]
    check_datasets(datasets, found=problems)
    return datasets


# ---------------------------------------------------------------------------------------------------------
# Evaluation


def _self_ensemble(run: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Mean of the 8 flip/transpose views' outputs, each mapped back (the "+" results of the papers)."""
    outputs = []
    for k in range(8):
        hflip, vflip, transpose = bool(k & 1), bool(k & 2), bool(k & 4)
        view = x
        if hflip:
            view = view.flip(-1)
        if vflip:
            view = view.flip(-2)
        if transpose:
            view = view.transpose(-2, -1)
        y = run(view.contiguous())
        # Undo in reverse order.
        if transpose:
            y = y.transpose(-2, -1)
        if vflip:
            y = y.flip(-2)
        if hflip:
            y = y.flip(-1)
        outputs.append(y.float())
    return torch.stack(outputs).mean(dim=0)


def _to_uint8(x: Tensor) -> Tensor:
    """BasicSR's ``tensor2img``: clamp to [0, 1], ``round(x * 255)`` in float32 (half to even), uint8."""
    return x.float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)


def _resolve_metrics(
    metrics: Sequence[str] | Mapping[str, MetricSpec], crop_border: int | None, y_channel: bool, scale: int
) -> dict[str, MetricSpec]:
    if isinstance(metrics, Mapping):
        specs = dict(metrics)
    else:
        specs = {}
        for kind in metrics:
            if kind not in ("psnr", "ssim"):
                raise SisrError(f"unknown metric {kind!r}; known: psnr, ssim")
            specs[kind] = MetricSpec(kind=kind, crop_border=crop_border, y_channel=y_channel)  # type: ignore[arg-type]
    resolved = {}
    for name, spec in specs.items():
        border = scale if spec.crop_border is None else spec.crop_border
        if border < 0:
            raise SisrError(f"metric {name}: crop_border must be >= 0, got {border}")
        resolved[name] = MetricSpec(kind=spec.kind, crop_border=border, y_channel=spec.y_channel)
    return resolved


def _score(sr: np.ndarray, gt: np.ndarray, specs: Mapping[str, MetricSpec]) -> dict[str, float]:
    from sisr.metrics import psnr, ssim

    functions = {"psnr": psnr, "ssim": ssim}
    return {
        name: functions[spec.kind](sr, gt, crop_border=int(spec.crop_border or 0), y_channel=spec.y_channel)
        for name, spec in specs.items()
    }


def _batches(dataset: Dataset, indices: list[int], batch_size: int) -> list[list[int]]:
    """Groups indices into batches of equal LR size, sorted by size when the dataset tells sizes."""
    if batch_size == 1:
        return [[i] for i in indices]
    lq_size = getattr(dataset, "lq_size", None)
    if lq_size is None:
        # Sizes unknown until loaded: only runs of consecutive equal sizes are batched (the loop below).
        return [indices]
    groups: dict[tuple[int, int], list[int]] = {}
    for i in indices:
        groups.setdefault(tuple(lq_size(i)), []).append(i)
    batches = []
    for size in sorted(groups):
        members = groups[size]
        batches += [members[k : k + batch_size] for k in range(0, len(members), batch_size)]
    return batches


def evaluate_dataset(
    model: nn.Module,
    dataset: Dataset,
    *,
    scale: int,
    crop_border: int | None = None,
    y_channel: bool = True,
    metrics: Sequence[str] | Mapping[str, MetricSpec] = ("psnr", "ssim"),
    batch_size: int = 1,
    self_ensemble: bool = False,
    tile: int | None = None,
    overlap: int | None = None,
    save_dir: str | os.PathLike[str] | None = None,
    save_suffix: str | None = None,
    distributed: bool = False,
    name: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    precision: Precision = "fp32",
) -> dict[str, Any]:
    """Super-resolves every image of a dataset and scores it by the papers' protocol.

    Args:
        model: Maps (B, 3, h, w) in [0, 1] to (B, 3, scale*h, scale*w); call ``.eval()`` first.
        dataset: Whole-image samples ``{"lq", "gt"}`` (``(3, h, w)`` / ``(3, H, W)`` floats in [0, 1])
            and ``"gt_path"`` or ``"lq_path"`` naming the image, e.g. from :func:`find_benchmark`:
            :class:`~sisr.data.datasets.PairedImageDataset` or
            :class:`~sisr.data.datasets.GTOnlyDataset` with ``gt_size=None``. A
            ``lq_size(index)`` method, if present, lets images of equal size be batched together
            whatever their order.
        scale: Upscaling factor of the model.
        crop_border: Border removed before scoring; None means ``scale``.
        y_channel: Score the BT.601 luma only (as the papers do).
        metrics: Metric kinds (``"psnr"``, ``"ssim"``) with the settings above, or named
            :class:`MetricSpec` entries with their own settings.
        batch_size: Images of equal LR size run together, up to this many; the numbers do not change.
        self_ensemble: Average the outputs of the 8 flips/transposes (mapped back).
        tile: Run in overlapping tiles of this size (input pixels); None runs whole images.
        overlap: Tile overlap; None means ``min(16, tile // 2)``.
        save_dir: Write every SR image as PNG here, ``{name}_{save_suffix}.png`` or ``{name}.png``.
        save_suffix: See ``save_dir``.
        distributed: Share the images among the ranks of the initialised ``torch.distributed`` group;
            every rank returns the complete, identical result.
        name: The dataset's name for the report; by default ``dataset.name`` or the class name.
        progress: Called as ``progress(done, total)`` after every batch (this rank's images).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (see :func:`sisr.inference.upscale_tensor`).

    Returns:
        ``{"dataset", "images", "scale", "self_ensemble", "metrics": {name: mean}, "settings":
        {name: {"kind", "crop_border", "y_channel"}}, "per_image": [{"name", <metric>: value}, ...]}``,
        ``per_image`` in the dataset's order.

    Raises:
        SisrError: Bad options, an empty dataset, or an output whose size is not ``scale`` times its input.
    """
    from sisr.data.images import write_image
    from sisr.inference import upscale_tensor

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SisrError(f"batch_size must be a positive integer, got {batch_size!r}")
    check_model_precision(model, precision)
    specs = _resolve_metrics(metrics, crop_border, y_channel, scale)
    if overlap is None:
        overlap = 16 if tile is None else min(16, tile // 2)
    total = len(dataset)  # type: ignore[arg-type]
    if total == 0:
        raise SisrError("the dataset holds no images")
    rank, world = 0, 1
    if distributed and torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    mine = list(range(rank, total, world))
    out_dir = None if save_dir is None else Path(save_dir)
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SisrError(f"{out_dir}: cannot create folder: {e.strerror or e}") from None

    def run(x: Tensor) -> Tensor:
        return upscale_tensor(model, x, tile=tile, overlap=overlap, precision=precision)

    def forward(x: Tensor) -> Tensor:
        return _self_ensemble(run, x) if self_ensemble else run(x)

    scores: dict[int, dict[str, Any]] = {}

    def finish(batch: list[tuple[int, dict[str, Any]]]) -> None:
        lq = torch.stack([sample["lq"] for _, sample in batch])  # (B, 3, h, w)
        with torch.inference_mode():
            sr = _to_uint8(forward(lq))  # (B, 3, s*h, s*w)
        if sr.shape[-2:] != (scale * lq.shape[-2], scale * lq.shape[-1]):
            raise SisrError(
                f"the model turned a {lq.shape[-2]}x{lq.shape[-1]} input into {sr.shape[-2]}x{sr.shape[-1]}, "
                f"not x{scale}"
            )
        for (index, sample), sr_one in zip(batch, sr, strict=True):
            label = _image_name(sample)
            # Contiguous (H, W, 3) uint8, as an image file reads: numpy's sums depend on the layout in
            # their last bits, and the numbers should equal sisr.metrics on the images as saved.
            sr_img = np.ascontiguousarray(sr_one.permute(1, 2, 0).cpu().numpy())
            gt_img = _to_uint8(sample["gt"]).permute(1, 2, 0).numpy()
            height, width = sr_img.shape[:2]
            if gt_img.shape[0] < height or gt_img.shape[1] < width:
                raise SisrError(
                    f"{label}: GT is {gt_img.shape[0]}x{gt_img.shape[1]}, smaller than {height}x{width}"
                )
            values = _score(sr_img, np.ascontiguousarray(gt_img[:height, :width]), specs)
            scores[index] = {"name": label, **values}
            if out_dir is not None:
                file_name = f"{label}_{save_suffix}.png" if save_suffix else f"{label}.png"
                write_image(out_dir / file_name, sr_img)

    done = 0
    for group in _batches(dataset, mine, batch_size):
        pending: list[tuple[int, dict[str, Any]]] = []
        for index in group:
            sample = dataset[index]
            if pending and (pending[0][1]["lq"].shape != sample["lq"].shape or len(pending) == batch_size):
                finish(pending)
                done += len(pending)
                pending = []
                if progress is not None:
                    progress(done, len(mine))
            pending.append((index, sample))
        if pending:
            finish(pending)
            done += len(pending)
            if progress is not None:
                progress(done, len(mine))

    if world > 1:
        gathered: list[Any] = [None] * world
        torch.distributed.all_gather_object(gathered, scores)
        scores = {k: v for part in gathered for k, v in part.items()}
    per_image = [scores[i] for i in range(total)]
    # Means in dataset order, so a distributed run sums in the same order as a single process.
    means = {key: math.fsum(entry[key] for entry in per_image) / total for key in specs}
    return {
        "dataset": name or dataset_name(dataset),
        "images": total,
        "scale": scale,
        "self_ensemble": self_ensemble,
        "metrics": means,
        "settings": {key: asdict(spec) for key, spec in specs.items()},
        "per_image": per_image,
    }


def _image_name(sample: Mapping[str, Any]) -> str:
    if "name" in sample:
        return str(sample["name"])
    path = sample.get("gt_path") or sample.get("lq_path")
    return Path(str(path)).stem if path else "image"


@dataclass(frozen=True)
class Failure:
    """A set that failed while it was evaluated (the other sets' results are kept).

    Attributes:
        dataset: The set's name.
        message: The one-line error.
    """

    dataset: str
    message: str


def evaluate_datasets(
    datasets: Sequence[Dataset], evaluate: Callable[[Dataset], dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[Failure]]:
    """Evaluates every set in turn; a set that fails does not lose the others, which still run.

    Check the sets first (:func:`check_datasets`, which :func:`find_benchmarks` runs): what can still fail
    here is what only running shows, e.g. a model that does not scale by ``scale`` or runs out of memory.

    Args:
        datasets: The sets.
        evaluate: Scores one set, e.g. ``lambda d: evaluate_dataset(model, d, scale=4)``.

    Returns:
        ``(results, failures)``: the results of the sets that finished, in order, each with ``"lr"``
        (``"files"``, or ``"bicubic on the fly"`` for a set that makes its LR images), and the sets that
        failed, each named as the results name it.
    """
    results, failures = [], []
    for dataset in datasets:
        try:
            result = evaluate(dataset)
        except (SisrError, RuntimeError) as e:  # RuntimeError: torch's, e.g. out of memory
            failures.append(Failure(dataset=dataset_name(dataset), message=" ".join(str(e).split())))
            continue
        result["lr"] = "bicubic on the fly" if getattr(dataset, "generates_lr", False) else "files"
        results.append(result)
    return results, failures


def save_dir_of(root: str | os.PathLike[str] | None, dataset: Dataset) -> Path | None:
    """Where a set's SR images go under ``root`` (``root/<set name>``), or None without ``root``."""
    return None if root is None else Path(root) / dataset_name(dataset)


def raise_failures(failures: Sequence[Failure], *, finished: int) -> None:
    """Raises one line naming the failed sets (after their finished neighbours have been reported).

    Raises:
        SisrError: If ``failures`` is not empty.
    """
    if failures:
        shown = format_problems(
            f"{len(failures)} set{'s' * (len(failures) > 1)} failed ({finished} finished and reported)",
            [f"{f.dataset}: {f.message}" for f in failures],
        )
        raise SisrError(shown)


# ---------------------------------------------------------------------------------------------------------
# Reports


def _label(name: str, settings: Mapping[str, Any]) -> str:
    base = {"psnr": "PSNR", "ssim": "SSIM"}.get(settings.get("kind", ""), name)
    if name not in ("psnr", "ssim") and name.upper() != base:
        base = name
    return f"{base}-Y" if settings.get("y_channel") else base


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "inf": identical images; strict JSON has no infinity
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def format_results(results: Sequence[Mapping[str, Any]], fmt: Format = "text") -> str:
    """Formats results of :func:`evaluate_dataset` as a table, one row per dataset.

    Args:
        results: One result per dataset.
        fmt: ``"text"`` (aligned columns for a terminal), ``"markdown"`` (a pipe table) or ``"json"``
            (everything, including the per-image values; infinities as the string ``"inf"``).

    Returns:
        The text, ending with a newline.
    """
    if fmt == "json":
        return json.dumps(_json_safe(list(results)), indent=2) + "\n"
    if fmt not in ("text", "markdown"):
        raise SisrError(f"unknown format {fmt!r}; use text, markdown or json")
    keys: list[str] = []
    settings: dict[str, Any] = {}
    for result in results:
        for key, value in result["settings"].items():
            if key not in settings:
                keys.append(key)
                settings[key] = value
    header = ["dataset", "images", *(_label(k, settings[k]) for k in keys)]
    rows = []
    for result in results:
        name = str(result["dataset"]) + ("+" if result.get("self_ensemble") else "")
        cells = [name, str(result["images"])]
        for key in keys:
            value = result["metrics"].get(key)
            digits = 2 if settings[key].get("kind") == "psnr" else 4
            cells.append("-" if value is None else f"{value:.{digits + 2}f}")
        rows.append(cells)
    if fmt == "markdown":
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + "|".join(["---", "---:", *["---:"] * len(keys)]) + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines) + "\n"
    widths = [max(len(row[c]) for row in [header, *rows]) for c in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(cell.rjust(w) for cell, w in zip(cells[1:], widths[1:], strict=True))])

    return "\n".join([line(header), *(line(row) for row in rows)]) + "\n"


def _progress_printer(name: str) -> Callable[[int, int], None] | None:
    """``[name] done/total`` on one updated stderr line, when stderr is a terminal."""
    import sys

    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        end = "\n" if done == total else ""
        sys.stderr.write(f"\r\033[K[{name}] {done}/{total}{end}")
        sys.stderr.flush()

    return show


def _write_text(path: str, text: str) -> None:
    from sisr.checkpoint import atomic_write

    def write(tmp: str) -> None:
        Path(tmp).write_text(text, encoding="utf-8")

    try:
        atomic_write(path, write)
    except OSError as e:
        raise SisrError(f"{path}: cannot write: {e.strerror or e}") from None


# ---------------------------------------------------------------------------------------------------------
# sisr evaluate


def evaluate_benchmarks(
    weights: str,
    data: Sequence[str | os.PathLike[str]],
    *,
    expect_scale: int | None = None,
    crop_border: int | None = None,
    y_channel: bool = True,
    batch_size: int = 1,
    self_ensemble: bool = False,
    tile: int | None = None,
    device: str = "cpu",
    precision: Precision = "fp32",
    save_dir: str | os.PathLike[str] | None = None,
    json_path: str | os.PathLike[str] | None = None,
    markdown_path: str | os.PathLike[str] | None = None,
) -> list[dict[str, Any]]:
    """Scores a model on benchmark folders and prints the table (what ``sisr evaluate`` does).

    Args:
        weights: A checkpoint file or a shipped model's name.
        data: Benchmark folders (see :func:`find_benchmark`); all are checked before any work.
        expect_scale: Refuse a model of another scale; None takes the model's.
        crop_border: Pixels removed from every edge before scoring; None: the scale.
        y_channel: Score the BT.601 luma (the papers' protocol) rather than RGB.
        batch_size: Images of equal size run together; the numbers do not change.
        self_ensemble: Average the outputs of the 8 flips/rotations.
        tile: Tile size in LR pixels, or None for whole images.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (see :mod:`sisr.precision`).
        save_dir: Write SR images to ``save_dir/<set>/<name>.png``.
        json_path: Also write all numbers as JSON there.
        markdown_path: Also write the table as Markdown there.

    Returns:
        One result of :func:`evaluate_dataset` per folder, with ``"lr"`` telling where its LR came from.

    Raises:
        SisrError: A bad model, folder or option.
    """
    from sisr.checkpoint import load_model
    from sisr.models import scale_of

    model = load_model(weights, device=device)
    scale = scale_of(model)
    if expect_scale is not None and expect_scale != scale:
        raise SisrError(f"--scale {expect_scale}: the model {weights} is x{scale}")
    check_model_precision(model, precision)  # before the folders are read
    folders = find_benchmarks(data, scale)  # every image of every set checked before any work
    for folder in folders:
        if getattr(folder, "generates_lr", False):
            print(
                f"note: {folder.name}: no LR images for x{scale}; made from HR with MATLAB bicubic",
                flush=True,
            )
    results, failures = evaluate_datasets(
        folders,
        lambda folder: evaluate_dataset(
            model,
            folder,
            scale=scale,
            crop_border=crop_border,
            y_channel=y_channel,
            batch_size=batch_size,
            self_ensemble=self_ensemble,
            tile=tile,
            precision=precision,
            save_dir=save_dir_of(save_dir, folder),
            progress=_progress_printer(dataset_name(folder)),
        ),
    )
    print(format_results(results, "text"), end="", flush=True)
    if json_path is not None:
        _write_text(json_path, format_results(results, "json"))
    if markdown_path is not None:
        _write_text(markdown_path, format_results(results, "markdown"))
    raise_failures(failures, finished=len(results))
    return results


# ---------------------------------------------------------------------------------------------------------
# sisr test


def _load_for_config(config: Any, device: str) -> nn.Module:
    """Builds ``network_g`` and loads ``path.pretrain_network_g`` into it, refusing a mismatch."""
    from sisr.checkpoint import detect, model_from_weights, read_weights
    from sisr.runtime import resolve_device

    dev = resolve_device(device)
    path = config.path.pretrain_network_g
    if path is None:
        raise SisrError("path.pretrain_network_g: unset (~); set it to the weights to test")
    # BasicSR's param_key_g (default "params") selects an entry of a .pth; a safetensors file has one set.
    param_key = None if str(path).endswith(".safetensors") else config.path.param_key_g
    weights = read_weights(path, param_key=param_key)
    arch, seen = detect(weights.state_dict)
    want = config.network_g
    if arch != want.arch:
        raise SisrError(f"path.pretrain_network_g: {path} holds {arch} weights, but network_g is {want.arch}")
    differ = [
        f"{k}={seen[k]!r} (network_g: {want.args[k]!r})"
        for k in seen
        if k in want.args and seen[k] != want.args[k]
    ]
    if differ:
        raise SisrError(
            f"path.pretrain_network_g: {path} does not match network_g: it has {', '.join(differ)}"
        )
    try:
        model = model_from_weights(weights, overrides=want.args)
    except SisrError as e:
        raise SisrError(f"path.pretrain_network_g: {path}: {e}") from None
    return model.to(dev).eval()


def evaluate_config(
    config: Config,
    *,
    batch_size: int = 1,
    self_ensemble: bool = False,
    tile: int | None = None,
    device: str = "cpu",
    precision: Precision = "fp32",
) -> list[dict[str, Any]]:
    """Scores ``network_g`` with ``path.pretrain_network_g`` on a config's val/test datasets, with the
    metrics of ``val.metrics``, and prints the table (what ``sisr test`` does).

    Args:
        config: A loaded config (:func:`sisr.config.load_config`).
        batch_size: Images of equal size run together; the numbers do not change.
        self_ensemble: Average the outputs of the 8 flips/rotations (also on with ``val.self_ensemble``).
        tile: Tile size in LR pixels, or None for whole images.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (see :mod:`sisr.precision`).

    Returns:
        One result of :func:`evaluate_dataset` per dataset.

    Raises:
        SisrError: A config that cannot test, or weights that do not match ``network_g``.
    """
    import sys

    from sisr.config import validate_for_testing
    from sisr.data.build import datasets_from_config

    for warning in validate_for_testing(config):
        print(f"sisr: warning: {warning}", file=sys.stderr, flush=True)
    model = _load_for_config(config, device)
    check_model_precision(model, precision)  # before the datasets are read
    scale = config.scale
    val = config.val
    specs: dict[str, MetricSpec] = {}
    if val is not None and val.metrics:
        for metric_name, metric in val.metrics.items():
            specs[metric_name] = MetricSpec(
                kind=metric.kind, crop_border=metric.crop_border, y_channel=metric.test_y_channel
            )
    self_ensemble = self_ensemble or (val is not None and val.self_ensemble)
    save_root = None
    suffix = None
    if val is not None and val.save_img:
        root = config.path.results_root or os.path.join("results", config.name)
        save_root = Path(root) / "visualization"
        suffix = val.suffix or config.name
    datasets = list(datasets_from_config(config, phases=("val", "test")).values())
    check_datasets(datasets)  # every image decoded before any work
    results, failures = evaluate_datasets(
        datasets,
        lambda dataset: evaluate_dataset(
            model,
            dataset,
            scale=scale,
            metrics=specs,
            batch_size=batch_size,
            self_ensemble=self_ensemble,
            tile=tile,
            precision=precision,
            save_dir=save_dir_of(save_root, dataset),
            save_suffix=suffix,
            progress=_progress_printer(dataset_name(dataset)),
        ),
    )
    print(format_results(results, "text"), end="", flush=True)
    raise_failures(failures, finished=len(results))
    return results
