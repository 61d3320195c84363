"""An image embedder for the toy world, behind the interface the bias chooser gives CLIP vision
(:data:`perfusion_core.operating_point.ImageEmbedder`): random CLIP-vision weights give noise, and
the toy world has no trained image tower, so the chooser's validation scores with plain pixel
features that carry what a sample shows without reading the scorer's labels (no palette, no shape
templates, no places):

* **what is drawn**: a histogram over a coarse RGB grid of the cells that stand out from the
  image's border colour, counted in cells, so it tells a brown ball from a red ball or a pink bar
  wherever it is drawn (what CLIP's identity features do for a photo);
* **the layout**: every cell's mean colour, centred on mid-gray, so it tells backgrounds and
  places apart (what CLIP's scene features do).

Each half is scaled to unit length, so a cosine weighs them equally.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .world import GRID

BINS = 4  # per RGB channel: 64 colour bins
STANDS_OUT = 0.25  # RGB distance (0-1 scale) from the border colour above which a cell is drawn


def cell_colours(images: torch.Tensor) -> torch.Tensor:
    """``(B, GRID, GRID, 3)`` mean colour of each cell of ``(B, H, W, 3)`` images in [0, 1]."""
    x = images.float().clamp(0, 1).permute(0, 3, 1, 2)
    return F.adaptive_avg_pool2d(x, GRID).permute(0, 2, 3, 1)


def embed(images: torch.Tensor) -> torch.Tensor:
    """``(B, 64 + GRID * GRID * 3)``: the drawn cells' colour histogram, then the layout."""
    cells = cell_colours(images)
    flat = cells.flatten(1, 2)  # (B, cells, 3)
    border = torch.cat([cells[:, 0], cells[:, -1], cells[:, 1:-1, 0], cells[:, 1:-1, -1]], dim=1)
    drawn = (flat - border.median(dim=1).values[:, None]).norm(dim=-1) > STANDS_OUT
    index = (flat * BINS).long().clamp(max=BINS - 1)
    bins = (index[..., 0] * BINS + index[..., 1]) * BINS + index[..., 2]
    histogram = torch.zeros(len(images), BINS**3).scatter_add_(1, bins, drawn.float())
    layout = (flat - 0.5).flatten(1)
    return torch.cat([F.normalize(histogram, dim=-1), F.normalize(layout, dim=-1)], dim=-1)
