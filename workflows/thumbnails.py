"""Template-browser thumbnails: the workflow's graph drawn as a diagram under its title.

Why a diagram and not a sample output: the shipped workflows name files a fresh install does not have
(SD1.5 and personal concepts), and the test fixture's random weights only make noise. The drawing is
made from the UI JSON itself, so it always matches the graph a user will load.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping

from PIL import Image, ImageDraw, ImageFont

SIZE = 512
MARGIN = 24
HEADER = 132
BACKGROUND = (32, 32, 36)
TEXT = (235, 235, 235)
SUBTEXT = (170, 170, 180)
NODE_FILL = (60, 60, 66)
OUR_NODE_FILL = (92, 62, 140)  # the pack's nodes stand out
NOTE_FILL = (102, 85, 51)
LINK_COLOURS = {  # the frontend's default slot colours
    "MODEL": (178, 157, 255),
    "CLIP": (255, 210, 0),
    "VAE": (255, 110, 110),
    "CONDITIONING": (255, 160, 49),
    "LATENT": (255, 156, 249),
    "IMAGE": (100, 181, 246),
    "MASK": (129, 200, 132),
}
OTHER_LINK = (200, 200, 200)


def render(ui: Mapping, title: str, subtitle: str) -> Image.Image:
    """A SIZE x SIZE RGB image: title, subtitle, and every node (the pack's in purple) and link of ``ui``."""
    img = Image.new("RGB", (SIZE, SIZE), BACKGROUND)
    draw = ImageDraw.Draw(img)
    draw.text((MARGIN, MARGIN), title, font=ImageFont.load_default(30), fill=TEXT)
    lines = textwrap.wrap(subtitle, 44)[:3]
    draw.multiline_text(
        (MARGIN, MARGIN + 44), "\n".join(lines), font=ImageFont.load_default(17), fill=SUBTEXT
    )

    nodes = {n["id"]: n for n in ui["nodes"]}
    x0 = min(n["pos"][0] for n in nodes.values())
    y0 = min(n["pos"][1] for n in nodes.values())
    x1 = max(n["pos"][0] + n["size"][0] for n in nodes.values())
    y1 = max(n["pos"][1] + n["size"][1] for n in nodes.values())
    box_w, box_h = SIZE - 2 * MARGIN, SIZE - HEADER - MARGIN
    scale = min(box_w / (x1 - x0), box_h / (y1 - y0))
    off_x = MARGIN + (box_w - (x1 - x0) * scale) / 2
    off_y = HEADER + (box_h - (y1 - y0) * scale) / 2

    def rect(node: Mapping) -> tuple[float, float, float, float]:
        x, y = node["pos"]
        w, h = node["size"]
        return (
            off_x + (x - x0) * scale,
            off_y + (y - y0) * scale,
            off_x + (x - x0 + w) * scale,
            off_y + (y - y0 + h) * scale,
        )

    width = max(1, round(3 * scale))
    for _, src, _, dst, _, kind in ui["links"]:
        a, b = rect(nodes[src]), rect(nodes[dst])
        start, end = (a[2], (a[1] + a[3]) / 2), (b[0], (b[1] + b[3]) / 2)
        draw.line([start, end], fill=LINK_COLOURS.get(kind, OTHER_LINK), width=width)
    for node in nodes.values():
        fill = (
            NOTE_FILL
            if node["type"] == "Note"
            else OUR_NODE_FILL
            if node["type"].startswith("Perfusion")
            else NODE_FILL
        )
        draw.rounded_rectangle(rect(node), radius=max(2, round(8 * scale)), fill=fill, outline=(20, 20, 20))
    return img
