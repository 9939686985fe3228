"""Builds the offline training set of sisr's shipped models from photographs in Debian packages.

**This script downloads Debian packages with ``apt-get download`` and must never run in CI** (it
refuses to start when the environment variable ``CI`` is set). It is a one-off, documented recipe for
the training data of the default SeemoRe / MMA checkpoints, run by hand on a Debian machine; the data
it writes is not committed.

No data set can be downloaded where the default models are trained, but Debian's desktop wallpaper
packages hold high-resolution photographs under free licenses. The steps:

1. ``apt-get download`` each package (default: ``gnome-backgrounds``, ``plasma-workspace-wallpapers``,
   ``mate-backgrounds``) into ``WORK/debs`` and unpack it with ``dpkg -x`` (nothing is installed).
   The package version comes from ``dpkg-deb -f``. Licenses and copyright holders are read per image
   from ``usr/share/doc/<package>/copyright`` when it is machine-readable (DEP-5: the last ``Files``
   paragraph matching the image wins; patterns are matched against every tail of the installed path,
   since the file lists use source paths), and, for Plasma wallpapers, from the wallpaper's
   ``metadata.json`` (``KPlugin.License`` / ``KPlugin.Authors``), which is more specific than the
   package-wide ``Files: *`` paragraph and is used as *the* license when present.
2. Candidates: every ``.jpg`` / ``.jpeg`` / ``.png`` / ``.webp`` under ``usr/share`` except
   documentation, Plasma's ``screenshot.*`` previews and symbolic links (Plasma links every screen size
   to one real file); SVGs are skipped. Several sizes of the same
   picture (Plasma's ``contents/images/<W>x<H>.jpg``, MATE's ``Name_<W>x<H>.jpg``) are grouped and only
   the largest is considered; Plasma's ``images_dark`` variants are separate pictures.
3. Only photographs are kept. :func:`image_features` measures, on a copy whose long side is at most
   1024 px (box filter), the fraction of *flat* pixels (largest difference to the right and lower
   neighbour of the luma below 0.5 grey levels), the number of distinct colours at 6 bits per channel
   and the median absolute Laplacian of the luma. :func:`classify` drops an image as an illustration
   when more than 30 % of its pixels are flat (renders have exact gradients and flat areas; photographs
   have sensor noise and texture everywhere), when it has fewer than 32 colours (solid or two-tone
   backgrounds), or when the median Laplacian exceeds 30 (icon mosaics, pixel art and synthetic noise).
   The thresholds were set by looking at contact sheets of all candidates. No simple statistic
   separates painted or grain-added renders from smooth photographs, so the remaining mistakes are
   fixed by the committed lists :data:`ALLOW` and :data:`DENY` (by wallpaper name), each entry with the
   reason.
4. Each kept photograph is converted to RGB and, if its short side exceeds ``--max-short-side``
   (default 1440), shrunk with Pillow's antialiased LANCZOS filter so that the short side equals it:
   wallpapers are JPEG-compressed, and downscaling attenuates the compression artifacts and noise that
   the models would otherwise learn to reproduce (the photographs kept from the default packages are
   1280x1024 to 2560x1920, so most are shrunk by 1.11x only; the 5120x2880 renders would shrink 2x).
   The result is written as ``OUT/hr/<package>_<name>.png``; ``OUT/contact_kept.png`` and
   ``OUT/contact_dropped.png`` show thumbnails of both sets for checking by eye.
5. :func:`sisr.prepare.extract_subimages` cuts ``OUT/hr`` into ``OUT/hr_sub`` (480x480, step 240, the
   DF2K recipe of BasicSR), and :func:`sisr.prepare.make_lr` writes MATLAB-bicubic LR versions of every
   sub-image to ``OUT/lr_sub/X2``, ``X3`` and ``X4`` (``<name>_s001x2.png``; read them with
   ``filename_tmpl="{}x2"``). The LR tiles are the exact bicubic downscale of their HR tile (480 is
   divisible by 2, 3 and 4), so every pair is consistent.
6. Most sub-images of wallpapers are smooth (sky, water, out-of-focus backgrounds): bicubic already
   restores them to 45 dB and more, and a network learns little from them. :func:`hard_subimages` ranks
   the sub-images by the PSNR-Y of their ×4 bicubic reconstruction (LR upscaled back with MATLAB bicubic)
   and ``OUT/meta_info_hard.txt`` lists the hardest ``--hard-fraction`` of them (default 0.3), a
   BasicSR meta-info file for the ``meta_info_file`` key of a training set: patch sampling by difficulty,
   as in SamplingAug (Wang et al., 2021), at the level of sub-images.
7. ``OUT/manifest.json`` lists every candidate: package, version, path inside the package, license,
   copyright holders (from the copyright file and the upstream metadata), size, the features, kept or
   dropped and why, and the output name. ``OUT/licenses/<package>.copyright`` keeps each package's
   copyright file next to the data.

Usage (about 20 minutes on one core with the defaults; 210 MB of .deb files, 430 MB of work files and
1.3 GB of output; only ``apt-get download``, no root needed). ``--workers N`` cuts the sub-images and
makes the LR images in N processes:

    python scripts/build_trainset.py --work /tmp/trainset-work --out datasets/trainset2 --workers 2

**Carrying it elsewhere** (a GPU machine that reaches no package registry). ``--pack BUILT --out PACK``
writes the kept photographs of a built set (its ``hr/<stem>.png``, not the ``_scale`` copies) as
``PACK/<stem>.jpg``, JPEG at ``--quality`` (default 95) with no chroma subsampling, beside its
``manifest.json`` (with a ``packed`` entry) and ``licenses/``: 31 MiB for the default set, against
229 MB of PNG. ``--from-photos PACK --out OUT`` then runs steps 4 to 7 from the pack, with no download
(so it may run in CI): the ``_scale`` copies, the sub-images, the LR images (``--lr-scales``, default
2 3 4; 4 ranks the sub-images), the ranking by difficulty (in ``--workers`` processes too) and the
manifest, whose description says that the photographs went
through the pack's JPEG. That set differs from the original by the pack's compression only:

    python scripts/build_trainset.py --pack datasets/trainset2 --out datasets/trainset2-photos
    python scripts/build_trainset.py --from-photos datasets/trainset2-photos --out OUT --workers 12

(``--work WORK --out OUT --photos-only`` stops after ``OUT/hr`` and the manifest, which is all that
``--pack`` reads: the quick way to a pack on a fresh machine.) Every photograph and manifest is written
to a temporary name and renamed (:func:`sisr.atomic.atomic_write`), and a pack's manifest comes last,
so an interrupted run leaves no partial file and no pack that looks finished.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

DEFAULT_PACKAGES = (
    "gnome-backgrounds",
    "plasma-workspace-wallpapers",
    "mate-backgrounds",
    "ukui-wallpapers",
    "lomiri-wallpapers-16.04",
    "lomiri-wallpapers-20.04",
)
# Extra copies of every kept photograph at these fractions of its size (Real-ESRGAN's multi-scale DF2K):
# shrinking packs more detail into each pixel, closer to the photographs users upscale.
DEFAULT_SCALES = (0.75, 0.5)
LR_SCALES = (2, 3, 4)  # the MATLAB-bicubic LR sub-images written to lr_sub/X<s>
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
DESCRIPTION = "sisr default-model training set: photographs from Debian wallpaper packages"
# --pack's JPEG quality (4:4:4): the 36 photographs of the default packages take 31 MiB, which fits in
# what the device tool carries beside the repository (64 MiB in all); as PNG they take 229 MB.
PACK_QUALITY = 95

# Thresholds of :func:`classify` (see the module docstring).
MAX_FLAT_FRACTION = 0.30
MIN_COLOURS = 32
MAX_MEDIAN_LAPLACIAN = 30.0
FEATURE_SIZE = 1024

# Wallpaper names (Plasma: the folder under usr/share/wallpapers; others: the file stem without a
# _<W>x<H> size suffix) whose heuristic verdict is wrong, judged by eye on contact sheets.
ALLOW: dict[str, str] = {
    "Grey": "black-and-white architecture photograph; large smooth facade areas look flat",
    "FreshFlower": "macro photograph of a flower; the out-of-focus background looks flat",
}
DENY: dict[str, str] = {
    "Autumn": "painted illustration (low-poly tree and girl)",
    "Honeywave": "abstract render with added grain",
    "SafeLanding": "textured illustration (rocket, hills)",
    "Shell": "abstract render (polygonal shell)",
    "Volna": "abstract render (stylised beach and wave)",
    "licorice-d": "3D render of tiles",
    "licorice-l": "3D render of tiles",
    "wood-d": "3D render of wooden slats",
    "wood-l": "3D render of wooden slats",
    "Elephants": "painting",
    "string": "abstract 3D render (ribbons)",
    "analogpattern_by_Peter_Nerlich": "abstract light-leak texture with film grain",
}

_SIZE_SUFFIX = re.compile(r"_?\d+x\d+$")
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


# ----------------------------------------------------------------------------------------------------
# Debian packages and their copyright files
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Package:
    """An unpacked Debian package.

    Attributes:
        name: Package name.
        version: Debian version.
        root: Folder where it was unpacked with ``dpkg -x``.
        copyright_text: ``usr/share/doc/<name>/copyright`` (empty if missing).
    """

    name: str
    version: str
    root: Path
    copyright_text: str


@dataclass(frozen=True)
class FilesParagraph:
    """A ``Files`` paragraph of a DEP-5 copyright file.

    Attributes:
        patterns: The ``Files`` patterns (``*`` matches any characters including ``/``, ``?`` one).
        copyright: Copyright holders, one per line as written.
        license: The license short name (first line of the ``License`` field).
    """

    patterns: tuple[str, ...]
    copyright: tuple[str, ...]
    license: str


def parse_dep5(text: str) -> list[FilesParagraph] | None:
    """Parses the ``Files`` paragraphs of a machine-readable (DEP-5) Debian copyright file.

    Args:
        text: The copyright file.

    Returns:
        The paragraphs in file order, or None if the file is not in DEP-5 format (no ``Format:`` field
        in its first paragraph).
    """
    paragraphs = re.split(r"\n[ \t]*\n", text.strip("\n"))
    if not paragraphs or not re.search(r"^Format:", paragraphs[0], flags=re.MULTILINE):
        return None
    result = []
    for para in paragraphs:
        fields: dict[str, list[str]] = {}
        current: str | None = None
        for line in para.splitlines():
            if line[:1] in (" ", "\t") and current is not None:
                fields[current].append(line.strip())  # continuation line
            elif ":" in line:
                key, value = line.split(":", 1)
                current = key.strip().lower()
                fields[current] = [value.strip()] if value.strip() else []
        if "files" not in fields:
            continue
        patterns = tuple(p for line in fields["files"] for p in line.split())
        holders = tuple(line for line in fields.get("copyright", []) if line != ".")
        license_lines = fields.get("license", [])
        result.append(FilesParagraph(patterns, holders, license_lines[0] if license_lines else ""))
    return result


def _dep5_match(pattern: str, path: str) -> bool:
    # DEP-5 wildcards: "*" matches any string including "/", "?" one character; nothing else special.
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, path, flags=re.DOTALL) is not None


def dep5_lookup(paragraphs: Sequence[FilesParagraph], installed_path: str) -> FilesParagraph | None:
    """The ``Files`` paragraph that applies to an installed file (the last matching one, as in DEP-5).

    Copyright files list paths in the *source* tree (``nature/Aqua.jpg``) while the file is installed
    elsewhere (``usr/share/backgrounds/mate/nature/Aqua.jpg``), so a pattern matches when it matches the
    whole installed path or any of its tails that start after a ``/``. When nothing matches that way, a
    pattern without wildcards whose file name is the installed file's name matches (Lomiri lists
    ``16.04/Bridge.jpg`` and installs ``usr/share/backgrounds/Bridge.jpg``: the source folder is dropped).
    ``debian/*`` paragraphs, which describe the packaging, are ignored.

    Args:
        paragraphs: From :func:`parse_dep5`.
        installed_path: Path inside the package, ``/``-separated, without a leading ``/``.

    Returns:
        The paragraph, or None if none matches.
    """
    parts = installed_path.strip("/").split("/")
    tails = ["/".join(parts[i:]) for i in range(len(parts))]
    found = None
    for para in paragraphs:
        patterns = [p for p in para.patterns if not p.startswith("debian/")]
        if any(_dep5_match(p, tail) for p in patterns for tail in tails):
            found = para
    if found is None:
        for para in paragraphs:
            names = [p.rsplit("/", 1)[-1] for p in para.patterns if not p.startswith("debian/")]
            if any(n == parts[-1] and "*" not in n and "?" not in n for n in names):
                found = para
    return found


def download_packages(names: Sequence[str], work_dir: Path) -> list[Package]:
    """Downloads (``apt-get download``) and unpacks (``dpkg -x``) Debian packages; installs nothing.

    Args:
        names: Package names.
        work_dir: ``debs/`` and ``unpacked/<name>/`` are created here; existing .deb files are reused.

    Returns:
        The unpacked packages.
    """
    debs = work_dir / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    result = []
    for name in names:
        found = sorted(debs.glob(f"{name}_*.deb"))
        if not found:
            subprocess.run(["apt-get", "download", name], cwd=debs, check=True)
            found = sorted(debs.glob(f"{name}_*.deb"))
        if len(found) != 1:
            raise RuntimeError(f"expected one {name}_*.deb in {debs}, found {[p.name for p in found]}")
        deb = found[0]
        version = subprocess.run(
            ["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True, text=True
        ).stdout.strip()
        root = work_dir / "unpacked" / name
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
        copyright_file = root / "usr" / "share" / "doc" / name / "copyright"
        text = copyright_file.read_text(encoding="utf-8") if copyright_file.is_file() else ""
        result.append(Package(name, version, root, text))
    return result


# ----------------------------------------------------------------------------------------------------
# Candidates
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """The largest version of one picture in a package.

    Attributes:
        path: Path inside the package (``usr/share/...``).
        name: Wallpaper name used by :data:`ALLOW` / :data:`DENY` and the output file name.
        group: Other sizes of the same picture that were left out (paths inside the package).
    """

    path: str
    name: str
    group: tuple[str, ...] = ()


def wallpaper_name(path: str) -> str:
    """The picture's name: Plasma's wallpaper folder (plus ``_dark``), else the stem without a size.

    >>> wallpaper_name("usr/share/wallpapers/Kay/contents/images_dark/5120x2880.png")
    'Kay_dark'
    >>> wallpaper_name("usr/share/backgrounds/mate/abstract/Elephants_3840x2160.jpg")
    'Elephants'
    """
    parts = path.split("/")
    if "contents" in parts and parts.index("contents") >= 1:
        i = parts.index("contents")
        variant = parts[i + 1] if i + 1 < len(parts) - 1 else "images"
        return parts[i - 1] + ("_dark" if variant == "images_dark" else "")
    stem = Path(path).stem
    return _SIZE_SUFFIX.sub("", stem) or stem


def _pixels(image_path: Path) -> int:
    with Image.open(image_path) as im:
        return im.width * im.height


def collect_candidates(package: Package) -> tuple[list[Candidate], list[tuple[str, str]]]:
    """The pictures of a package: the largest readable size of each, and the files left out.

    Returns:
        ``(candidates, unreadable)``: candidates sorted by path; ``(path, reason)`` for image files that
        Pillow cannot open.
    """
    groups: dict[tuple[str, str], list[tuple[int, str]]] = {}
    unreadable = []
    for file in sorted(package.root.rglob("*")):
        rel = file.relative_to(package.root).as_posix()
        if (
            file.is_symlink()  # Plasma links every screen size to the one real file
            or not file.is_file()
            or file.suffix.lower() not in IMAGE_SUFFIXES
            or not rel.startswith("usr/share/")
            or rel.startswith("usr/share/doc/")
            or file.stem == "screenshot"
        ):
            continue
        try:
            pixels = _pixels(file)
        except Exception as e:  # Pillow raises many types for unknown or damaged files
            unreadable.append((rel, f"unreadable by Pillow: {type(e).__name__}"))
            continue
        name = wallpaper_name(rel)
        parts = rel.split("/")
        # Plasma: one group per wallpaper folder and variant; elsewhere: per folder and size-less stem.
        folder = "/".join(parts[: parts.index("contents")]) if "contents" in parts else str(Path(rel).parent)
        groups.setdefault((folder, name), []).append((pixels, rel))
    candidates = []
    for (_, name), members in groups.items():
        members.sort(reverse=True)
        candidates.append(Candidate(members[0][1], name, tuple(m[1] for m in members[1:])))
    return sorted(candidates, key=lambda c: c.path), unreadable


@dataclass(frozen=True)
class UpstreamMetadata:
    """License and authors from a Plasma wallpaper's ``metadata.json`` (``KPlugin`` section).

    Attributes:
        license: ``KPlugin.License`` as written (e.g. ``LGPLv3``, ``CC-BY-SA-4.0``).
        authors: ``Name <Email>`` of each entry of ``KPlugin.Authors``.
        title: ``KPlugin.Name``.
    """

    license: str
    authors: tuple[str, ...]
    title: str


def plasma_metadata(package_root: Path, path: str) -> UpstreamMetadata | None:
    """The ``metadata.json`` of the Plasma wallpaper that holds ``path``, or None for other files."""
    parts = path.split("/")
    if "contents" not in parts:
        return None
    meta = package_root.joinpath(*parts[: parts.index("contents")], "metadata.json")
    if not meta.is_file():
        return None
    plugin = json.loads(meta.read_text(encoding="utf-8")).get("KPlugin", {})
    authors = tuple(
        a.get("Name", "") + (f" <{a['Email']}>" if a.get("Email") else "") for a in plugin.get("Authors", [])
    )
    return UpstreamMetadata(str(plugin.get("License", "")), authors, str(plugin.get("Name", "")))


# ----------------------------------------------------------------------------------------------------
# Photograph or illustration
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Features:
    """Image statistics used by :func:`classify` (measured at most 1024 px on the long side).

    Attributes:
        flat_fraction: Fraction of pixels whose luma differs by less than 0.5 grey levels (0-255) from
            both its right and its lower neighbour.
        colours: Distinct colours after keeping the top 6 bits of each channel.
        median_laplacian: Median absolute 4-neighbour Laplacian of the luma.
    """

    flat_fraction: float
    colours: int
    median_laplacian: float


def image_features(image: Image.Image, *, size: int = FEATURE_SIZE) -> Features:
    """Measures :class:`Features` of an image (any mode; converted to RGB, shrunk with a box filter).

    Args:
        image: The image.
        size: Longest side of the copy that is measured.

    Returns:
        The features.
    """
    rgb = image.convert("RGB")
    scale = size / max(rgb.size)
    if scale < 1:
        new_size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb = rgb.resize(new_size, Image.Resampling.BOX)
    pixels = np.asarray(rgb)
    luma = pixels.astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # (H, W)
    if min(luma.shape) < 3:
        raise ValueError(f"image of {rgb.width}x{rgb.height} is too small to measure")
    dx = np.abs(np.diff(luma, axis=1))[:-1, :]  # (H-1, W-1)
    dy = np.abs(np.diff(luma, axis=0))[:, :-1]
    flat = float((np.maximum(dx, dy) < 0.5).mean())
    q = (pixels >> 2).astype(np.int64)  # 6 bits per channel
    colours = int(np.unique((q[..., 0] << 12) | (q[..., 1] << 6) | q[..., 2]).size)
    laplacian = 4 * luma[1:-1, 1:-1] - luma[:-2, 1:-1] - luma[2:, 1:-1] - luma[1:-1, :-2] - luma[1:-1, 2:]
    return Features(flat, colours, float(np.median(np.abs(laplacian))))


def classify(features: Features, name: str = "") -> tuple[bool, str]:
    """Decides whether an image is kept as a photograph.

    Args:
        features: From :func:`image_features`.
        name: Wallpaper name, looked up in :data:`ALLOW` and :data:`DENY` first.

    Returns:
        ``(keep, reason)``.
    """
    if name in ALLOW:
        return True, f"allow list: {ALLOW[name]}"
    if name in DENY:
        return False, f"deny list: {DENY[name]}"
    if features.flat_fraction > MAX_FLAT_FRACTION:
        return False, f"illustration: {features.flat_fraction:.0%} flat pixels > {MAX_FLAT_FRACTION:.0%}"
    if features.colours < MIN_COLOURS:
        return False, f"illustration: {features.colours} colours < {MIN_COLOURS}"
    if features.median_laplacian > MAX_MEDIAN_LAPLACIAN:
        return False, f"synthetic texture: median |Laplacian| {features.median_laplacian:.1f} > 30"
    return True, "photograph: passes the flat-area, colour and texture tests"


# ----------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------


def output_stem(package: str, name: str) -> str:
    """File stem of a kept photograph, e.g. ``plasma-workspace-wallpapers`` + ``Path`` -> ``plasma_Path``.

    The stem never ends in ``x<digits>`` (which :func:`sisr.prepare.extract_subimages` would strip).
    """
    short = package.split("-")[0]
    stem = _NAME_UNSAFE.sub("_", f"{short}_{name}").strip("_")
    return stem + "_" if re.search(r"x\d+$", stem) else stem


def shrink(image: Image.Image, max_short_side: int) -> Image.Image:
    """RGB copy whose short side is at most ``max_short_side`` (Pillow LANCZOS, antialiased)."""
    rgb = image.convert("RGB")
    short = min(rgb.size)
    if short <= max_short_side:
        return rgb
    scale = max_short_side / short
    # The short side becomes exactly max_short_side; the long side is rounded.
    if rgb.width <= rgb.height:
        size = (max_short_side, round(rgb.height * scale))
    else:
        size = (round(rgb.width * scale), max_short_side)
    return rgb.resize(size, Image.Resampling.LANCZOS)


def scaled_copies(
    image: Image.Image, stem: str, scales: Sequence[float], *, min_side: int
) -> list[tuple[str, Image.Image]]:
    """``image`` shrunk by each of ``scales`` (Pillow LANCZOS), named ``<stem>_scale<percent>.png``.

    Copies whose short side would fall below ``min_side`` (the sub-image size) are left out.
    """
    copies = []
    for scale in scales:
        size = (round(image.width * scale), round(image.height * scale))
        if min(size) >= min_side:
            name = f"{stem}_scale{round(scale * 100):03d}.png"
            copies.append((name, image.resize(size, Image.Resampling.LANCZOS)))
    return copies


def write_hr(
    image: Image.Image, hr_dir: Path, stem: str, scales: Sequence[float], *, min_side: int
) -> list[str]:
    """Writes ``hr_dir/<stem>.png`` and its :func:`scaled_copies`; returns the copies' ``hr/<name>`` paths."""
    from sisr.atomic import atomic_write

    def save(name: str, picture: Image.Image) -> None:
        atomic_write(hr_dir / name, lambda tmp: picture.save(tmp, format="PNG", compress_level=3))

    save(f"{stem}.png", image)
    written = []
    for name, copy in scaled_copies(image, stem, scales, min_side=min_side):
        save(name, copy)
        written.append(f"hr/{name}")
    return written


def _thumbnail(image: Image.Image, size: tuple[int, int] = (240, 150)) -> Image.Image:
    thumb = image.convert("RGB")
    thumb.thumbnail(size, Image.Resampling.BOX)
    return thumb


def contact_sheet(
    items: Sequence[tuple[Image.Image, str]], *, columns: int = 6, cell: tuple[int, int] = (240, 150)
) -> Image.Image:
    """A white sheet of labelled thumbnails, ``columns`` per row (label above each thumbnail).

    Args:
        items: ``(image, label)`` pairs; images are shrunk to fit ``cell``.
        columns: Thumbnails per row.
        cell: Thumbnail box (width, height).

    Returns:
        The RGB sheet (at least one empty cell).
    """
    from PIL import ImageDraw

    label_height = 14
    rows = max(1, -(-len(items) // columns))
    sheet = Image.new("RGB", (columns * cell[0], rows * (cell[1] + label_height)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (image, label) in enumerate(items):
        x, y = (i % columns) * cell[0], (i // columns) * (cell[1] + label_height)
        thumb = image.convert("RGB")
        thumb.thumbnail(cell, Image.Resampling.BOX)
        sheet.paste(thumb, (x, y + label_height))
        draw.text((x + 2, y + 1), label[:38], fill="black")
    return sheet


@dataclass
class Record:
    """One candidate in ``manifest.json`` (see the module docstring)."""

    package: str
    version: str
    path: str
    name: str
    kept: bool
    reason: str
    width: int = 0
    height: int = 0
    licensing: Licensing | None = None
    features: Features | None = None
    other_sizes: list[str] = field(default_factory=list)
    output: str | None = None
    hr_size: list[int] | None = None
    scaled_outputs: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Licensing:
    """Who holds the copyright of an image and under which license.

    Attributes:
        license: The upstream metadata's license when there is one, else the Debian copyright file's.
        copyright: The upstream authors when known, else the Debian copyright holders.
        debian_copyright_license: From ``usr/share/doc/<package>/copyright``.
        debian_copyright_holders: From the same file.
        upstream_metadata: The Plasma ``metadata.json`` fields, if any.
    """

    license: str
    copyright: tuple[str, ...]
    debian_copyright_license: str
    debian_copyright_holders: tuple[str, ...]
    upstream_metadata: UpstreamMetadata | None


def licensing(package: Package, path: str) -> Licensing:
    """The :class:`Licensing` of the file ``path`` (inside the package) of an unpacked package."""
    dep5 = parse_dep5(package.copyright_text)
    para = dep5_lookup(dep5, path) if dep5 is not None else None
    if para is not None:
        deb_license, deb_holders = para.license, para.copyright
    elif dep5 is None:
        deb_license, deb_holders = f"unknown: not machine-readable, see licenses/{package.name}.copyright", ()
    else:
        deb_license, deb_holders = "unknown: no Files paragraph matches", ()
    meta = plasma_metadata(package.root, path)
    return Licensing(
        license=meta.license if meta and meta.license else deb_license,
        copyright=meta.authors if meta and meta.authors else deb_holders,
        debian_copyright_license=deb_license,
        debian_copyright_holders=deb_holders,
        upstream_metadata=meta,
    )


def build(
    *,
    packages: Sequence[str],
    work: Path,
    out: Path,
    max_short_side: int,
    scales: Sequence[float],
    crop_size: int,
    step: int,
    hard_fraction: float,
    workers: int = 1,
    photos_only: bool = False,
    lr_scales: Sequence[int] = LR_SCALES,
) -> dict[str, object]:
    """Runs the whole pipeline (see the module docstring).

    Args:
        packages: Debian packages to download.
        work: Folder for the .deb files and the unpacked packages.
        out: Output folder; its ``hr``, ``hr_sub`` and ``lr_sub`` folders are replaced.
        max_short_side: Short side of the HR images after shrinking.
        scales: Fractions of the shrunk size at which each photograph is written again
            (``<stem>_scale050.png`` for 0.5), skipped where the short side would fall below ``crop_size``.
        crop_size: Sub-image side.
        step: Sub-image step.
        hard_fraction: Share of the sub-images listed in ``meta_info_hard.txt``.
        workers: Processes for the sub-images and the LR images (`sisr prepare`'s pools).
        photos_only: Stop after ``out/hr`` and the manifest (steps 1 to 4 and 7), enough for
            :func:`pack`: no sub-images, LR images or ranking, whose counts the manifest then lacks.
        lr_scales: The scales of the LR sub-images (4 among them).

    Returns:
        The manifest, also written to ``out/manifest.json``.
    """
    unpacked = download_packages(packages, work)
    hr_dir = out / "hr"
    for sub in ("hr", "hr_sub", "lr_sub"):
        shutil.rmtree(out / sub, ignore_errors=True)
    hr_dir.mkdir(parents=True)
    (out / "licenses").mkdir(exist_ok=True)

    records: list[Record] = []
    thumbs: dict[bool, list[tuple[Image.Image, str]]] = {True: [], False: []}
    for package in unpacked:
        (out / "licenses" / f"{package.name}.copyright").write_text(package.copyright_text, encoding="utf-8")
        candidates, unreadable = collect_candidates(package)
        for path, reason in unreadable:
            name = wallpaper_name(path)
            records.append(Record(package.name, package.version, path, name, kept=False, reason=reason))
        for cand in candidates:
            with Image.open(package.root / cand.path) as im:
                im.load()
                features = image_features(im)
                keep, reason = classify(features, cand.name)
                record = Record(
                    package.name,
                    package.version,
                    cand.path,
                    cand.name,
                    kept=keep,
                    reason=reason,
                    width=im.width,
                    height=im.height,
                    features=features,
                    other_sizes=list(cand.group),
                    licensing=licensing(package, cand.path),
                )
                if keep:
                    stem = output_stem(package.name, cand.name)
                    hr = shrink(im, max_short_side)
                    record.output = f"hr/{stem}.png"
                    record.hr_size = [hr.width, hr.height]
                    record.scaled_outputs = write_hr(hr, hr_dir, stem, scales, min_side=crop_size)
                thumbs[keep].append((_thumbnail(im), f"{package.name[:6]}:{cand.name}"))
            records.append(record)
            print(f"{'keep' if keep else 'drop'} {package.name}:{cand.path}  {reason}", flush=True)

    # Contact sheets, to check the photograph / illustration split by eye.
    contact_sheet(thumbs[True]).save(out / "contact_kept.png")
    contact_sheet(thumbs[False]).save(out / "contact_dropped.png")
    kept = [r for r in records if r.kept]
    manifest: dict[str, object] = {
        "description": DESCRIPTION,
        "script": "scripts/build_trainset.py",
        "packages": {p.name: p.version for p in unpacked},
        "max_short_side": max_short_side,
        "scales": list(scales),
        "crop_size": crop_size,
        "step": step,
        "kept": len(kept),
        "dropped": len(records) - len(kept),
        **(
            {}
            if photos_only
            else subimages_and_lr(
                out,
                crop_size=crop_size,
                step=step,
                hard_fraction=hard_fraction,
                workers=workers,
                lr_scales=lr_scales,
            )
        ),
        "licenses": sorted({r.licensing.license for r in kept if r.licensing is not None}),
        "images": [asdict(r) for r in records],
    }
    _write_manifest(out / "manifest.json", manifest)
    return manifest


def subimages_and_lr(
    out: Path,
    *,
    crop_size: int,
    step: int,
    hard_fraction: float,
    workers: int,
    lr_scales: Sequence[int] = LR_SCALES,
) -> dict[str, object]:
    """Steps 5 and 6 on ``out/hr``: ``hr_sub``, ``lr_sub/X<s>`` and ``meta_info_hard.txt``.

    ``lr_scales`` must hold 4, the scale of the ranking by difficulty.

    Returns:
        The manifest's entries for them: ``subimages``, ``hard_fraction``, ``hard_subimages``,
        ``hard_max_bicubic_psnr_x4`` and ``lr_images``.
    """
    from sisr.prepare import extract_subimages, make_lr

    if 4 not in lr_scales:
        raise ValueError(f"the LR scales {list(lr_scales)} lack 4, which ranks the sub-images by difficulty")
    sub = extract_subimages(out / "hr", out / "hr_sub", crop_size=crop_size, step=step, workers=workers)
    lr = make_lr(out / "hr_sub", out / "lr_sub", list(lr_scales), workers=workers)
    hard = hard_subimages(
        out / "hr_sub", out / "lr_sub" / "X4", scale=4, fraction=hard_fraction, workers=workers
    )
    write_meta_info(out / "meta_info_hard.txt", [n for n, _ in hard], crop_size)
    return {
        "subimages": sub.written,
        "hard_fraction": hard_fraction,
        "hard_subimages": len(hard),
        "hard_max_bicubic_psnr_x4": max(score for _, score in hard),
        "lr_images": lr.written,
        "lr_scales": list(lr_scales),
    }


def _write_manifest(path: Path, manifest: dict[str, object]) -> None:
    from sisr.atomic import atomic_write

    text = json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _kept_records(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    # The kept photographs' records by output stem (hr/<stem>.png), in the manifest's order.
    return {Path(r["output"]).stem: r for r in manifest["images"] if r["kept"] and r.get("output")}


def pack(built: Path, dest: Path, *, quality: int = PACK_QUALITY) -> dict[str, object]:
    """Packs a built training set's photographs small enough to carry (``--pack``).

    Writes ``dest/<stem>.jpg`` for every kept photograph, from ``built/hr/<stem>.png`` (the shrunk
    photograph, not its ``_scale`` copies, which :func:`build_from_photos` makes again), as JPEG at
    ``quality`` without chroma subsampling, and ``dest/manifest.json`` (``built``'s, with a ``packed``
    entry) and ``dest/licenses``.

    Args:
        built: A folder that :func:`build` wrote.
        dest: The pack's folder; made if absent, its ``.jpg`` files replaced.
        quality: JPEG quality.

    Returns:
        The pack's manifest.
    """
    from sisr.atomic import atomic_write

    manifest = json.loads((built / "manifest.json").read_text(encoding="utf-8"))
    dest.mkdir(parents=True, exist_ok=True)
    # The manifest goes first and comes back last: a pack cut short has none, and --from-photos refuses it.
    (dest / "manifest.json").unlink(missing_ok=True)
    for old in dest.glob("*.jpg"):
        old.unlink()
    stems = list(_kept_records(manifest))
    for stem in stems:
        with Image.open(built / "hr" / f"{stem}.png") as im:
            rgb = im.convert("RGB")
        atomic_write(
            dest / f"{stem}.jpg",
            lambda tmp, rgb=rgb: rgb.save(tmp, format="JPEG", quality=quality, subsampling=0),
        )
    manifest["packed"] = {
        "photographs": len(stems),
        "format": "JPEG",
        "quality": quality,
        "subsampling": "4:4:4",
    }
    shutil.copytree(built / "licenses", dest / "licenses", dirs_exist_ok=True)
    _write_manifest(dest / "manifest.json", manifest)
    return manifest


def build_from_photos(
    photos: Path,
    out: Path,
    *,
    scales: Sequence[float] | None,
    crop_size: int,
    step: int,
    hard_fraction: float,
    workers: int = 1,
    lr_scales: Sequence[int] = LR_SCALES,
) -> dict[str, object]:
    """Builds the training set from a :func:`pack` (``--from-photos``): steps 4 to 7, no download.

    Each packed photograph is decoded and written as ``out/hr/<stem>.png`` with its ``_scale`` copies
    (Pillow LANCZOS, as :func:`build`), then :func:`subimages_and_lr` runs. The manifest is the pack's,
    its description saying that the photographs went through the pack's JPEG, with the new counts.

    Args:
        photos: The pack's folder.
        out: Output folder; its ``hr``, ``hr_sub`` and ``lr_sub`` folders are replaced.
        scales: Fractions for the extra copies; None for the pack's own (its manifest's ``scales``).
        crop_size: Sub-image side.
        step: Sub-image step.
        hard_fraction: Share of the sub-images listed in ``meta_info_hard.txt``.
        workers: Processes for the sub-images, the LR images and the ranking by difficulty.
        lr_scales: The scales of the LR sub-images (4 among them).

    Returns:
        The manifest, also written to ``out/manifest.json``.
    """
    manifest = json.loads((photos / "manifest.json").read_text(encoding="utf-8"))
    packed = manifest.get("packed")
    if not isinstance(packed, dict):
        raise ValueError(f"{photos / 'manifest.json'} is not a pack's manifest (no 'packed' entry)")
    scales = list(manifest["scales"] if scales is None else scales)
    for sub in ("hr", "hr_sub", "lr_sub"):
        shutil.rmtree(out / sub, ignore_errors=True)
    (out / "hr").mkdir(parents=True)
    for stem, record in _kept_records(manifest).items():
        with Image.open(photos / f"{stem}.jpg") as im:
            hr = im.convert("RGB")
        record["scaled_outputs"] = write_hr(hr, out / "hr", stem, scales, min_side=crop_size)
    manifest.update(
        description=f"{DESCRIPTION}, built from a pack of JPEG q{packed['quality']} photographs",
        scales=scales,
        crop_size=crop_size,
        step=step,
        **subimages_and_lr(
            out,
            crop_size=crop_size,
            step=step,
            hard_fraction=hard_fraction,
            workers=workers,
            lr_scales=lr_scales,
        ),
    )
    if (photos / "licenses").is_dir():
        shutil.copytree(photos / "licenses", out / "licenses", dirs_exist_ok=True)
    _write_manifest(out / "manifest.json", manifest)
    return manifest


def bicubic_psnr(hr_path: Path, lr_path: Path, scale: int) -> float:
    """PSNR-Y (border ``scale``) of the MATLAB-bicubic upscaling of an LR image against its HR image."""
    from sisr.imresize import imresize
    from sisr.metrics import psnr

    hr = np.asarray(Image.open(hr_path).convert("RGB"))
    lr = np.asarray(Image.open(lr_path).convert("RGB"), dtype=np.float32) / 255.0
    up = np.clip(np.round(imresize(lr, float(scale)) * 255.0), 0, 255).astype(np.uint8)
    return psnr(up, hr, crop_border=scale, y_channel=True)


def _bicubic_psnr_job(job: tuple[Path, Path, int]) -> float:
    return bicubic_psnr(*job)


def hard_subimages(
    hr_sub: Path, lr_dir: Path, *, scale: int, fraction: float, workers: int = 1
) -> list[tuple[str, float]]:
    """The hardest ``fraction`` of the sub-images: those bicubic restores worst.

    Args:
        hr_sub: Folder of HR sub-images (``<name>.png``).
        lr_dir: Folder of their LR versions at ``scale`` (``<name>x<scale>.png``).
        scale: The scale of ``lr_dir``.
        fraction: Share of the sub-images to keep, in (0, 1].
        workers: Processes that score the sub-images.

    Returns:
        (file name, bicubic PSNR-Y) of the kept sub-images, sorted by name; ties at the cut keep the
        earlier name.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    names = sorted(p.name for p in hr_sub.glob("*.png"))
    from sisr.prepare import run_jobs

    jobs = [(hr_sub / n, lr_dir / f"{n[:-4]}x{scale}.png", scale) for n in names]
    scores = list(zip(run_jobs(_bicubic_psnr_job, jobs, workers), names, strict=True))
    keep = sorted(scores)[: max(1, round(fraction * len(scores)))]
    return sorted((n, score) for score, n in keep)


def write_meta_info(path: Path, names: Sequence[str], size: int) -> None:
    """A BasicSR meta-info file: ``<name> (<size>,<size>,3)`` per line."""
    path.write_text("".join(f"{n} ({size},{size},3)\n" for n in names), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; refuses to download when ``CI`` is set."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--work", help="download and build: work folder for .deb files and unpacked packages")
    mode.add_argument(
        "--pack", metavar="BUILT", help="write BUILT's photographs to --out as JPEG (no download)"
    )
    mode.add_argument(
        "--from-photos", metavar="PACK", help="build the training set from a --pack folder (no download)"
    )
    parser.add_argument(
        "--out",
        required=True,
        help="output folder (hr/, hr_sub/, lr_sub/X*/, manifest.json; with --pack, the pack)",
    )
    parser.add_argument("--packages", nargs="+", default=list(DEFAULT_PACKAGES), help="Debian packages")
    parser.add_argument(
        "--max-short-side", type=int, default=1440, help="shrink HR images to this short side"
    )
    parser.add_argument(
        "--scales",
        type=float,
        nargs="*",
        default=None,
        help="also write every photograph at these fractions of its size (default: 0.75 0.5; with "
        "--from-photos, the pack's)",
    )
    parser.add_argument(
        "--hard-fraction",
        type=float,
        default=0.3,
        help="share of the sub-images, hardest for bicubic, listed in meta_info_hard.txt (default: 0.3)",
    )
    parser.add_argument("--crop-size", type=int, default=480, help="sub-image size (default: 480)")
    parser.add_argument("--step", type=int, default=240, help="sub-image step (default: 240)")
    parser.add_argument("--workers", type=int, default=1, help="processes (default: 1)")
    parser.add_argument(
        "--lr-scales",
        type=int,
        nargs="+",
        default=list(LR_SCALES),
        help="the scales of the LR sub-images to write, 4 among them (default: 2 3 4)",
    )
    parser.add_argument(
        "--photos-only",
        action="store_true",
        help="with --work: stop after hr/ and the manifest (enough for --pack)",
    )
    parser.add_argument(
        "--quality", type=int, default=PACK_QUALITY, help=f"--pack's JPEG quality (default: {PACK_QUALITY})"
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    if args.photos_only and args.work is None:
        parser.error(
            "--photos-only goes with --work (the download); --pack and --from-photos make no photographs"
        )
    if 4 not in args.lr_scales:
        parser.error(f"--lr-scales {args.lr_scales} lacks 4, which ranks the sub-images by difficulty")
    out = Path(args.out)
    try:
        if args.pack is not None:
            packed = pack(Path(args.pack), out, quality=args.quality)
            size = sum(f.stat().st_size for f in out.glob("*.jpg"))
            print(f"packed {packed['kept']} photographs into {out} ({size / 2**20:.1f} MiB)")
            return 0
        tail = {"crop_size": args.crop_size, "step": args.step, "hard_fraction": args.hard_fraction}
        if args.from_photos is not None:
            manifest = build_from_photos(
                Path(args.from_photos),
                out,
                scales=args.scales,
                workers=args.workers,
                lr_scales=args.lr_scales,
                **tail,
            )
        elif os.environ.get("CI"):
            print("build_trainset: refusing to run in CI (it downloads Debian packages)", file=sys.stderr)
            return 2
        else:
            manifest = build(
                packages=args.packages,
                work=Path(args.work),
                out=out,
                max_short_side=args.max_short_side,
                scales=list(DEFAULT_SCALES) if args.scales is None else args.scales,
                workers=args.workers,
                photos_only=args.photos_only,
                lr_scales=args.lr_scales,
                **tail,
            )
            if args.photos_only:
                print(f"kept {manifest['kept']} photographs in {out / 'hr'} (no sub-images: --photos-only)")
                return 0
    except (OSError, ValueError, KeyError) as e:  # SisrError is a ValueError
        print(f"build_trainset: error: {e}", file=sys.stderr)
        return 1
    print(
        f"kept {manifest['kept']} photographs; "
        f"{manifest['subimages']} sub-images, {manifest['lr_images']} LR images; "
        f"licenses {manifest['licenses']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
