"""Coulomb: the electrostatic energy of point charges, periodic (Ewald, PME) or open (direct),
or screened (Yukawa), as a differentiable, TorchScript-compatible module.

    coulomb = Coulomb(cutoff=1.0, method="pme", tolerance=5e-4)     # configured once
    energy = coulomb(positions, charges, box)                       # kJ/mol, autograd-ready

The reciprocal-space sums, the real-space erfc kernel, the self term and the neutralising
background come from torch-pme (its ``EwaldCalculator``/``PMECalculator`` with a
``CoulombPotential``); α and the grid follow from ``tolerance`` as in OpenMM (see
:mod:`multiscale.electrostatics.parameters`); the pair list comes from vesin. This module adds
what torch-pme leaves to its caller: the real-space cutoff (torch-pme sums whatever pairs it is
given), OpenMM units and prefactor, wrapping, input checks, excluded pairs, and the screened
interaction (torch-pme has no Yukawa kernel; it is one line, below).

Units: positions and box (rows a, b, c) in nm, charges in e, energy in kJ/mol.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torchpme
import vesin_torch

from multiscale.electrostatics.pairs import all_pairs, minimum_image_vectors, pair_vectors
from multiscale.electrostatics.parameters import METHODS, EwaldParameters, ewald_parameters
from multiscale.neighbors import wrap_positions
from multiscale.units import ONE_4PI_EPS0

#: Real-space cutoffs (nm) accepted: below 0.2 nm the Ewald split is meaningless; above 10 nm the
#: value is almost surely in Å.
MIN_COULOMB_CUTOFF_NM = 0.2
MAX_COULOMB_CUTOFF_NM = 10.0
_DTYPES = ("float32", "float64")


def check_exclusions(exclusions, num_particles: Optional[int] = None) -> torch.Tensor:
    """``exclusions`` (pairs of particle indices) as an (E, 2) int64 tensor, refusing what is not
    a list of distinct index pairs."""
    if exclusions is None:
        return torch.zeros(0, 2, dtype=torch.long)
    pairs = torch.as_tensor(exclusions)
    if pairs.numel() == 0:
        return torch.zeros(0, 2, dtype=torch.long)
    if pairs.is_floating_point() or pairs.dim() != 2 or pairs.shape[1] != 2:
        raise ValueError(
            f"exclusions must be a list of (i, j) particle-index pairs, got an array of shape {tuple(pairs.shape)} "
            f"and dtype {pairs.dtype}"
        )
    pairs = pairs.to(torch.long)
    if bool((pairs < 0).any()):
        raise ValueError("exclusions contain a negative particle index; pass 0-based indices")
    if bool((pairs[:, 0] == pairs[:, 1]).any()):
        raise ValueError("exclusions contain a pair (i, i); a particle has no Coulomb interaction with itself to exclude")
    if num_particles is not None and bool((pairs >= num_particles).any()):
        raise ValueError(
            f"exclusions name particle {int(pairs.max())} but there are only {num_particles} particles"
        )
    low, high = torch.minimum(pairs[:, 0], pairs[:, 1]), torch.maximum(pairs[:, 0], pairs[:, 1])
    keys = low * (int(high.max()) + 1) + high
    if int(torch.unique(keys).numel()) != int(keys.numel()):
        raise ValueError("exclusions list the same pair twice; list each excluded pair once")
    return torch.stack([low, high], dim=1)


def _check_inputs(positions: torch.Tensor, charges: torch.Tensor, box: Optional[torch.Tensor], method: str) -> None:
    if positions.dim() != 2 or positions.shape[1] != 3:
        raise ValueError("positions must have shape (N, 3), in nm")
    if charges.dim() != 1 or charges.shape[0] != positions.shape[0]:
        raise ValueError(
            "charges must have shape (N,), one charge in e per particle; got "
            + str(charges.shape[0] if charges.dim() == 1 else -1)
            + " charges for "
            + str(positions.shape[0])
            + " particles"
        )
    if not bool(torch.isfinite(positions).all()):
        raise ValueError("positions contain NaN or Inf; check the coordinates (nm) or the simulation for a blow-up")
    if not bool(torch.isfinite(charges).all()):
        raise ValueError("charges contain NaN or Inf")
    if box is None:
        if method == "ewald" or method == "pme":
            raise ValueError(
                "method '" + method + "' needs a periodic box (3, 3) in nm; for a cluster use method='direct'"
            )
    else:
        if box.dim() != 2 or box.shape[0] != 3 or box.shape[1] != 3:
            raise ValueError("box must be a (3, 3) tensor whose rows are the cell vectors a, b, c in nm")
        if method == "direct":
            raise ValueError(
                "method 'direct' sums a cluster's pairs and takes no box; for a periodic system use 'pme' or 'ewald'"
            )
        if not float(torch.det(box.detach().to(torch.float64))) > 0.0:
            raise ValueError("box has zero or negative volume; pass right-handed cell vectors (rows a, b, c) in nm")


class Coulomb(torch.nn.Module):
    """Electrostatic energy E(positions, charges, box) in kJ/mol.

    Parameters
    ----------
    cutoff: real-space cutoff in nm (Ewald/PME); the pair cutoff of the screened interaction.
    method: "pme" or "ewald" (periodic box), "direct" (open boundaries: every pair).
    tolerance: OpenMM's ``ewaldErrorTolerance``; α and the grid follow from it as in OpenMM
        (``self.parameters`` reports them; ``self.parameters.mesh(box)`` the PME grid).
    screening_length: λ in nm: use the screened (Yukawa) pair energy q_i q_j e^{−r/λ}/(4πε₀ r)
        for r < cutoff instead of 1/r; needs no Ewald sum. ``cutoff`` must reach λ·ln(1/tolerance)
        so that the neglected tail is below ``tolerance`` of the pair energy.
    dtype: "float32" or "float64" arithmetic (inputs are cast; positions are wrapped into the
        cell before the cast).
    exclusions: optional (i, j) pairs whose Coulomb interaction is removed entirely, in real and
        reciprocal space (OpenMM's exclusions: the reciprocal sum's erf(αr)/r of the nearest
        image is subtracted). ``forward(..., exclusions=)`` overrides them per call.

    The energy includes the self term and, for a net charge Q, the neutralising-plasma term
    −πQ²/(2Vα²)/(4πε₀) (torch-pme's background correction, OpenMM's convention). It is
    differentiable with respect to positions, box (virial) and charges (predicted charges).
    """

    __jit_ignored_attributes__ = ["parameters"]

    def __init__(
        self,
        cutoff: float,
        method: str = "pme",
        tolerance: float = 5e-4,
        screening_length: Optional[float] = None,
        dtype: str = "float32",
        *,
        exclusions: Optional[Sequence[Sequence[int]]] = None,
    ):
        super().__init__()
        if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float)) or not math.isfinite(cutoff):
            raise ValueError(f"cutoff must be a distance in nm (e.g. 1.0), got {cutoff!r}")
        if not MIN_COULOMB_CUTOFF_NM <= cutoff <= MAX_COULOMB_CUTOFF_NM:
            hint = " (it looks like Å: divide by 10)" if cutoff > MAX_COULOMB_CUTOFF_NM else ""
            raise ValueError(
                f"cutoff={cutoff!r} nm is outside {MIN_COULOMB_CUTOFF_NM}..{MAX_COULOMB_CUTOFF_NM} nm{hint}; "
                "electrostatic real-space cutoffs are typically 0.8-1.2 nm"
            )
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
        self.parameters: EwaldParameters = ewald_parameters(float(cutoff), float(tolerance), method)
        self.cutoff = float(cutoff)
        self.tolerance = float(tolerance)
        self.method = method
        self.alpha = float(self.parameters.alpha)
        self.prefactor = float(ONE_4PI_EPS0)
        self.screened = screening_length is not None
        self.screening_length = 0.0
        if screening_length is not None:
            screening_length = float(screening_length)
            if not screening_length > 0:
                raise ValueError(f"screening_length must be a positive length in nm, got {screening_length!r}")
            reach = screening_length * math.log(1.0 / self.tolerance)
            if self.cutoff < reach:
                raise ValueError(
                    f"cutoff {self.cutoff:g} nm is too short for screening_length {screening_length:g} nm: the "
                    f"screened interaction there is still exp(-{self.cutoff / screening_length:.2g}) of its bare value, "
                    f"more than tolerance={self.tolerance:g}. Use cutoff >= {reach:.3g} nm (or a larger tolerance)"
                )
            self.screening_length = screening_length
        self.dtype_name = dtype
        self.register_buffer("exclusions", check_exclusions(exclusions))
        potential = torchpme.CoulombPotential(
            smearing=None if method == "direct" else float(self.parameters.smearing), prefactor=self.prefactor
        )
        if method == "pme":
            # torch-pme's mesh_spacing is twice the grid spacing (its get_ns_mesh makes 2 L/h + 1 points)
            self.calculator = torchpme.PMECalculator(
                potential, mesh_spacing=2.0 * self.parameters.mesh_spacing,
                interpolation_nodes=int(self.parameters.interpolation_nodes),
            )
        elif method == "ewald":
            # torch-pme keeps |n| <= ns/2 along each axis with ns = ceil(2 L / lr_wavelength): wavelength pi/k_cutoff
            # reaches every |k| <= k_cutoff
            self.calculator = torchpme.EwaldCalculator(potential, lr_wavelength=math.pi / self.parameters.k_cutoff)
        else:
            self.calculator = torchpme.Calculator(potential)
        self.pair_list = vesin_torch.NeighborList(cutoff=self.cutoff, full_list=False)
        self.to(getattr(torch, dtype))

    @torch.jit.unused
    def extra_repr(self) -> str:
        kind = f"screening_length={self.screening_length:g}" if self.screened else f"method={self.method!r}, alpha={self.alpha:.6g}/nm"
        return f"cutoff={self.cutoff:g} nm, tolerance={self.tolerance:g}, {kind}, dtype={self.dtype_name}"

    # ------------------------------------------------------------------ entry points
    def forward(
        self,
        positions: torch.Tensor,
        charges: torch.Tensor,
        box: Optional[torch.Tensor] = None,
        exclusions: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Electrostatic energy in kJ/mol (0-d tensor in this module's dtype)."""
        method = "direct" if self.screened and box is None else ("pme" if self.screened else self.method)
        _check_inputs(positions, charges, box, method)
        pos, cell = self.prepare(positions, box)
        i, j, shifts = self.pairs(pos, cell)
        # vesin's list holds only pairs within the cutoff (the direct sum takes every pair)
        return self.energy_from_pairs(pos, charges, cell, i, j, shifts, exclusions, True)

    def prepare(self, positions: torch.Tensor, box: Optional[torch.Tensor]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Positions (wrapped into the cell in their own precision first) and box in this
        module's dtype."""
        dtype = self.calculator.potential.prefactor.dtype
        if box is None:
            return positions.to(dtype), None
        return wrap_positions(positions, box).to(dtype), box.to(dtype)

    def pairs(self, positions: torch.Tensor, box: Optional[torch.Tensor]) -> List[torch.Tensor]:
        """``[i, j, shifts]``: a half list of the pairs the real-space sum runs over (every pair
        of a cluster for the direct sum)."""
        if box is None and not self.screened:
            i, j = all_pairs(positions.shape[0], positions.device)
            return [i, j, torch.zeros(i.shape[0], 3, dtype=positions.dtype, device=positions.device)]
        points = positions.detach()
        cell = box.detach() if box is not None else torch.zeros(3, 3, dtype=points.dtype, device=points.device)
        i, j, s = self.pair_list.compute(points=points, box=cell, periodic=box is not None, quantities="ijS", copy=False)
        return [i.to(torch.long), j.to(torch.long), s.to(points.dtype)]

    def energy_from_pairs(
        self,
        positions: torch.Tensor,
        charges: torch.Tensor,
        box: Optional[torch.Tensor],
        i: torch.Tensor,
        j: torch.Tensor,
        shifts: torch.Tensor,
        exclusions: Optional[torch.Tensor] = None,
        within_cutoff: bool = False,
    ) -> torch.Tensor:
        """Energy from a given half pair list (i, j, integer cell shifts), e.g. one shared with a
        short-range model; pairs beyond the cutoff are dropped here (``within_cutoff=True``: the
        list holds none, skip the filter). ``positions`` and ``box`` already in this module's
        dtype (see :meth:`prepare`)."""
        q = charges.to(positions.dtype)
        vectors = pair_vectors(positions, i, j, shifts, box)
        distances = torch.linalg.norm(vectors, dim=1)
        if (self.method != "direct" or self.screened) and not within_cutoff:
            inside = distances < self.cutoff
            i, j, distances = i[inside], j[inside], distances[inside]
        if self.screened:
            energy = self.prefactor * (q[i] * q[j] * torch.exp(-distances / self.screening_length) / distances).sum()
        else:
            cell = box if box is not None else torch.zeros(3, 3, dtype=positions.dtype, device=positions.device)
            potential = self.calculator.forward(
                charges=q.unsqueeze(1), cell=cell, positions=positions,
                neighbor_indices=torch.stack([i, j], dim=1), neighbor_distances=distances,
            )
            energy = (q.unsqueeze(1) * potential).sum()
        excluded = self.exclusions if exclusions is None else exclusions.to(torch.long)
        if excluded.shape[0] > 0:
            energy = energy - self.excluded_energy(positions, q, box, excluded)
        return energy

    def excluded_energy(
        self, positions: torch.Tensor, charges: torch.Tensor, box: Optional[torch.Tensor], exclusions: torch.Tensor
    ) -> torch.Tensor:
        """The energy the excluded pairs contribute to the unexcluded sum (to subtract): the bare
        (or screened) pair energy within the cutoff, plus, for Ewald/PME, the reciprocal sum's
        erf(αr)/r beyond it."""
        if int(exclusions.max()) >= positions.shape[0]:
            raise ValueError(
                "exclusions name particle " + str(int(exclusions.max())) + " but there are only "
                + str(positions.shape[0]) + " particles"
            )
        a, b = exclusions[:, 0], exclusions[:, 1]
        r = torch.linalg.norm(minimum_image_vectors(positions, a, b, box), dim=1)
        qq = charges[a] * charges[b]
        within = (r < self.cutoff).to(r.dtype)
        if self.screened:
            kernel = within * torch.exp(-r / self.screening_length) / r
        elif box is None:
            kernel = 1.0 / r
        else:
            erf = torch.erf(self.alpha * r)
            kernel = (erf + within * (1.0 - erf)) / r
        return self.prefactor * (qq * kernel).sum()

    @torch.jit.unused
    def describe(self, box=None) -> Dict[str, object]:
        """The parameters in use (α, smearing, grid spacing, and for a ``box`` the PME grid)."""
        info = dict(self.parameters.to_dict())
        if self.screened:
            info = {"method": "screened", "cutoff": self.cutoff, "screening_length": self.screening_length}
        elif box is not None and self.method == "pme":
            info["mesh"] = self.parameters.mesh(box)
        return info
