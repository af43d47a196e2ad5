"""Draw one Rotation, one Jigsaw and one PatchFit puzzle side by side (the README figure).

    python scripts/puzzle_demo.py --source skimage --out docs/puzzles.jpg    # needs scikit-image
    python scripts/puzzle_demo.py --source procedural --out puzzles.png
"""
from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

from steprl.tasks.puzzles import ImageSource, make_jigsaw, make_patchfit, make_rotation


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default="procedural", help="procedural | skimage | a folder of images")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--out", default="puzzles.png")
    args = ap.parse_args()
    src = ImageSource(args.source, args.size, 0)
    puzzles = [make_rotation(src.get(0), np.random.default_rng(1)),
               make_jigsaw(src.get(1), np.random.default_rng(2), grids=[(3, 3)]),
               make_patchfit(src.get(3), np.random.default_rng(5), decoys=(5,))]
    images = [p.image for p in puzzles]
    canvas = np.full((max(i.shape[0] for i in images), sum(i.shape[1] for i in images) + 20, 3), 255, np.uint8)
    x = 0
    for im in images:
        canvas[:im.shape[0], x:x + im.shape[1]] = im
        x += im.shape[1] + 10
    Image.fromarray(canvas).save(args.out, quality=88)
    for p in puzzles:
        print(f"{p.kind}: answer {p.answer}")
    print(args.out)


if __name__ == "__main__":
    main()
