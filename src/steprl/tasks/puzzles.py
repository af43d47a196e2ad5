"""Vision puzzles (PC-GRPO / PuzzleCraft, spec §4.1): Rotation, Jigsaw and PatchFit, generated from any image.

Each puzzle is made from one source image by a deterministic generator (a ``numpy`` Generator seeded per
puzzle), and everything the tests check is pixel-exact:

* **Rotation**: the image turned by θ ∈ {0, 90, 180, 270} degrees, the question phrased clockwise or
  counter-clockwise; answer ``<answer>90</answer>``, binary reward. Turning the shown image back by θ the other
  way gives the source exactly (``np.rot90``, no resampling).
* **Jigsaw**: an M×N grid with 2 ≤ M·N ≤ 9 (uniform over the 22 (M, N) pairs unless ``jigsaw_grids`` says
  otherwise), tiles shuffled, each shown tile numbered 1..MN in raster order. The answer lists, for each grid
  position in raster order, the number of the tile that belongs there (``<answer>1,3,4,2</answer>``); the
  reward is the fraction of positions right. Putting shown tile ``a[j]`` at position ``j`` rebuilds the
  (cropped) source exactly.
* **PatchFit**: a square patch (``patch_frac`` of the shorter side) at a random place is greyed out; the true
  patch and D decoys (D uniform in ``patchfit_decoys``, default {3, 5, 7}) are shown lettered below the image;
  answer ``<answer>B</answer>``, binary reward. Decoys are mirrored / rotated / recoloured copies of the true
  patch or patches from elsewhere in the image; none is pixel-equal to the true patch or to another decoy.

Image sources (``source``): ``procedural`` (shapes and gradients drawn from the seed: no files, used by the
tests; no up direction, so a Rotation's angle is barely recoverable), ``scene`` (an upright sky / ground / sun
scene drawn from the seed: no files, an up direction as in photos), ``skimage`` (scikit-image's sample photos; optional dependency) or a folder path (every
jpg/jpeg/png/bmp/webp under it, sorted). Images are centre-cropped to a square and resized to ``image_size``.

Answer parsing (spec §4.1 [RECON] choices, as flags): the last ``<answer>...</answer>`` counts; no tag or an
unusable content scores 0 (``parse`` returns ``None``; PC-GRPO counts these). A Jigsaw answer that is not a
permutation of 1..MN scores 0 with ``jigsaw_malformed=zero`` (default) or is scored position by position on its
first MN numbers with ``partial``. ``format_weight`` w > 0 adds VLM-R1's format reward f (1 when the response
is ``<think>...</think><answer>...</answer>``): score = (acc + w·f) / (1 + w), which keeps it in [0, 1].

Steps and worked solutions: a puzzle response is cut into steps by the task's splitter (one line per step,
``newline`` by default) and ends with the line holding ``<answer>...</answer>`` (PROPA's terminal step on puzzles:
``algo.mcts.terminal_regex='<answer>'``). Each sample carries a worked solution in that format (the SFT target, and
PROPA's gold steps for its interleaved SFT), built from the generator's ground truth by :func:`worked_solution`:
Rotation and PatchFit ``<think>`` one line naming the answer ``</think>`` then the answer line; Jigsaw one
``<think>`` line per grid row (``Row 2: 4,2``: the tiles of that row, left to right) then the answer line.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from steprl.rollout.types import Sample
from steprl.tasks.base import Task

__all__ = ["PuzzleTask", "Puzzle", "make_rotation", "make_jigsaw", "make_patchfit", "procedural_image",
           "scene_image", "parse_answer", "jigsaw_reward", "worked_solution", "JIGSAW_GRIDS", "PUZZLES", "INSTRUCTION"]

PUZZLES = ("rotation", "jigsaw", "patchfit")
ANGLES = (0, 90, 180, 270)
JIGSAW_GRIDS = tuple((m, n) for m in range(1, 10) for n in range(1, 10) if 2 <= m * n <= 9)  # 22 pairs
LETTERS = "ABCDEFGHIJKLMNOP"
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
                  "camera", "coins", "moon")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
INSTRUCTION = ("First output the thinking process in <think></think> tags and then output the final answer in "
               "<answer></answer> tags.")
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_FORMAT_RE = re.compile(r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*", re.DOTALL)
_MAX_CHARS = 20000  # only the end of an over-long response is parsed


@dataclass
class Puzzle:
    """One generated puzzle: the image shown, the question, the gold answer and the generator's internals
    (``info``: what the pixel-exact tests check)."""

    kind: str
    image: np.ndarray          # H x W x 3 uint8, what the model sees
    question: str
    answer: str
    num_options: int           # K: 4 angles, D+1 patches, or M*N tiles
    info: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ images
def procedural_image(rng: np.random.Generator, size: int = 112) -> np.ndarray:
    """A synthetic picture: a two-colour gradient with random ellipses, rectangles and triangles (uint8 RGB).
    No two quadrants look alike, so rotations and tile orders are recoverable."""
    from PIL import Image, ImageDraw

    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / max(1, size - 1)
    t = (np.cos(angle) * xx + np.sin(angle) * yy)
    t = (t - t.min()) / max(1e-9, t.max() - t.min())
    base = (c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]).astype(np.uint8)
    img = Image.fromarray(base)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 9))):
        kind = int(rng.integers(0, 3))
        x0, y0 = (int(v) for v in rng.integers(-size // 8, size, 2))
        w, h = (int(v) for v in rng.integers(size // 8, size // 2, 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if kind == 0:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=colour)
        elif kind == 1:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=colour)
        else:
            pts = [tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(3)]
            draw.polygon(pts, fill=colour)
    arr = np.asarray(img, dtype=np.uint8).copy()
    noise = rng.integers(-6, 7, arr.shape)  # a little texture: no flat regions, so patches are distinct
    return np.clip(arr.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def scene_image(rng: np.random.Generator, size: int = 112) -> np.ndarray:
    """A synthetic upright scene (uint8 RGB): a light sky above a darker ground, the horizon at 40-70 % of the
    height, a bright sun in the sky, and shapes standing on the ground. Unlike :func:`procedural_image` it has an
    up direction, as natural photos do, so a Rotation puzzle's angle is recoverable from the shown image alone."""
    from PIL import Image, ImageDraw

    horizon = int(size * rng.uniform(0.4, 0.7))
    sky0, sky1 = rng.integers(150, 256, 3), rng.integers(150, 256, 3)       # zenith, horizon
    ground0, ground1 = rng.integers(20, 120, 3), rng.integers(0, 80, 3)     # horizon, bottom
    y = np.arange(size, dtype=np.float64)[:, None]
    t_sky = np.clip(y / max(1, horizon), 0, 1)
    t_ground = np.clip((y - horizon) / max(1, size - horizon), 0, 1)
    rows = np.where(y < horizon, sky0 * (1 - t_sky) + sky1 * t_sky, ground0 * (1 - t_ground) + ground1 * t_ground)
    img = Image.fromarray(np.repeat(rows[:, None, :], size, axis=1).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    r = int(rng.integers(size // 16, size // 8 + 1))                        # the sun
    cx, cy = int(rng.integers(r, size - r)), int(rng.integers(r, max(r + 1, horizon - r)))
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(255, 255, int(rng.integers(120, 230))))
    for _ in range(int(rng.integers(2, 6))):                                # things standing on the ground
        w, h = int(rng.integers(size // 12, size // 4)), int(rng.integers(size // 10, size // 3))
        x0 = int(rng.integers(0, size - w))
        base = int(rng.integers(horizon, min(size, horizon + size // 6) + 1))
        colour = tuple(int(v) for v in rng.integers(0, 200, 3))
        if int(rng.integers(0, 2)) == 0:
            draw.rectangle([x0, base - h, x0 + w, base], fill=colour)
        else:
            draw.polygon([(x0, base), (x0 + w, base), (x0 + w // 2, base - h)], fill=colour)
    arr = np.asarray(img, dtype=np.uint8).copy()
    noise = rng.integers(-6, 7, arr.shape)  # texture: no flat regions, so PatchFit patches are distinct
    return np.clip(arr.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def square_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to ``size`` x ``size`` (bicubic)."""
    from PIL import Image

    h, w = image.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = np.ascontiguousarray(image[top:top + s, left:left + s])
    if s == size:
        return crop
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.BICUBIC), dtype=np.uint8)


class ImageSource:
    """Source images by index: ``procedural`` (drawn from ``(seed, index)``), ``skimage`` or a folder."""

    def __init__(self, source: str = "procedural", image_size: int = 112, seed: int = 0, key: str = "task.source"):
        self.source, self.image_size, self.seed, self.key = str(source), int(image_size), int(seed), key
        self.files: list[Path] = []
        self.names: list[str] = []
        if self.source in ("procedural", "scene"):
            return
        if self.source == "skimage":
            try:
                import skimage.data  # noqa: F401
            except ImportError as e:
                raise ValueError(f"{key}=skimage needs scikit-image (pip install scikit-image)") from e
            import skimage.data as sd

            # the photos scikit-image ships inside its wheel (no download)
            self.names = [n for n in SKIMAGE_PHOTOS if hasattr(sd, n)]
            return
        root = Path(self.source).expanduser()
        if not root.is_dir():
            raise ValueError(f"{key}={self.source!r} is neither 'procedural', 'scene', 'skimage' nor a folder of images")
        self.files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
        if not self.files:
            raise ValueError(f"{key}={self.source!r}: no {'/'.join(IMAGE_EXTS)} files in that folder")

    def __len__(self) -> int:
        return len(self.files) or len(self.names) or 10**9

    def __getstate__(self):  # keep pickles (reward workers) small: the file list is rebuilt on load
        return {"source": self.source, "image_size": self.image_size, "seed": self.seed, "key": self.key}

    def __setstate__(self, st):
        self.__init__(**st)

    def get(self, index: int) -> np.ndarray:
        if self.source == "procedural":
            return procedural_image(np.random.default_rng([self.seed, 7, index]), self.image_size)
        if self.source == "scene":
            return scene_image(np.random.default_rng([self.seed, 8, index]), self.image_size)
        if self.names:
            import skimage.data as sd

            name = self.names[index % len(self.names)]
            try:
                img = np.asarray(getattr(sd, name)())
            except Exception as e:  # noqa: BLE001 - e.g. a version that fetches this one over the network
                raise ValueError(f"{self.key}=skimage: sample image {name!r} could not be loaded: {e}") from e
        else:
            from PIL import Image

            with Image.open(self.files[index % len(self.files)]) as im:
                img = np.asarray(im.convert("RGB"))
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, -1)
        img = img[..., :3]
        if img.dtype != np.uint8:
            img = np.clip(img * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        return square_resize(img, self.image_size)


# ------------------------------------------------------------------------------------------------ generators
def rotate(image: np.ndarray, angle: int, direction: str) -> np.ndarray:
    """Turn ``image`` by ``angle`` degrees (a multiple of 90) ``clockwise`` or ``counter-clockwise``; exact."""
    k = (angle // 90) % 4
    return np.ascontiguousarray(np.rot90(image, k=-k if direction == "clockwise" else k))


def make_rotation(src: np.ndarray, rng: np.random.Generator, direction: str | None = None) -> Puzzle:
    angle = int(ANGLES[int(rng.integers(0, 4))])
    direction = direction or ("clockwise", "counter-clockwise")[int(rng.integers(0, 2))]
    q = (f"This image has been rotated {direction} by 0, 90, 180 or 270 degrees. By how many degrees {direction} "
         f"was it rotated? Answer with the number of degrees.")
    return Puzzle("rotation", rotate(src, angle, direction), q, str(angle), len(ANGLES),
                  {"source": src, "angle": angle, "direction": direction})


def _label(draw, xy, text: str, fill=(255, 255, 255), bg=(0, 0, 0)) -> None:
    from PIL import ImageFont

    font = ImageFont.load_default()
    x0, y0, x1, y1 = draw.textbbox(xy, text, font=font)
    draw.rectangle([x0 - 1, y0 - 1, x1 + 1, y1 + 1], fill=bg)
    draw.text(xy, text, fill=fill, font=font)


def make_jigsaw(src: np.ndarray, rng: np.random.Generator, grids=JIGSAW_GRIDS, number_tiles: bool = True) -> Puzzle:
    rows, cols = (int(v) for v in grids[int(rng.integers(0, len(grids)))])
    th, tw = src.shape[0] // rows, src.shape[1] // cols
    if th < 1 or tw < 1:
        raise ValueError(f"a {src.shape[0]}x{src.shape[1]} image cannot be cut into a {rows}x{cols} grid")
    crop = np.ascontiguousarray(src[:rows * th, :cols * tw])
    tiles = [crop[r * th:(r + 1) * th, c * tw:(c + 1) * tw] for r in range(rows) for c in range(cols)]
    perm = rng.permutation(rows * cols)  # shown position p holds source tile perm[p]
    shuffled = assemble([tiles[i] for i in perm], rows, cols)
    inv = np.argsort(perm)  # source position j is shown at position inv[j]
    answer = [int(inv[j]) + 1 for j in range(rows * cols)]
    shown = shuffled
    if number_tiles:
        from PIL import Image, ImageDraw

        img = Image.fromarray(shuffled.copy())
        draw = ImageDraw.Draw(img)
        for p in range(rows * cols):
            _label(draw, ((p % cols) * tw + 2, (p // cols) * th + 1), str(p + 1))
        shown = np.asarray(img, dtype=np.uint8)
    q = (f"The image is cut into a grid of {rows} row(s) and {cols} column(s); the {rows * cols} tiles are shuffled "
         f"and numbered 1 to {rows * cols}. For each grid position in raster order (left to right, top to bottom), "
         f"give the number of the tile that belongs there, separated by commas.")
    return Puzzle("jigsaw", shown, q, ",".join(map(str, answer)), rows * cols,
                  {"source": crop, "grid": (rows, cols), "perm": perm.tolist(), "shuffled": shuffled,
                   "tile_shape": (th, tw)})


def assemble(tiles: list[np.ndarray], rows: int, cols: int) -> np.ndarray:
    return np.concatenate([np.concatenate(tiles[r * cols:(r + 1) * cols], axis=1) for r in range(rows)], axis=0)


def tiles_of(image: np.ndarray, rows: int, cols: int) -> list[np.ndarray]:
    th, tw = image.shape[0] // rows, image.shape[1] // cols
    return [image[r * th:(r + 1) * th, c * tw:(c + 1) * tw] for r in range(rows) for c in range(cols)]


def _decoy_candidates(src: np.ndarray, patch: np.ndarray, box: tuple[int, int, int], rng: np.random.Generator):
    y, x, s = box
    yield from (np.fliplr(patch), np.flipud(patch), np.rot90(patch, 1), np.rot90(patch, 2), np.rot90(patch, 3),
                patch[..., ::-1], 255 - patch, patch[..., [1, 2, 0]])
    H, W = src.shape[:2]
    for _ in range(16):  # visually similar patches from elsewhere in the image
        yy, xx = int(rng.integers(0, H - s + 1)), int(rng.integers(0, W - s + 1))
        if abs(yy - y) >= s // 2 or abs(xx - x) >= s // 2:
            yield src[yy:yy + s, xx:xx + s]


def make_patchfit(src: np.ndarray, rng: np.random.Generator, decoys=(3, 5, 7), patch_frac: float = 0.25) -> Puzzle:
    H, W = src.shape[:2]
    s = max(2, int(round(patch_frac * min(H, W))))
    y, x = int(rng.integers(0, H - s + 1)), int(rng.integers(0, W - s + 1))
    patch = np.ascontiguousarray(src[y:y + s, x:x + s])
    D = int(decoys[int(rng.integers(0, len(decoys)))])
    pool = list(_decoy_candidates(src, patch, (y, x, s), rng))
    order = rng.permutation(len(pool))
    chosen: list[np.ndarray] = []
    for i in order:
        cand = np.ascontiguousarray(pool[i])
        if len(chosen) == D:
            break
        if cand.shape == patch.shape and not any(np.array_equal(cand, o) for o in [patch, *chosen]):
            chosen.append(cand)
    k = 0
    while len(chosen) < D:  # a flat or symmetric patch: XOR with distinct constants always differs
        k += 1
        cand = patch ^ np.uint8((37 * k) % 255 + 1)
        if not any(np.array_equal(cand, o) for o in [patch, *chosen]):
            chosen.append(cand)
    options = [patch, *chosen]
    perm = rng.permutation(D + 1)
    options = [options[i] for i in perm]
    correct = int(np.argmax(perm == 0))
    masked = src.copy()
    masked[y:y + s, x:x + s] = 128
    image, offsets = _patchfit_canvas(masked, options)
    letters = LETTERS[:D + 1]
    q = (f"A square region of the image (top) is greyed out. Which of the candidate patches {', '.join(letters)} "
         f"(bottom) fills it exactly? Answer with the letter.")
    return Puzzle("patchfit", image, q, letters[correct], D + 1,
                  {"source": src, "box": (y, x, s), "options": options, "correct": correct, "masked": masked,
                   "offsets": offsets})


def _patchfit_canvas(masked: np.ndarray, options: list[np.ndarray]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The masked image on top, the lettered options in rows below it; returns the canvas and each option's
    top-left corner in it."""
    from PIL import Image, ImageDraw

    H, W = masked.shape[:2]
    s = options[0].shape[0]
    gap, label_h = 4, 12
    per_row = max(1, (W + gap) // (s + gap))
    n_rows = math.ceil(len(options) / per_row)
    width = max(W, per_row * (s + gap))
    height = H + n_rows * (label_h + s + gap) + gap
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    canvas[:H, :W] = masked
    offsets = []
    for i, opt in enumerate(options):
        r, c = divmod(i, per_row)
        oy, ox = H + gap + r * (label_h + s + gap) + label_h, c * (s + gap)
        canvas[oy:oy + s, ox:ox + s] = opt
        offsets.append((oy, ox))
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    for i, (oy, ox) in enumerate(offsets):
        _label(draw, (ox + 1, oy - label_h), LETTERS[i], fill=(0, 0, 0), bg=(255, 255, 255))
    return np.asarray(img, dtype=np.uint8), offsets


# ------------------------------------------------------------------------------------------------ answers
def answer_text(response: str) -> str | None:
    """Content of the last ``<answer>...</answer>`` in ``response`` (stripped), or ``None``."""
    if not isinstance(response, str):
        return None
    found = _ANSWER_RE.findall(response[-_MAX_CHARS:])
    return found[-1].strip() if found else None


def parse_answer(kind: str, response: str, num_options: int):
    """The option a response selects: an angle class 0..3 (Rotation), an option index (PatchFit), a tuple of
    tile numbers (Jigsaw: its first ``num_options`` integers); ``None`` when it selects nothing usable."""
    text = answer_text(response)
    if text is None:
        return None
    if kind == "rotation":
        m = re.fullmatch(r"\s*(-?\d{1,4})\s*(?:°|degrees?|deg)?\s*\.?\s*", text)
        if m is None or int(m.group(1)) not in ANGLES:
            return None
        return ANGLES.index(int(m.group(1)))
    if kind == "patchfit":
        m = re.fullmatch(r"\s*(?:option\s*)?\(?([A-Za-z])\)?\s*\.?\s*", text, flags=re.IGNORECASE)
        if m is None:
            return None
        idx = LETTERS.find(m.group(1).upper())
        return idx if 0 <= idx < num_options else None
    if kind == "jigsaw":
        nums = re.findall(r"\d{1,3}", text[:2000])
        return tuple(int(v) for v in nums[:num_options]) if nums else None
    raise ValueError(f"unknown puzzle kind {kind!r}; valid kinds: {list(PUZZLES)}")


def jigsaw_reward(pred, gold, malformed: str = "zero") -> float:
    """Fraction of grid positions whose tile number is right (spec §4.1). ``pred`` must be a permutation of
    1..MN (``malformed='zero'``: otherwise 0) or is scored position by position (``'partial'``)."""
    gold = [int(v) for v in gold]
    n = len(gold)
    if pred is None:
        return 0.0
    pred = [int(v) for v in pred]
    if sorted(pred) != list(range(1, n + 1)):
        if malformed == "zero":
            return 0.0
        if malformed != "partial":
            raise ValueError(f"jigsaw_malformed={malformed!r} is not one of ['zero', 'partial']")
    return sum(p == g for p, g in zip(pred[:n], gold)) / n


def worked_solution(p: Puzzle) -> str:
    """A gold solution of ``p``, one step per line, the last line ``<answer>gold</answer>`` (module docstring)."""
    if p.kind == "rotation":
        think = [f"{p.answer} degrees {p.info['direction']}."]
    elif p.kind == "patchfit":
        think = [f"Patch {p.answer} fits."]
    elif p.kind == "jigsaw":
        rows, cols = p.info["grid"]
        tiles = p.answer.split(",")
        think = [f"Row {r + 1}: {','.join(tiles[r * cols:(r + 1) * cols])}" for r in range(rows)]
    else:
        raise ValueError(f"unknown puzzle kind {p.kind!r}; valid kinds: {list(PUZZLES)}")
    think[0] = "<think>" + think[0]
    think[-1] = think[-1] + "</think>"
    return "\n".join([*think, f"<answer>{p.answer}</answer>"])


# ------------------------------------------------------------------------------------------------ the task
class _PuzzleDataset(Dataset):
    def __init__(self, task: "PuzzleTask", split: str, n: int):
        self.task, self.split, self.n = task, split, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Sample:
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.task.sample(self.split, i)


class PuzzleTask(Task):
    """Rotation / Jigsaw / PatchFit puzzles over a source of images (see the module docstring).

    ``puzzles``: which kinds; ``mix``: their sampling weights (``None``: equal; the paper's Mix setting is
    jigsaw 15K : patchfit 15K : rotation 10K). ``prompt_template`` has ``{image}`` (the model's image placeholder)
    and ``{question}`` (the puzzle question followed by the think/answer instruction). ``val_source``: where the
    validation puzzles' images come from (the paper trains on COCO train and evaluates on COCO test); without
    it they come from ``source`` (from the end of a folder's sorted list, training from the start).
    """

    name = "puzzles"

    def __init__(self, puzzles=PUZZLES, mix=None, source: str = "procedural", image_size: int = 112,
                 num_train: int = 100000, num_val: int = 64, seed: int = 0, jigsaw_grids=None,
                 patchfit_decoys=(3, 5, 7), patch_frac: float = 0.25, number_tiles: bool = True,
                 jigsaw_malformed: str = "zero", format_weight: float = 0.0,
                 prompt_template: str = "{image}{question}\n", image_placeholder: str | None = None,
                 instruction: str = INSTRUCTION, val_source: str | None = None, splitter=None):
        super().__init__(splitter=splitter)
        self.puzzles = tuple(puzzles)
        bad = [p for p in self.puzzles if p not in PUZZLES]
        if bad or not self.puzzles:
            raise ValueError(f"task.puzzles={list(self.puzzles)}: each must be one of {list(PUZZLES)}")
        weights = [1.0] * len(self.puzzles) if mix is None else [float(w) for w in mix]
        if len(weights) != len(self.puzzles) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"task.mix={mix} must give one non-negative weight per puzzle in {list(self.puzzles)}")
        self.mix = [w / sum(weights) for w in weights]
        self.grids = tuple(tuple(int(v) for v in g) for g in (jigsaw_grids or JIGSAW_GRIDS))
        for g in self.grids:
            if len(g) != 2 or min(g) < 1 or not 2 <= g[0] * g[1] <= 9:
                raise ValueError(f"task.jigsaw_grids: {list(g)} is not an [M, N] grid with 2 <= M*N <= 9")
        self.decoys = tuple(int(d) for d in patchfit_decoys)
        if not self.decoys or min(self.decoys) < 1 or max(self.decoys) + 1 > len(LETTERS):
            raise ValueError(f"task.patchfit_decoys={list(self.decoys)} must be between 1 and {len(LETTERS) - 1}")
        if not 0 < patch_frac < 1:
            raise ValueError(f"task.patch_frac={patch_frac} must be in (0, 1)")
        if jigsaw_malformed not in ("zero", "partial"):
            raise ValueError(f"task.jigsaw_malformed={jigsaw_malformed!r} is not one of ['zero', 'partial']")
        if format_weight < 0:
            raise ValueError(f"task.format_weight={format_weight} must be >= 0")
        for key in ("{image}", "{question}"):
            if key not in prompt_template:
                raise ValueError(f"task.prompt_template must contain {key}: {prompt_template!r}")
        from steprl.models.vision import IMAGE_PLACEHOLDER

        self.source = ImageSource(source, image_size, seed)
        self.val_source = ImageSource(val_source, image_size, seed, "task.val_source") if val_source else None
        self.image_size, self.num_train, self.num_val, self.seed = int(image_size), int(num_train), int(num_val), seed
        self.patch_frac, self.number_tiles = float(patch_frac), bool(number_tiles)
        self.jigsaw_malformed, self.format_weight = jigsaw_malformed, float(format_weight)
        self.prompt_template, self.instruction = prompt_template, instruction
        self.image_placeholder = image_placeholder or IMAGE_PLACEHOLDER

    # ----- generation -----------------------------------------------------------------------------------------
    def puzzle(self, split: str, i: int) -> Puzzle:
        """Puzzle ``i`` of ``split`` (``train`` / ``val``): a pure function of (seed, split, i)."""
        rng = np.random.default_rng([int(self.seed), {"train": 0, "val": 1}[split], int(i)])
        kind = self.puzzles[int(rng.choice(len(self.puzzles), p=self.mix))]
        source = self.val_source if split == "val" and self.val_source is not None else self.source
        n_src = len(source)
        if source.source in ("procedural", "scene"):  # endless: validation images are drawn from their own index range
            index = i if split == "train" or source is self.val_source else 10**8 + i
        else:  # without a val_source, validation takes images from the end of the list, training from the start
            index = (i if split == "train" or source is self.val_source else n_src - 1 - i) % n_src
        src = source.get(int(index))
        if kind == "rotation":
            return make_rotation(src, rng)
        if kind == "jigsaw":
            return make_jigsaw(src, rng, self.grids, self.number_tiles)
        return make_patchfit(src, rng, self.decoys, self.patch_frac)

    def sample(self, split: str, i: int) -> Sample:
        from PIL import Image

        p = self.puzzle(split, i)
        question = f"{p.question} {self.instruction}".strip()
        prompt = self.prompt_template.format(image=self.image_placeholder, question=question)
        meta = {"puzzle": p.kind, "num_options": p.num_options}
        if p.kind == "jigsaw":
            meta["grid"] = list(p.info["grid"])
        return Sample(prompt=prompt, answer=p.answer, solution=worked_solution(p), uid=f"{split}-{i}",
                      source=p.kind, meta=meta, images=[Image.fromarray(p.image)])

    def train_dataset(self) -> Dataset:
        return _PuzzleDataset(self, "train", self.num_train)

    def val_dataset(self) -> Dataset:
        return _PuzzleDataset(self, "val", self.num_val)

    # ----- scoring --------------------------------------------------------------------------------------------
    def parse(self, sample: Sample, response: str):
        """The selection key of a response (see :func:`parse_answer`), ``None`` when unusable."""
        return parse_answer(sample.meta["puzzle"], response, int(sample.meta["num_options"]))

    def accuracy(self, sample: Sample, response: str) -> float:
        kind, key = sample.meta["puzzle"], self.parse(sample, response)
        if kind == "jigsaw":
            return jigsaw_reward(key, sample.answer.split(","), self.jigsaw_malformed)
        if key is None:
            return 0.0
        gold = ANGLES.index(int(sample.answer)) if kind == "rotation" else LETTERS.index(sample.answer)
        return float(key == gold)

    def _verify(self, sample: Sample, response: str) -> float:
        acc = self.accuracy(sample, response)
        if self.format_weight == 0:
            return acc
        fmt = float(_FORMAT_RE.fullmatch(response[-_MAX_CHARS:]) is not None)
        return (acc + self.format_weight * fmt) / (1 + self.format_weight)

    def _extract_answer(self, response: str) -> str | None:
        return answer_text(response)
