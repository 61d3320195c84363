"""Choosing a concept's gate bias from images: one file's operating point on the fidelity /
text-alignment curve, picked by a stated rule from a few samples per bias.

Two text-free proxies score each sample with an image embedder (CLIP vision's image tower, or any
function of images to vectors):

* **fidelity**: the mean cosine similarity of the sample to the concept's training images;
* **alignment**: the cosine similarity of the sample to the image the same seed gives with the
  superclass word in the concept word's place (the prompt as the model knew it before the concept).

Fidelity is then read as a share of the gain the grid achieves: 0 at the superclass images' own
fidelity, 1 at the grid's best. The rule (:func:`choose_bias`): among the biases that keep at least
:data:`FIDELITY_SHARE` of that gain, the one with the highest alignment.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

FIDELITY_SHARE = 0.9  # a chosen bias keeps at least this share of the grid's best fidelity gain
GRID = (0.4, 0.9, 0.1)  # the default grid: lowest bias, highest, step

# Images (B, H, W, 3) with values in [0, 1] -> one embedding per image (B, D).
ImageEmbedder = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class BiasPoint:
    """One bias of the grid, scored over its samples (means over seeds)."""

    bias: float
    fidelity: float
    alignment: float


@dataclass(frozen=True)
class OperatingCurve:
    """The scored grid and the superclass images' own fidelity (where the gain is counted from)."""

    points: tuple[BiasPoint, ...]
    superclass_fidelity: float

    def gain(self, point: BiasPoint) -> float:
        """`point`'s fidelity as a share of the grid's best gain over the superclass images."""
        best = max(p.fidelity for p in self.points) - self.superclass_fidelity
        if best <= 0:
            return 1.0  # no bias raises fidelity: every point keeps "all" of it
        return (point.fidelity - self.superclass_fidelity) / best

    def chosen(self, share: float = FIDELITY_SHARE) -> BiasPoint:
        return choose_bias(self, share)


def choose_bias(curve: OperatingCurve, share: float = FIDELITY_SHARE) -> BiasPoint:
    """The point with the highest alignment among those keeping >= `share` of the fidelity gain
    (ties: the higher bias, the weaker edit)."""
    if not curve.points:
        raise ValueError("the bias grid is empty")
    kept = [p for p in curve.points if curve.gain(p) >= share - 1e-9]
    return max(kept, key=lambda p: (p.alignment, p.bias))


def balanced_bias(curve: OperatingCurve) -> BiasPoint:
    """The point with the largest product of its fidelity gain share and its alignment share (0 at
    the grid's lowest alignment, 1 at its highest): the curve's knee. Unlike :func:`choose_bias` it
    does not follow fidelity to a point that copies the training images, background and all, when
    that point alone holds the last 10 % of the gain (ties: the higher bias)."""
    if not curve.points:
        raise ValueError("the bias grid is empty")
    low = min(p.alignment for p in curve.points)
    span = max(p.alignment for p in curve.points) - low

    def score(p: BiasPoint) -> float:
        return curve.gain(p) * ((p.alignment - low) / span if span > 0 else 1.0)

    return max(curve.points, key=lambda p: (score(p), p.bias))


def bias_grid(low: float, high: float, step: float) -> tuple[float, ...]:
    """`low`, `low + step`, ... up to `high` (inclusive within rounding), rounded to 4 places."""
    if step <= 0:
        raise ValueError(f"bias_step must be > 0 (got {step})")
    if high < low:
        raise ValueError(f"bias_max ({high}) is below bias_min ({low})")
    count = int((high - low) / step + 1e-6) + 1
    return tuple(round(low + k * step, 4) for k in range(count))


def _unit(embeddings: torch.Tensor) -> torch.Tensor:
    return F.normalize(embeddings.double().flatten(1), dim=-1)


def score_curve(
    biases: Sequence[float],
    samples: torch.Tensor,
    superclass: torch.Tensor,
    references: torch.Tensor,
) -> OperatingCurve:
    """The curve from embeddings: `samples` (len(biases), seeds, D), one per bias and seed;
    `superclass` (seeds, D), the same seeds with the superclass word; `references` (N, D), the
    training images."""
    if samples.shape[:2] != (len(biases), superclass.shape[0]):
        raise ValueError(
            f"samples {tuple(samples.shape)} must be (biases {len(biases)}, seeds {superclass.shape[0]}, D)"
        )
    refs, sup = _unit(references), _unit(superclass)
    points = []
    for bias, row in zip(biases, samples):
        emb = _unit(row)
        fidelity = float((emb @ refs.T).mean())
        alignment = float((emb * sup).sum(-1).mean())
        points.append(BiasPoint(float(bias), fidelity, alignment))
    return OperatingCurve(tuple(points), float((sup @ refs.T).mean()))
