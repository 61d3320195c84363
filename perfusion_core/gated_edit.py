"""The gated rank-1 edit of one K or V projection, for one or many concepts (spec §2, §4).

For concepts j = 1..J with target inputs i*_j, u_j = C⁻¹ i*_j and target outputs o*_j:

    s_j(e) = eᵀ u_j                       similarity in the C⁻¹ metric
    r_j(e) = s_j(e) / (i*_jᵀ u_j)          1 at e = i*_j, ≈ 0 for unrelated tokens
    g_j(e) = sigmoid((r_j(e) − β_j) / τ_j)  the gate
    c(e)   = M⁻¹ s(e), M_kj = u_kᵀ i*_j    coefficients of e's C⁻¹-projection onto span{i*_j}
    h(e)   = W e − Σ_j c_j(e) W i*_j + Σ_j g_j(e) o*_j

`W e` and `W i*_j` come from the host's own projection (so weight casting, offloading and
LoRA stay in force); this module only computes the correction, in float32 whatever the
model's dtype. For J = 1, c = r and the edit is spec §2's; with g replaced by r it is ROME.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def gate(r: torch.Tensor, beta: torch.Tensor | float, tau: torch.Tensor | float) -> torch.Tensor:
    """The sigmoid gate: near 0 for unrelated tokens, near 1 at the concept (spec §2)."""
    return torch.sigmoid((r - beta) / tau)


class GatedRank1Edit:
    """Joint gated rank-1 edit for J concepts that share one projection.

    Everything that depends only on the concepts (the J×J projection matrix and the energies)
    is computed once here; a call costs two small matmuls per token batch.
    """

    def __init__(
        self,
        i_star: torch.Tensor,
        u: torch.Tensor,
        beta: torch.Tensor | Sequence[float],
        tau: torch.Tensor | Sequence[float],
    ) -> None:
        i_star = torch.as_tensor(i_star, dtype=torch.float32)
        u = torch.as_tensor(u, dtype=torch.float32)
        if i_star.ndim == 1:
            i_star, u = i_star[None], u[None]
        if i_star.shape != u.shape or i_star.ndim != 2:
            raise ValueError(f"i_star {tuple(i_star.shape)} and u {tuple(u.shape)} must both be (J, D)")
        self.i_star = i_star
        self.u = u
        self.beta = torch.as_tensor(beta, dtype=torch.float32).reshape(-1).expand(len(u)).clone()
        self.tau = torch.as_tensor(tau, dtype=torch.float32).reshape(-1).expand(len(u)).clone()
        if bool((self.tau <= 0).any()):
            raise ValueError("temperature must be > 0")
        # M[k, j] = u_k · i*_j; inverted in float64 because nearly parallel concepts make it ill-conditioned.
        m = u.double() @ i_star.double().T
        self.energy = torch.diagonal(m).float().clone()
        if bool((self.energy <= 0).any()):
            raise ValueError("every concept needs i*ᵀ C⁻¹ i* > 0 (is u = C⁻¹ i*?)")
        self.projection = torch.linalg.inv(m).T.float().contiguous()  # c = s @ projection

    @property
    def num_concepts(self) -> int:
        return int(self.u.shape[0])

    def to(self, device: torch.device) -> GatedRank1Edit:
        """A copy on `device` (the math stays float32)."""
        out = object.__new__(GatedRank1Edit)
        for name in ("i_star", "u", "beta", "tau", "energy", "projection"):
            setattr(out, name, getattr(self, name).to(device))
        return out

    def similarity(self, e: torch.Tensor) -> torch.Tensor:
        """s(e) = eᵀ u_j for every concept: (..., D) -> (..., J), in float32."""
        return e.float() @ self.u.T

    def relevance(self, s: torch.Tensor) -> torch.Tensor:
        """r_j = s_j / E_j."""
        return s / self.energy

    def gates(self, s: torch.Tensor) -> torch.Tensor:
        return gate(self.relevance(s), self.beta, self.tau)

    def coefficients(self, s: torch.Tensor) -> torch.Tensor:
        """c(e) with Π(e) = Σ_j c_j i*_j, the C⁻¹-projection of e onto span{i*_j}."""
        return s @ self.projection

    @staticmethod
    def correction(
        coefficients: torch.Tensor, gates: torch.Tensor, w_i_star: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """−Σ c_j W i*_j + Σ g_j o*_j as one matmul over the 2J stacked rows."""
        weights = torch.cat([-coefficients, gates], dim=-1)
        return weights @ torch.cat([w_i_star.float(), targets.float()], dim=0)

    def delta(self, e: torch.Tensor, w_i_star: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """h(e) − W e for encodings e (..., D); w_i_star and targets are (J, d). Returns float32."""
        s = self.similarity(e)
        return self.correction(self.coefficients(s), self.gates(s), w_i_star, targets)
