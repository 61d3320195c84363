"""The gated rank-1 edit of one K or V projection, for one or many concepts (docs/method.md §2, §4).

For concepts j = 1..J with target inputs i*_j, u_j = C⁻¹ i*_j and target outputs o*_j:

    s_j(e) = eᵀ u_j                       similarity in the C⁻¹ metric
    r_j(e) = s_j(e) / (i*_jᵀ u_j)          1 at e = i*_j, ≈ 0 for unrelated tokens
    g_j(e) = sigmoid((r_j(e) − β_j) / τ_j)  the gate
    c(e)   = M⁻¹ s(e), M_kj = u_kᵀ i*_j    coefficients of e's C⁻¹-projection onto span{i*_j}
                                          (M⁻¹ guarded where concepts' i* coincide: _projection_inverse)
    h(e)   = W e − Σ_j c_j(e) W i*_j + Σ_j g_j(e) o*_j

`W e` and `W i*_j` come from the host's own projection (so weight casting, offloading and
LoRA stay in force); this module only adds the correction, in float32 whatever the model's
dtype. For J = 1, c = r and the edit is docs/method.md §2's; with g replaced by r it is ROME.

Both c(e) and the gates' pre-activations are linear in e, so one (2J × D) matrix gives all 2J
of them in a single matmul, and a second one mixes the 2J output rows into the projection's
output: the edit costs two thin matmuls per call, whatever J.

A bias schedule moves β_j linearly from its start to `beta_end` over sampling progress p ∈ [0, 1]
(0 at the noisiest step): only the gates' offset −β/τ depends on it, so a step costs one more
vector add.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

# Directions of span{i*_j} this much thinner than the widest (relative singular value of the scaled
# M) are dropped from the projection: for two concepts, where their i* have a cosine above
# (1 − 1e-4) / (1 + 1e-4) ≈ 1 − 2e-4 in the C⁻¹ metric; float32 cannot apply coefficients 1e4 times
# larger than the gates without cancelling them to noise.
_COINCIDENT_RTOL = 1e-4


def _projection_inverse(m: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
    """M⁻¹ for c(e) = M⁻¹ s(e), in float64, guarded against concepts whose i* (nearly) coincide.

    Two concepts of one superclass trained briefly both have i* near the superclass encoding, so M
    is (nearly) singular and an exact inverse is huge or fails. M is solved in its scaled form S M S
    (S = diag(E)^-½: ones on the diagonal, the concepts' cosines in the C⁻¹ metric elsewhere) by a
    pseudo-inverse that drops the thin directions, so coinciding concepts are projected out as one
    direction, once, and tokens unrelated to both stay as one concept's edit leaves them. For J = 1
    this is 1 / E exactly.
    """
    scale = energy.rsqrt()
    scaled = scale[:, None] * m * scale[None, :]
    return scale[:, None] * torch.linalg.pinv(scaled, rtol=_COINCIDENT_RTOL) * scale[None, :]


class GatedRank1Edit:
    """Joint gated rank-1 edit for J concepts that share one projection.

    Everything that depends only on the concepts and gate settings is folded at construction,
    in float64, into `mixing` (rows M⁻¹u for c, u / (E τ) for the gates), `offset` (−β/τ at the
    start) and, with a schedule, `offset_change` (what the offset gains by the end).
    """

    def __init__(
        self,
        i_star: torch.Tensor,
        u: torch.Tensor,
        beta: torch.Tensor | Sequence[float],
        tau: torch.Tensor | Sequence[float],
        beta_end: torch.Tensor | Sequence[float] | None = None,
    ) -> None:
        i_star = torch.as_tensor(i_star).double()
        u = torch.as_tensor(u).double()
        if i_star.ndim == 1:
            i_star, u = i_star[None], u[None]
        if i_star.shape != u.shape or i_star.ndim != 2:
            raise ValueError(f"i_star {tuple(i_star.shape)} and u {tuple(u.shape)} must both be (J, D)")
        j = len(u)
        beta = torch.as_tensor(beta, dtype=torch.float64).reshape(-1).expand(j)
        tau = torch.as_tensor(tau, dtype=torch.float64).reshape(-1).expand(j)
        if bool((tau <= 0).any()):
            raise ValueError("temperature must be > 0")
        m = u @ i_star.T
        energy = torch.diagonal(m)
        if bool((energy <= 0).any()):
            raise ValueError("every concept needs i*ᵀ C⁻¹ i* > 0 (is u = C⁻¹ i*?)")
        self.i_star = i_star.float()
        self.mixing = torch.cat([_projection_inverse(m, energy) @ u, u / (energy * tau)[:, None]]).float()
        self.offset = torch.cat([torch.zeros(j, dtype=torch.float64), -beta / tau]).float()
        self.offset_change: torch.Tensor | None = None
        if beta_end is not None:
            beta_end = torch.as_tensor(beta_end, dtype=torch.float64).reshape(-1).expand(j)
            change = torch.cat([torch.zeros(j, dtype=torch.float64), (beta - beta_end) / tau]).float()
            self.offset_change = change if bool(change.any()) else None

    @property
    def num_concepts(self) -> int:
        return int(self.i_star.shape[0])

    def to(self, device: torch.device) -> GatedRank1Edit:
        """A copy on `device` (the math stays float32)."""
        out = object.__new__(GatedRank1Edit)
        for name in ("i_star", "mixing", "offset", "offset_change"):
            value = getattr(self, name)
            setattr(out, name, None if value is None else value.to(device))
        return out

    @property
    def scheduled(self) -> bool:
        """True when some concept's bias moves over sampling progress."""
        return self.offset_change is not None

    def weights(self, e: torch.Tensor, progress: torch.Tensor | float | None = None) -> torch.Tensor:
        """[c(e) | g(e)] for encodings e: (..., D) -> (..., 2J), float32, one matmul. `progress`
        (a scalar in [0, 1]; None: 0) places a scheduled bias between its start and end."""
        offset = self.offset
        if self.offset_change is not None and progress is not None:
            offset = offset + self.offset_change * progress
        z = F.linear(e.float(), self.mixing, offset)
        z[..., self.num_concepts :].sigmoid_()
        return z

    def coefficients(self, e: torch.Tensor) -> torch.Tensor:
        """c(e) with Π(e) = Σ_j c_j i*_j, the C⁻¹-projection of e onto span{i*_j}."""
        return self.weights(e)[..., : self.num_concepts]

    def gates(self, e: torch.Tensor, progress: torch.Tensor | float | None = None) -> torch.Tensor:
        return self.weights(e, progress)[..., self.num_concepts :]

    @staticmethod
    def output_rows(w_i_star: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The (2J, d) rows that `weights` mix: −W i*_j (taken out) and o*_j (put in)."""
        return torch.cat([-w_i_star.float(), targets.float()])

    def apply(
        self,
        base: torch.Tensor,
        e: torch.Tensor,
        rows: torch.Tensor,
        progress: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        """h(e) from the host's W e (`base`, (..., d)) and `output_rows`; in base's dtype."""
        weights = self.weights(e, progress)
        out = torch.addmm(
            base.reshape(-1, base.shape[-1]).float(), weights.reshape(-1, weights.shape[-1]), rows
        )
        return out.view(base.shape).to(base.dtype)
