#!/usr/bin/env python
"""Write two small datasets of generated shapes, in the layouts mmdet and mmseg read:

* COCO instance segmentation: ``OUT/coco/{train,val}/*.png`` and
  ``OUT/coco/annotations/instances_{train,val}.json`` (boxes and polygon masks of circles, squares
  and triangles, category ids 1..3);
* ADE20K-style semantic segmentation: ``OUT/ade/images/{training,validation}/*.jpg`` and
  ``OUT/ade/annotations/{training,validation}/*.png`` (label 0 = unlabelled, 1 = ground, 2..4 =
  circle / square / triangle; read with ``reduce_zero_label=True`` as ADE20K is).

Each image has a smooth random background with noise and one to four non-overlapping shapes of random
colour, size and rotation; the class is the shape, never the colour.

    python tools/make_toy_datasets.py --out data/toy --train 240 --val 60 --size 128
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

#: detection categories (COCO ids 1, 2, 3)
SHAPES = ("circle", "square", "triangle")
#: segmentation classes, label values 1..4 on disk (0 is unlabelled)
SEG_CLASSES = ("ground",) + SHAPES


def shape_polygon(kind: str, cx: float, cy: float, radius: float, angle: float):
    """Vertices (x, y) of a shape centred at (cx, cy) inside a circle of ``radius``."""
    corners = {"circle": 48, "square": 4, "triangle": 3}[kind]
    return [(cx + radius * math.cos(angle + 2 * math.pi * k / corners),
             cy + radius * math.sin(angle + 2 * math.pi * k / corners)) for k in range(corners)]


def random_scene(rng: np.random.Generator, height: int, width: int):
    """An RGB image and its objects: a list of (class index, polygon)."""
    ys, xs = np.mgrid[0:height, 0:width] / max(height, width)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    direction = rng.uniform(0, 2 * math.pi)
    t = (np.cos(direction) * xs + np.sin(direction) * ys)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    background = c0 + t[..., None] * (c1 - c0) + rng.normal(0, 8, (height, width, 3))
    image = Image.fromarray(background.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    objects, placed = [], []
    size = min(height, width)
    for _ in range(int(rng.integers(1, 5))):
        for _attempt in range(30):
            radius = rng.uniform(0.09, 0.2) * size
            cx, cy = rng.uniform(radius + 1, width - radius - 1), rng.uniform(radius + 1, height - radius - 1)
            if all(math.hypot(cx - x, cy - y) > radius + r + 2 for x, y, r in placed):
                break
        else:
            continue
        placed.append((cx, cy, radius))
        label = int(rng.integers(len(SHAPES)))
        polygon = shape_polygon(SHAPES[label], cx, cy, radius, rng.uniform(0, 2 * math.pi))
        local = background[int(cy), int(cx)]
        while True:  # a colour that stands out from the background under it
            colour = rng.uniform(0, 255, 3)
            if np.abs(colour - local).sum() > 120:
                break
        draw.polygon(polygon, fill=tuple(int(c) for c in colour))
        objects.append((label, polygon))
    return image, objects


def write_coco(root: Path, split: str, count: int, size: int, rng: np.random.Generator):
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(count):
        image, objects = random_scene(rng, size, size)
        name = f"{index:06d}.png"
        image.save(root / split / name)
        images.append(dict(id=index + 1, file_name=name, height=size, width=size))
        for label, polygon in objects:
            mask = Image.new("L", (size, size), 0)
            ImageDraw.Draw(mask).polygon(polygon, fill=1)
            mask = np.asarray(mask)
            rows, cols = np.nonzero(mask)
            x0, y0, x1, y1 = cols.min(), rows.min(), cols.max() + 1, rows.max() + 1
            annotations.append(dict(
                id=len(annotations) + 1, image_id=index + 1, category_id=label + 1, iscrowd=0,
                bbox=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)], area=float(mask.sum()),
                segmentation=[[round(float(v), 2) for point in polygon for v in point]]))
    categories = [dict(id=i + 1, name=name, supercategory="shape") for i, name in enumerate(SHAPES)]
    with open(root / "annotations" / f"instances_{split}.json", "w") as f:
        json.dump(dict(images=images, annotations=annotations, categories=categories), f)
    return len(annotations)


def write_ade(root: Path, split: str, count: int, size: int, rng: np.random.Generator):
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        image, objects = random_scene(rng, size, size)
        label_map = Image.new("L", (size, size), 1)  # ground
        draw = ImageDraw.Draw(label_map)
        for label, polygon in objects:
            draw.polygon(polygon, fill=label + 2)
        name = f"toy_{split}_{index:06d}"
        image.save(root / "images" / split / f"{name}.jpg", quality=95)
        label_map.save(root / "annotations" / split / f"{name}.png")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/toy", help="output folder (default data/toy)")
    parser.add_argument("--train", type=int, default=240, help="training images per dataset")
    parser.add_argument("--val", type=int, default=60, help="validation images per dataset")
    parser.add_argument("--size", type=int, default=128, help="image height and width")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    rng = np.random.default_rng(args.seed)
    for split, count in (("train", args.train), ("val", args.val)):
        objects = write_coco(out / "coco", split, count, args.size, rng)
        print(f"{out / 'coco'}: {split} {count} images, {objects} objects")
    for split, count in (("training", args.train), ("validation", args.val)):
        write_ade(out / "ade", split, count, args.size, rng)
        print(f"{out / 'ade'}: {split} {count} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
