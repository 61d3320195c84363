"""What training optimises, checked without the host: pure torch on perfusion_core's state."""

import torch

from perfusion_core.training import ConceptTrainingState, TrainingConfig

D, LAYERS = 16, ("a.to_v", "b.to_v")


def state() -> ConceptTrainingState:
    generator = torch.Generator().manual_seed(0)
    basis = torch.randn(64, D, generator=generator, dtype=torch.float64)
    c_inv = torch.linalg.inv(basis.T @ basis / 64)
    return ConceptTrainingState(
        torch.randn(D, generator=generator),
        torch.randn(D, generator=generator),
        {name: torch.randn(8, generator=generator) for name in LAYERS},
        c_inv,
        beta=0.75,
        tau=0.1,
    )


def test_steps_without_gradient_leave_the_trained_tensors_alone():
    """No weight decay: AdamW's would pull o*_V toward 0 (not toward W_V ī_super, where it starts),
    shrinking it by ~11 % over 400 steps at the paper's lr whatever the images say."""
    s = state()
    before = [p.detach().clone() for p in s.parameters()]
    optimizer = s.optimizer(TrainingConfig())
    for _ in range(50):
        for p in s.parameters():
            p.grad = torch.zeros_like(p)
        optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(before, s.parameters(), strict=True))


def test_on_a_device_the_state_holds_no_float64():
    """MPS has no float64: moved to a device, the state keeps C⁻¹ (float64) on the CPU and the edit it
    builds there is float32 ('meta' stands in for a device; on the CPU the check could not fail)."""
    s = state()
    u_before = s.u
    s.to(torch.device("meta"))
    tensors = [t for t in vars(s).values() if isinstance(t, torch.Tensor)]
    tensors += list(s.parameters()) + list(s.buffers())
    assert not [t for t in tensors if t.dtype == torch.float64 and t.device.type != "cpu"]
    plan = s.plan(LAYERS[0], "v", torch.device("meta"))
    edit_tensors = (plan.edit.i_star, plan.edit.mixing, plan.edit.offset, plan.target_outputs)
    assert all(t.device.type == "meta" and t.dtype == torch.float32 for t in edit_tensors)
    assert s.c_inv.device.type == "cpu" and s.c_inv.dtype == torch.float64
    assert u_before.shape == (D,)
