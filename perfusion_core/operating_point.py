"""Choosing a concept's gate bias from images: one file's operating point on the fidelity /
text-alignment curve, picked by a stated rule from a few samples per bias.

Two text-free proxies score each sample with an image embedder (CLIP vision's image tower, or any
function of images to vectors):

* **fidelity**: the mean cosine similarity of the sample to the concept's training images;
* **alignment**: the cosine similarity of the sample to the image the same seed gives with the
  superclass word in the concept word's place (the prompt as the model knew it before the concept).

Both are read as shares of what the grid spans: fidelity as a share of the gain over the superclass
images' own fidelity (0 there, 1 at the grid's best), alignment as a share of its range over the grid.
The rule (:func:`choose_bias`) takes the curve's knee: the bias with the largest product of the two.
It replaced "the highest alignment keeping 90 % of the fidelity gain" (:func:`fidelity_share_bias`,
kept for the benchmark's comparison) because on the toy world that rule ranked near-ties by an
alignment proxy that did not rank alignment (README, "Choose Perfusion Bias").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

FIDELITY_SHARE = 0.9  # the earlier rule's floor: the share of the grid's best fidelity gain it keeps
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

    def alignment_share(self, point: BiasPoint) -> float:
        """`point`'s alignment as a share of the grid's range: 0 at its lowest, 1 at its highest."""
        low = min(p.alignment for p in self.points)
        span = max(p.alignment for p in self.points) - low
        return (point.alignment - low) / span if span > 0 else 1.0

    def knee_score(self, point: BiasPoint) -> float:
        """What :func:`choose_bias` maximises: the fidelity gain share times the alignment share."""
        return self.gain(point) * self.alignment_share(point)

    def chosen(self) -> BiasPoint:
        return choose_bias(self)


def choose_bias(curve: OperatingCurve) -> BiasPoint:
    """The node's rule: the point with the largest :meth:`OperatingCurve.knee_score` (ties: the higher
    bias, the weaker edit). It does not follow fidelity to a point that copies the training images,
    background and all, when that point alone holds the last few percent of the gain."""
    if not curve.points:
        raise ValueError("the bias grid is empty")
    return max(curve.points, key=lambda p: (curve.knee_score(p), p.bias))


def fidelity_share_bias(curve: OperatingCurve, share: float = FIDELITY_SHARE) -> BiasPoint:
    """The earlier rule: the highest alignment among the points keeping >= `share` of the fidelity
    gain (ties: the higher bias)."""
    if not curve.points:
        raise ValueError("the bias grid is empty")
    kept = [p for p in curve.points if curve.gain(p) >= share - 1e-9]
    return max(kept, key=lambda p: (p.alignment, p.bias))


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
