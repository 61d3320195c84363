"""What the demos share: progress lines, running a prompt, copying an image out, a labelled row."""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont


class Progress:
    """Prints one line per progress event of the host (training steps, sampling steps)."""

    def __init__(self) -> None:
        self.label = ""
        self.t0 = time.perf_counter()

    def stage(self, label: str) -> None:
        self.label = label
        print(f"[{time.perf_counter() - self.t0:6.1f}s] {label} ...", flush=True)

    def __call__(self, event, data) -> None:
        if event == "progress":
            print(f"  {self.label} {data['value']}/{data['max']}", flush=True)


def run(host, prompt: dict, progress: Progress, label: str):
    progress.stage(label)
    result = host.run(prompt, on_message=progress)
    if not result.success:
        raise RuntimeError(f"{label} failed:\n{result.error_text}")
    return result


def copy_image(host, result, node_id: str, dest: Path) -> Path:
    (source,) = host.image_paths(result, node_id)
    shutil.copyfile(source, dest)
    return dest


def labelled_row(tiles: Sequence[tuple[str, Path]], title: str, dest: Path, min_tile: int = 256) -> Path:
    """Images as one labelled row under a title. Small images are scaled up nearest-neighbour by a
    whole factor (every source pixel the same size) to at least ``min_tile`` px."""
    images = [Image.open(p).convert("RGB") for _, p in tiles]
    source = max(im.width for im in images)
    side = source * max(1, -(-min_tile // source))
    font_size = 14 if side < 400 else 22
    font = ImageFont.load_default(size=font_size)
    line = font_size + 4
    pad, title_h = 8, line + 16
    label_h = 12 + line * max(label.count("\n") + 1 for label, _ in tiles)
    grid = Image.new(
        "RGB", (pad + len(images) * (side + pad), title_h + side + label_h + pad), (255, 255, 255)
    )
    draw = ImageDraw.Draw(grid)
    draw.text((pad, 8), title, fill=(0, 0, 0), font=font)
    for i, ((label, _), im) in enumerate(zip(tiles, images)):
        x = pad + i * (side + pad)
        grid.paste(im.resize((side, side), Image.NEAREST), (x, title_h))
        draw.rectangle((x - 1, title_h - 1, x + side, title_h + side), outline=(160, 160, 160))
        draw.multiline_text((x + 4, title_h + side + 6), label, fill=(0, 0, 0), font=font, spacing=4)
    grid.save(dest)
    return dest
