"""The gated rank-1 edit against dense references written out explicitly here."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from perfusion_core.gated_edit import GatedRank1Edit


def random_problem(seed: int, d_in: int = 24, d_out: int = 16, concepts: int = 1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d_in, d_in, generator=g, dtype=dtype)
    cov = a @ a.T / d_in + 0.1 * torch.eye(d_in, dtype=dtype)  # an SPD "C"
    weight = torch.randn(d_out, d_in, generator=g, dtype=dtype)
    i_star = torch.randn(concepts, d_in, generator=g, dtype=dtype)
    o_star = torch.randn(concepts, d_out, generator=g, dtype=dtype)
    e = torch.randn(3, 7, d_in, generator=g, dtype=dtype)
    return cov, weight, i_star, o_star, e


def correction(edit: GatedRank1Edit, e, w_i_star, o_star) -> torch.Tensor:
    """h(e) − W e, in float32: the edit applied to a zero base."""
    zero = torch.zeros(*e.shape[:-1], o_star.shape[-1])
    return edit.apply(zero, e, GatedRank1Edit.output_rows(w_i_star, o_star))


def rome_weight(weight, cov, i_star, o_star):
    """ROME's closed form: W' = W + (o* − W i*) (C⁻¹ i*)ᵀ / (i*ᵀ C⁻¹ i*)."""
    c_inv = torch.linalg.inv(cov)
    u = c_inv @ i_star
    return weight + torch.outer(o_star - weight @ i_star, u) / (i_star @ u)


def test_gate_replaced_by_relevance_is_rome_exactly():
    cov, weight, i_star, o_star, e = random_problem(0)
    u = torch.linalg.inv(cov) @ i_star[0]
    edit = GatedRank1Edit(i_star[0], u, beta=0.0, tau=1.0)
    # For one concept the coefficient c is the relevance r: with r in the gate's place, the
    # correction is r (o* − W i*), and the edit must be ROME's weight update.
    ours = e @ weight.T + edit.coefficients(e).double() @ (o_star - (weight @ i_star.T).T)
    reference = e @ rome_weight(weight, cov, i_star[0], o_star[0]).T
    torch.testing.assert_close(ours.double(), reference, rtol=1e-4, atol=1e-4)


def test_open_gate_maps_i_star_to_o_star():
    cov, weight, i_star, o_star, _ = random_problem(1)
    u = torch.linalg.inv(cov) @ i_star[0]
    edit = GatedRank1Edit(i_star[0], u, beta=-100.0, tau=0.1)  # g(i*) = 1
    out = edit.apply(
        i_star[0] @ weight.T, i_star[0], GatedRank1Edit.output_rows((weight @ i_star.T).T, o_star)
    )
    torch.testing.assert_close(out.double(), o_star[0], rtol=1e-4, atol=1e-4)


def test_closed_gate_removes_only_the_concept_direction():
    cov, weight, i_star, o_star, e = random_problem(2)
    c_inv = torch.linalg.inv(cov)
    u = c_inv @ i_star[0]
    edit = GatedRank1Edit(i_star[0], u, beta=100.0, tau=0.1)  # g = 0 everywhere
    out = edit.apply(e @ weight.T, e, GatedRank1Edit.output_rows((weight @ i_star.T).T, o_star))
    r = (e @ u) / (i_star[0] @ u)
    reference = (e - r[..., None] * i_star[0]) @ weight.T
    torch.testing.assert_close(out.double(), reference, rtol=1e-4, atol=1e-4)


def test_gates_follow_the_sigmoid_formula_per_concept():
    """g_j(e) = sigmoid((r_j(e) − β_j) / τ_j), r_j = eᵀu_j / i*_jᵀu_j: near 0 where r = 0
    (docs/method.md §2)."""
    cov, _, i_star, _, e = random_problem(5, concepts=2)
    u = (torch.linalg.inv(cov) @ i_star.T).T
    beta, tau = torch.tensor([0.6, 0.7], dtype=cov.dtype), torch.tensor([0.15, 0.2], dtype=cov.dtype)
    edit = GatedRank1Edit(i_star, u, beta, tau)
    r = (e @ u.T) / (i_star * u).sum(-1)
    torch.testing.assert_close(edit.gates(e).double(), torch.sigmoid((r - beta) / tau), rtol=1e-4, atol=1e-5)
    unrelated = e[0, 0] - (e[0, 0] @ u[0]) / (i_star[0] @ u[0]) * i_star[0]  # r_1 = 0
    floor = float(torch.sigmoid(-beta[0] / tau[0]))  # sigmoid(−4) ≈ 0.018
    assert abs(float(edit.gates(unrelated)[0]) - floor) < 1e-4 and floor < 0.02


def c_orthogonal_pair(cov: torch.Tensor, seed: int):
    """Two target inputs with i*_1ᵀ C⁻¹ i*_2 = 0."""
    g = torch.Generator().manual_seed(seed)
    c_inv = torch.linalg.inv(cov)
    a = torch.randn(cov.shape[0], generator=g, dtype=cov.dtype)
    b = torch.randn(cov.shape[0], generator=g, dtype=cov.dtype)
    b = b - (a @ c_inv @ b) / (a @ c_inv @ a) * a
    return torch.stack([a, b])


def test_two_c_orthogonal_concepts_equal_the_sum_of_single_edits():
    cov, weight, _, o_star, e = random_problem(3, concepts=2)
    i_star = c_orthogonal_pair(cov, 3)
    u = (torch.linalg.inv(cov) @ i_star.T).T
    w_i = (weight @ i_star.T).T
    joint = GatedRank1Edit(i_star, u, beta=[0.6, 0.7], tau=[0.15, 0.2])
    single = [
        GatedRank1Edit(i_star[j], u[j], beta=b, tau=t) for j, (b, t) in enumerate([(0.6, 0.15), (0.7, 0.2)])
    ]
    total = sum(correction(s, e, w_i[j : j + 1], o_star[j : j + 1]) for j, s in enumerate(single))
    torch.testing.assert_close(correction(joint, e, w_i, o_star), total, rtol=1e-4, atol=1e-4)


def test_joint_projection_is_the_c_inverse_projection():
    """With open gates and targets W i*, every concept input is kept: Π(i*_j) = i*_j (docs/method.md §4)."""
    cov, weight, i_star, _, _ = random_problem(4, concepts=3)
    c_inv = torch.linalg.inv(cov)
    u = (c_inv @ i_star.T).T
    edit = GatedRank1Edit(i_star, u, beta=0.5, tau=0.1)
    coefficients = edit.coefficients(i_star)
    torch.testing.assert_close(coefficients, torch.eye(3), rtol=1e-3, atol=1e-3)
    # Dense reference: P = I* (I*ᵀ C⁻¹ I*)⁻¹ I*ᵀ C⁻¹ (columns of I* are the i*_j)
    istar_cols = i_star.T
    projector = istar_cols @ torch.linalg.inv(istar_cols.T @ c_inv @ istar_cols) @ istar_cols.T @ c_inv
    e = torch.randn(5, cov.shape[0], dtype=cov.dtype, generator=torch.Generator().manual_seed(9))
    ours = edit.coefficients(e).double() @ i_star
    torch.testing.assert_close(ours, e @ projector.T, rtol=1e-3, atol=1e-3)


@settings(max_examples=40, deadline=None)
@given(
    d_in=st.integers(2, 48),
    d_out=st.integers(1, 40),
    concepts=st.integers(1, 4),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
    seed=st.integers(0, 2**16),
)
def test_matches_dense_reference_for_random_shapes_and_dtypes(d_in, d_out, concepts, dtype, seed):
    cov, weight, i_star, o_star, e = random_problem(seed, d_in, d_out, concepts)
    if torch.linalg.matrix_rank(i_star) < concepts:
        return
    c_inv = torch.linalg.inv(cov)
    u = (c_inv @ i_star.T).T
    m = u @ i_star.T
    if torch.linalg.cond(m) > 1e4:
        return  # near-parallel concepts: the projection is ill-posed in any precision
    beta = torch.linspace(0.4, 0.8, concepts)
    tau = torch.linspace(0.1, 0.3, concepts)
    edit = GatedRank1Edit(i_star, u, beta, tau)
    e_low = e.to(dtype)
    out = correction(edit, e_low, (weight @ i_star.T).T, o_star)
    assert out.dtype == torch.float32
    assert (
        edit.apply(torch.zeros(2, d_out, dtype=dtype), e_low[0, :2], torch.zeros(2 * concepts, d_out)).dtype
        == dtype
    )
    # Dense reference in float64 from the rounded inputs.
    e64 = e_low.double()
    s = e64 @ u.T
    r = s / torch.diagonal(m)
    g = torch.sigmoid((r - beta.double()) / tau.double())
    coefficients = s @ torch.linalg.inv(m).T
    projected = e64 - coefficients @ i_star
    reference = projected @ weight.T + g @ o_star - e64 @ weight.T
    scale = 1 + reference.abs().max().item()
    assert (out.double() - reference).abs().max().item() <= 2e-3 * scale


def test_rejects_bad_parameters():
    with pytest.raises(ValueError, match="temperature"):
        GatedRank1Edit(torch.ones(4), torch.ones(4), beta=0.5, tau=0.0)
    with pytest.raises(ValueError, match="C⁻¹"):
        GatedRank1Edit(torch.ones(4), -torch.ones(4), beta=0.5, tau=0.1)


def twin_concepts(seed: int, offset: float):
    """Two concepts whose i* coincide up to `offset` (same superclass start, little training)."""
    cov, weight, i_star, o_star, e = random_problem(seed, concepts=2)
    noise = torch.randn(i_star.shape[1], generator=torch.Generator().manual_seed(seed), dtype=cov.dtype)
    i_star = torch.stack([i_star[0], i_star[0] + offset * noise])
    return cov, weight, i_star, (torch.linalg.inv(cov) @ i_star.T).T, o_star, e


@pytest.mark.parametrize("offset", [0.0, 1e-9, 1e-6])
def test_concepts_with_coinciding_i_star_stay_finite_and_leave_other_tokens_alone(offset):
    """Near-identical i* make M = U I*ᵀ singular: the projection falls back to their shared direction,
    so tokens unrelated to both are edited as by one concept (before: a LinAlgError, or c(e) blown up
    along the noise between the two i*, changing every token)."""
    cov, weight, i_star, u, o_star, e = twin_concepts(11, offset)
    beta, tau = [0.6, 0.7], [0.15, 0.2]
    edit = GatedRank1Edit(i_star, u, beta, tau)
    assert torch.isfinite(edit.mixing).all()
    w_i = (weight @ i_star.T).T
    out = correction(edit, e, w_i, o_star).double()
    # One concept's projection, both gates: h(e) − W e = −r(e) W i*_1 + Σ_j g_j(e) o*_j.
    r = (e @ u[0]) / (i_star[0] @ u[0])
    gates = edit.gates(e).double()
    reference = -r[..., None] * w_i[0] + gates @ o_star
    torch.testing.assert_close(out, reference, rtol=1e-3, atol=1e-3)
    # The twins' own tokens: W i* is taken out once, and both gates open.
    twin = correction(edit, i_star[:1], w_i, o_star).double()
    torch.testing.assert_close(
        twin[0], -w_i[0] + edit.gates(i_star[0]).double() @ o_star, rtol=1e-3, atol=1e-3
    )


def test_a_concept_set_with_twin_concepts_warns_naming_both_and_plans_finite_edits(caplog):
    """Same superclass, short training: the set says which two concepts the gates cannot tell apart."""
    import dataclasses
    import logging

    from hostile_files import make_sd15_concept

    from perfusion_core.concept_set import AppliedConcept, ConceptSet

    def crosstalk():  # one superclass also warns of identical keys (tests/test_concept_set.py)
        return [r.getMessage() for r in caplog.records if "nearly the same" in r.getMessage()]

    hugsy = make_sd15_concept(0, word="hugsy")
    zorbo = make_sd15_concept(1, word="zorbo")
    apart = (AppliedConcept(hugsy, 0.7, 0.15), AppliedConcept(zorbo, 0.7, 0.15))
    with caplog.at_level(logging.WARNING, logger="comfyui-perfusion"):
        ConceptSet(apart)
    assert not crosstalk()
    twin = dataclasses.replace(zorbo, i_star=hugsy.i_star + 1e-7, u=hugsy.u)
    with caplog.at_level(logging.WARNING, logger="comfyui-perfusion"):
        concepts = ConceptSet((apart[0], AppliedConcept(twin, 0.7, 0.15)))
    (message,) = crosstalk()
    assert "'hugsy' and 'zorbo'" in message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="comfyui-perfusion"):  # a third concept chained on
        concepts.extended((AppliedConcept(make_sd15_concept(2, word="blorp"), 0.7, 0.15),))
    assert not crosstalk()  # the pair was warned about when it was applied
    layer = next(iter(hugsy.v_targets))
    plan = concepts.plan(layer, "v", torch.device("cpu"))
    assert torch.isfinite(plan.edit.mixing).all()


@pytest.mark.parametrize("progress", [0.0, 0.25, 1.0])
def test_a_bias_schedule_is_the_edit_at_the_interpolated_bias(progress):
    """Each concept's bias moves linearly from its start to its end; a concept without a schedule
    (end = start) keeps its bias."""
    cov, weight, i_star, o_star, e = random_problem(5, concepts=2)
    u = torch.linalg.solve(cov, i_star.T).T
    start, end, tau = [0.8, 0.6], [0.4, 0.6], [0.15, 0.2]
    scheduled = GatedRank1Edit(i_star, u, start, tau, beta_end=end)
    at = [b + (c - b) * progress for b, c in zip(start, end)]
    fixed = GatedRank1Edit(i_star, u, at, tau)
    w_i_star = (weight @ i_star.T).T
    assert scheduled.scheduled and not fixed.scheduled
    ours = scheduled.apply(torch.zeros(3, 7, 16), e, GatedRank1Edit.output_rows(w_i_star, o_star), progress)
    torch.testing.assert_close(ours, correction(fixed, e, w_i_star, o_star), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(scheduled.gates(e, torch.tensor(progress)), fixed.gates(e))


def test_a_schedule_that_goes_nowhere_is_no_schedule():
    _, _, i_star, _, e = random_problem(6)
    edit = GatedRank1Edit(i_star[0], i_star[0], 0.7, 0.15, beta_end=0.7)
    assert not edit.scheduled
    torch.testing.assert_close(edit.gates(e, 1.0), GatedRank1Edit(i_star[0], i_star[0], 0.7, 0.15).gates(e))
