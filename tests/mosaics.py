"""A real multi-label set from single-label photos: mosaics of flower photos labelled with their tiles' classes.

`make_mosaics(source, out, count=..., seed=...)` writes `out/images/<prefix>_NNNNN.jpg`
(size x size JPEGs, grid x grid tiles, each a centre-cropped photo) and
`out/labels.csv` (`path,labels`, labels = the distinct classes of the tiles,
space-separated and sorted; paths relative to `out/images`). Deterministic for a
seed. `source` is a folder-per-class tree or an explicit list of photos (class =
the photo's folder name), so train and test mosaics can be built from disjoint
photos (`partition_photos`) and never share a tile.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

PHOTO_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp"})


def source_photos(source: Path | Sequence[Path]) -> dict[str, list[Path]]:
    """Photos per class, sorted: the sub-folders of a tree, or the parent folder names of a list of photos."""
    if isinstance(source, (str, Path)):
        root = Path(source)
        photos = [path for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
                  for path in folder.iterdir() if path.suffix.lower() in PHOTO_EXTENSIONS]
    else:
        photos = [Path(path) for path in source]
    by_class: dict[str, list[Path]] = {}
    for path in sorted(photos, key=lambda p: (p.parent.name, p.as_posix())):
        by_class.setdefault(path.parent.name, []).append(path)
    return by_class


def partition_photos(source: Path | Sequence[Path], *, fractions: Sequence[float], seed: int) -> list[list[Path]]:
    """Split the photos of every class into disjoint parts of about the given fractions (deterministic).

    E.g. `fractions=(0.8, 0.2)` gives photos for training mosaics and, apart, for
    test mosaics. Fractions are normalised to sum to 1.
    """
    weights = np.asarray(fractions, np.float64)
    if weights.ndim != 1 or weights.size < 1 or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError("fractions must be non-negative and not all zero")
    bounds = np.cumsum(weights / weights.sum())
    parts: list[list[Path]] = [[] for _ in weights]
    rng = np.random.default_rng(seed)
    for _, photos in sorted(source_photos(source).items()):
        shuffled = [photos[i] for i in rng.permutation(len(photos))]
        cuts = [0, *np.rint(bounds * len(shuffled)).astype(int)]
        for part, start, stop in zip(parts, cuts[:-1], cuts[1:], strict=True):
            part.extend(shuffled[start:stop])
    return [sorted(part) for part in parts]


def make_mosaics(source: Path | Sequence[Path], out: Path, *, count: int, seed: int, size: int = 448, grid: int = 2,
                 min_labels: int = 2, max_labels: int = 4, prefix: str = "mosaic", csv_name: str = "labels.csv",
                 split: str | None = None, quality: int = 90) -> Path:
    """Write `count` mosaics into `out/images/` and their labels to `out/<csv_name>`; return the CSV's path.

    Each mosaic draws a number of distinct classes uniformly in [min_labels,
    min(max_labels, grid**2, classes)], gives each of them at least one tile and
    the remaining tiles to classes among those (so a class may fill several
    tiles), shuffles the tiles, and fills each with a different photo of its
    class when the class has enough. `split` adds a `split` column with that value
    on every row. The same arguments always give the same bytes.
    """
    if size % grid:
        raise ValueError(f"size {size} is not a multiple of grid {grid}")
    by_class = source_photos(source)
    classes = sorted(by_class)
    cap = min(max_labels, grid * grid, len(classes))
    if not 1 <= min_labels <= cap:
        raise ValueError(f"cannot draw {min_labels}..{max_labels} labels per mosaic from {len(classes)} classes "
                         f"on a {grid}x{grid} grid")
    if any(any(ch.isspace() for ch in name) for name in classes):
        raise ValueError("class names with spaces cannot be written space-separated")
    tile = size // grid
    images = Path(out) / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cache: dict[Path, Image.Image] = {}
    rows: list[list[str]] = []
    for index in range(count):
        chosen = [classes[i] for i in rng.choice(len(classes), int(rng.integers(min_labels, cap + 1)), replace=False)]
        tiles = chosen + [chosen[i] for i in rng.integers(0, len(chosen), grid * grid - len(chosen))]
        tiles = [tiles[i] for i in rng.permutation(len(tiles))]
        mosaic = Image.new("RGB", (size, size))
        for position, photo in enumerate(_pick_photos(tiles, by_class, rng)):
            if photo not in cache:
                cache[photo] = _tile(photo, tile)
            mosaic.paste(cache[photo], ((position % grid) * tile, (position // grid) * tile))
        name = f"{prefix}_{index:05d}.jpg"
        mosaic.save(images / name, format="JPEG", quality=quality)
        rows.append([name, " ".join(sorted(set(chosen)))] + ([split] if split is not None else []))
    target = Path(out) / csv_name
    with target.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["path", "labels"] + (["split"] if split is not None else []))
        writer.writerows(rows)
    return target


def _pick_photos(tiles: list[str], by_class: dict[str, list[Path]], rng: np.random.Generator) -> list[Path]:
    """One photo per tile, distinct within a class when it has enough photos."""
    picks: dict[str, list[Path]] = {}
    for name in sorted(set(tiles)):
        photos = by_class[name]
        needed = tiles.count(name)
        chosen = rng.choice(len(photos), needed, replace=needed > len(photos))
        picks[name] = [photos[i] for i in chosen]
    return [picks[name].pop() for name in tiles]


def _tile(photo: Path, tile: int) -> Image.Image:
    """The photo upright, in RGB, centre-cropped to a square and resized to tile x tile."""
    with Image.open(photo) as image:
        upright = ImageOps.exif_transpose(image).convert("RGB")
    return ImageOps.fit(upright, (tile, tile), method=Image.Resampling.LANCZOS)
