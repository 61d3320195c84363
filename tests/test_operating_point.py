"""The bias chooser's rule and scores (perfusion_core.operating_point), on curves written out here."""

import pytest
import torch

from perfusion_core.operating_point import (
    BiasPoint,
    OperatingCurve,
    bias_grid,
    choose_bias,
    fidelity_share_bias,
    score_curve,
)


def curve(points, superclass_fidelity=0.0) -> OperatingCurve:
    return OperatingCurve(tuple(BiasPoint(*p) for p in points), superclass_fidelity)


def test_the_earlier_rule_keeps_90_percent_of_the_fidelity_gain():
    # gains over the superclass's 0.5: 0.40, 0.38, 0.36 (90 %), 0.20; alignment rises with bias
    c = curve([(0.5, 0.90, 0.1), (0.6, 0.88, 0.3), (0.7, 0.86, 0.5), (0.8, 0.70, 0.9)], 0.5)
    assert fidelity_share_bias(c).bias == 0.7
    assert fidelity_share_bias(c, share=0.5).bias == 0.8
    assert fidelity_share_bias(c, share=1.0).bias == 0.5
    # the knee: gain shares 1, 0.95, 0.9, 0.5 times alignment shares 0, 0.25, 0.5, 1
    assert [c.knee_score(p) for p in c.points] == pytest.approx([0.0, 0.2375, 0.45, 0.5])
    assert choose_bias(c).bias == 0.8 == c.chosen().bias


def test_gain_counts_from_the_superclass_images_not_from_zero():
    # raw fidelity 0.86 is 96 % of the best 0.90, but only 60 % of the gain over 0.80
    c = curve([(0.5, 0.90, 0.1), (0.7, 0.86, 0.9)], 0.80)
    assert c.gain(c.points[1]) == pytest.approx(0.6)
    assert fidelity_share_bias(c).bias == 0.5
    assert c.knee_score(c.points[1]) == pytest.approx(0.6)


def test_a_curve_with_no_gain_keeps_every_point_and_ties_go_to_the_higher_bias():
    c = curve([(0.5, 0.4, 0.7), (0.9, 0.4, 0.7)], 0.5)
    assert choose_bias(c).bias == 0.9 == fidelity_share_bias(c).bias


def test_the_rule_takes_the_knee_not_a_copy_of_the_training_images():
    # bias 0.5 copies the training photos (all the gain, no alignment); 0.6 keeps 75 % of the gain
    # at 80 % of the alignment span; 0.8 is the superclass's own image
    c = curve([(0.5, 0.9, 0.1), (0.6, 0.8, 0.5), (0.7, 0.6, 0.55), (0.8, 0.5, 0.6)], 0.5)
    assert fidelity_share_bias(c).bias == 0.5
    assert choose_bias(c).bias == 0.6
    for rule in (choose_bias, fidelity_share_bias):
        with pytest.raises(ValueError, match="empty"):
            rule(curve([]))


def test_bias_grid_and_its_errors_name_the_widgets():
    assert bias_grid(0.4, 0.9, 0.1) == (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    assert bias_grid(0.7, 0.7, 0.1) == (0.7,)
    with pytest.raises(ValueError, match="bias_step"):
        bias_grid(0.4, 0.9, 0.0)
    with pytest.raises(ValueError, match="bias_max"):
        bias_grid(0.9, 0.4, 0.1)


def test_scores_are_cosines_to_the_references_and_to_the_same_seeds_superclass_image():
    e = torch.eye(3, dtype=torch.float64)
    refs = e[:1]  # the training images embed along x
    superclass = torch.stack([e[1], e[2]])  # two seeds, each its own direction
    samples = torch.stack(
        [
            torch.stack([e[0], e[0]]),  # bias 0.5: the training images exactly
            torch.stack([(e[0] + e[1]) * 5, (e[0] + e[2]) * 5]),  # bias 0.9: half way, norm ignored
        ]
    )
    c = score_curve([0.5, 0.9], samples, superclass, refs)
    assert c.superclass_fidelity == pytest.approx(0.0)
    assert [p.fidelity for p in c.points] == pytest.approx([1.0, 2**-0.5])
    assert [p.alignment for p in c.points] == pytest.approx([0.0, 2**-0.5])
    with pytest.raises(ValueError, match="seeds"):
        score_curve([0.5], samples, superclass, refs)
