"""Building datasets: from a config's ``datasets`` entries, and from a benchmark folder's layout.

Both give the same two classes of :mod:`sisr.data.datasets`, so a set means the same wherever it is
named: under ``sisr train`` (the ``val`` entries), ``sisr test`` (the ``val`` / ``test`` entries) and
``sisr evaluate`` (folders).

- A ``train`` entry gives random patches: :class:`~sisr.data.datasets.PairedImageDataset` for
  ``PairedImageDataset``, :class:`~sisr.data.datasets.GTOnlyDataset` (LR made on the fly, MMA's ImageNet
  pretraining) for ``ImageNetPairedDataset`` / ``GTOnlyDataset``.
- A ``val`` or ``test`` entry gives whole images of the same classes; a GT-only entry then gets the LR
  images the benchmark files hold (MATLAB bicubic, rounded to 8 bits), and its folder is not scanned
  recursively.
- A benchmark folder is recognised by :func:`find_benchmark` from the layouts in
  :data:`BENCHMARK_LAYOUTS`, or taken as HR images alone, whose LR images are made on the fly.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sisr.data.datasets import GTOnlyDataset, PairedImageDataset, format_problems
from sisr.errors import SisrError

if TYPE_CHECKING:
    from sisr.config import Config, DatasetConfig

__all__ = ["BENCHMARK_LAYOUTS", "Phase", "dataset_from_config", "datasets_from_config", "find_benchmark"]

Phase = Literal["train", "val", "test"]

# Benchmark layouts, tried in this order: (HR folder, LR folder, LR file stem for an HR stem), with {s}
# the scale and {{}} the HR stem. A layout whose HR folder exists but not its LR folder is HR-only.
BENCHMARK_LAYOUTS: tuple[tuple[str, str, str], ...] = (
    ("HR", "LR_bicubic/X{s}", "{{}}x{s}"),  # EDSR / DIV2K naming: Set5/LR_bicubic/X4/babyx4.png
    ("GTmod12", "LRbicx{s}", "{{}}"),  # BasicSR's benchmark pack: Set5/LRbicx4/baby.png
)


def dataset_from_config(entry: DatasetConfig, *, phase: Phase) -> PairedImageDataset | GTOnlyDataset:
    """The dataset of one resolved ``datasets`` entry (see the module docstring).

    Args:
        entry: A resolved entry (``scale`` filled in by :func:`sisr.config.load_config`).
        phase: ``"train"`` for random patches, ``"val"`` / ``"test"`` for whole images.

    Raises:
        SisrError: As the dataset's constructor (missing folders, unpaired or mismatched images, ...).
    """
    assert entry.scale is not None and entry.dataroot_gt is not None
    train = phase == "train"  # random patches, flips and enlargement are for training only
    paired = entry.type == "PairedImageDataset" and entry.degradation is None
    if paired and entry.dataroot_lq is None:
        raise SisrError(f"{entry.type} needs dataroot_lq (or use GTOnlyDataset to make the LR images)")
    assert not train or entry.gt_size is not None
    gt_size = entry.gt_size if train else None
    use_hflip, use_rot = train and bool(entry.use_hflip), train and bool(entry.use_rot)
    enlarge_ratio = (entry.dataset_enlarge_ratio or 1) if train else 1
    if paired:
        assert entry.dataroot_lq is not None
        return PairedImageDataset(
            gt_root=entry.dataroot_gt,
            lq_root=entry.dataroot_lq,
            scale=entry.scale,
            filename_tmpl=entry.filename_tmpl or "{}",
            meta_info_file=entry.meta_info_file,
            gt_size=gt_size,
            use_hflip=use_hflip,
            use_rot=use_rot,
            io_backend=entry.io_backend.type,
            enlarge_ratio=enlarge_ratio,
            name=entry.name,
        )
    return GTOnlyDataset(
        gt_root=entry.dataroot_gt,
        scale=entry.scale,
        gt_size=gt_size,
        use_hflip=use_hflip,
        use_rot=use_rot,
        meta_info_file=entry.meta_info_file,
        io_backend=entry.io_backend.type,
        enlarge_ratio=enlarge_ratio,
        # ImageNet's class folders; a benchmark folder, or the GT folder of a paired set, is flat.
        recursive=train and entry.type != "PairedImageDataset",
        degradation=entry.degradation if train else None,
        name=entry.name,
    )


def datasets_from_config(
    config: Config, *, phases: Collection[Phase]
) -> dict[str, PairedImageDataset | GTOnlyDataset]:
    """The datasets of a config's entries in ``phases``, by entry key (``train``, ``val_1``, ...).

    Every entry is built before anything is reported, and all their problems raise one error.

    Args:
        config: A resolved config (:func:`sisr.config.load_config`).
        phases: The phases to build, e.g. ``("val",)`` for the validation sets.

    Returns:
        ``{key: dataset}`` in the config's order; each dataset's ``name`` is the entry's ``name``.

    Raises:
        SisrError: Naming the entry (``datasets.val_1: ...``) of every dataset that cannot be built.
    """
    built: dict[str, PairedImageDataset | GTOnlyDataset] = {}
    problems = []
    for key, entry in config.datasets.items():
        assert entry.phase is not None
        if entry.phase not in phases:
            continue
        try:
            built[key] = dataset_from_config(entry, phase=entry.phase)
        except SisrError as e:
            problems.append(f"datasets.{key}: {e}")
    if len(problems) == 1:
        raise SisrError(problems[0])
    if problems:
        raise SisrError(format_problems(f"{len(problems)} datasets cannot be used", problems))
    return built


def find_benchmark(root: str | os.PathLike[str], scale: int) -> PairedImageDataset | GTOnlyDataset:
    """The benchmark set in a folder, recognised by its layout (:data:`BENCHMARK_LAYOUTS`).

    ``ROOT/HR`` with ``ROOT/LR_bicubic/X{s}/{name}x{s}.png``, or ``ROOT/GTmod12`` with
    ``ROOT/LRbicx{s}/{name}.png``, give a :class:`~sisr.data.datasets.PairedImageDataset`; HR images
    alone (in ``ROOT/HR``, ``ROOT/GTmod12`` or ``ROOT`` itself) give a
    :class:`~sisr.data.datasets.GTOnlyDataset` whose LR images are made as the published ones were.
    The set is named after ``ROOT`` (after its parent when ``ROOT`` is the ``HR`` / ``GTmod12`` folder).

    Raises:
        SisrError: The folder does not exist or holds no images, the names do not pair up, or the sizes
            of a pair do not match the scale.
    """
    base = Path(root)
    if not base.is_dir():
        raise SisrError(f"{base}: no such folder")
    name = base.resolve().name
    if name in {gt for gt, _, _ in BENCHMARK_LAYOUTS}:  # the HR folder itself: name the set after its parent
        name = base.resolve().parent.name or name
    for gt_dir, lq_dir, template in BENCHMARK_LAYOUTS:
        gt_root, lq_root = base / gt_dir, base / lq_dir.format(s=scale)
        if not gt_root.is_dir():
            continue
        if lq_root.is_dir():
            return PairedImageDataset(
                gt_root=gt_root,
                lq_root=lq_root,
                scale=scale,
                filename_tmpl=template.format(s=scale),
                name=name,
            )
        return GTOnlyDataset(gt_root=gt_root, scale=scale, gt_size=None, recursive=False, name=name)
    return GTOnlyDataset(gt_root=base, scale=scale, gt_size=None, recursive=False, name=name)
