"""Electrostatic embedding: the ML force of a mixed ML/MM System whose ML region carries the
charges its model predicts, polarised by the force-field charges around it.

    E = E_model(r_ML) + E_cross,     E_cross = Σ_{i ∈ ML} q_i(r_ML) V_MM(r_i)

* ``E_model``: the :class:`~multiscale.models.HybridPotential` on the ML atoms alone (its
  short-range network and its own Coulomb energy of the predicted charges: the ML–ML
  electrostatics).
* ``V_MM(r_i)``: the electrostatic potential of the force-field charges of the MM atoms at ML atom
  i, with the System's electrostatics: under PME/Ewald every periodic image and the neutralising
  background of a net charge, computed by torch-pme with the System's cutoff and
  ``ewaldErrorTolerance`` (α and grid as OpenMM chooses them); without a box (``NoCutoff``), the
  plain 1/r sum.
* The force is the exact −∇E on every particle: on MM atoms through V_MM, on ML atoms through
  V_MM and through the charges (the dq/dr term, by autograd).

The MM–MM electrostatics stay in OpenMM's NonbondedForce, where the ML atoms' charges are zero
(:func:`multiscale.openmm.create_mixed_system` sets that up), so nothing is counted twice: the
total is the Ewald energy of the combined charge set, with the ML–ML part as the model computes it.

Periodic convention of the model (both embeddings): a model whose Coulomb is periodic (PME, Ewald,
screened) sees the ML atoms in the System's cell, so the ML region interacts with its own images
through the model; a model whose Coulomb is a cluster's direct sum (trained on molecules in
vacuum) sees the ML region as one molecule, made whole by the nearest image of each atom to the
region's first atom (the region must be smaller than half the cell), and without its images.

Why the real-space part is written here rather than by torch-pme's usual neighbour list: only the
n_ML × N pairs between the ML region and the MM atoms matter, and a list over all N atoms would
cost far more than those. The nearest image from rounded fractional coordinates is exact for
every pair closer than half the narrowest cell width, which OpenMM already demands of its cutoff
(and which :func:`check_cutoff_fits` checks at every call, since a barostat changes the cell).

Units: nm, e, kJ/mol.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from e3nn.util.jit import compile_mode

import openmm

from multiscale.electrostatics.coulomb import Coulomb
from multiscale.models.io import model_from_state, model_state
from multiscale.openmm.bridge import check_box_was_set
from multiscale.neighbors import wrap_positions
from multiscale.units import ONE_4PI_EPS0


def make_whole(positions: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Each position moved by whole cell vectors to the image nearest the first one: a molecule
    (smaller than half the cell) made whole across the periodic boundary."""
    offsets = positions - positions[0:1]
    fractional = offsets.detach() @ torch.linalg.inv(box.detach().to(positions.dtype))
    return positions - torch.round(fractional) @ box.to(positions.dtype)


def check_cutoff_fits(box: torch.Tensor, cutoff: float) -> None:
    """Refuse a cell narrower than twice the cutoff (then a pair could have two images within it)."""
    a, b, c = box[0], box[1], box[2]
    volume = torch.abs(torch.det(box))
    widths = torch.stack([
        volume / torch.linalg.norm(torch.linalg.cross(b, c)),
        volume / torch.linalg.norm(torch.linalg.cross(c, a)),
        volume / torch.linalg.norm(torch.linalg.cross(a, b)),
    ])
    if float(widths.min()) < 2.0 * cutoff:
        raise ValueError(
            "the periodic cell's narrowest width " + str(float(widths.min())) + " nm is less than twice the "
            "electrostatic cutoff " + str(cutoff) + " nm; use a larger box or a shorter cutoff"
        )


@compile_mode("script")
class ElectrostaticEmbedding(torch.nn.Module):
    """``forward(positions, boxVectors)`` of every System particle → E_model + E_cross (kJ/mol).

    Parameters
    ----------
    model: a HybridPotential (the ML region's short-range network, charges and Coulomb).
    types: (n_ML,) type indices of the ML atoms; ml: (n_ML,) their System indices.
    mm_charges: (N,) force-field charges in e of every System particle, zero on the ML atoms
        (all zero: no cross term, the mechanical embedding of a cluster model, whose region this
        module makes whole).
    coulomb: a :class:`Coulomb` configured like the System's NonbondedForce (cutoff, method,
        tolerance), or None for a System without a box (plain 1/r sum).
    allow_default_box: accept OpenMM's never-set 2 nm cube (see ``torch_force``).
    """

    def __init__(self, model, types: torch.Tensor, ml: torch.Tensor, mm_charges: torch.Tensor,
                 coulomb: Optional[Coulomb], allow_default_box: bool = False):
        super().__init__()
        self.model = model
        self.register_buffer("types", types.to(torch.long))
        self.register_buffer("ml", ml.to(torch.long))
        self.num_particles = int(mm_charges.shape[0])
        charged = (mm_charges != 0).nonzero().squeeze(1)
        self.register_buffer("mm", charged.to(torch.long))
        self.register_buffer("mm_charges", mm_charges.to(torch.float64))
        # the mesh work in the Coulomb module's precision (float32 for a float32 model: half the
        # cost, and PME's own error at OpenMM's tolerances is far above float32 rounding)
        self.register_buffer("mesh_charges", mm_charges.to(coulomb.calculator.potential.prefactor.dtype
                                                           if coulomb is not None else torch.float64).unsqueeze(1))
        self.periodic = coulomb is not None
        self.model_periodic = not bool(model.direct)
        self.allow_default_box = bool(allow_default_box)
        self.cutoff = float(coulomb.cutoff) if coulomb is not None else 0.0
        # a placeholder module keeps the attribute typed for TorchScript when there is no box
        self.coulomb = coulomb if coulomb is not None else Coulomb(1.0, "direct", dtype="float64")
        self.prefactor = float(ONE_4PI_EPS0)

    def forward(self, positions: torch.Tensor, boxVectors: Optional[torch.Tensor] = None) -> torch.Tensor:
        if positions.shape[0] != self.num_particles:
            raise ValueError(
                "the System has " + str(positions.shape[0]) + " particles but the electrostatic embedding was built for "
                + str(self.num_particles)
            )
        box: Optional[torch.Tensor] = None
        if self.periodic:
            if boxVectors is None:
                raise ValueError("the mixed System is periodic but OpenMM passed no box vectors")
            check_box_was_set(boxVectors, self.allow_default_box)
            box = boxVectors.to(torch.float64)
        region = positions.to(torch.float64).index_select(0, self.ml)
        model_box: Optional[torch.Tensor] = None
        if box is not None:
            if self.model_periodic:
                model_box = box
            else:
                region = make_whole(region, box)
        energy, charges = self.model.energy_and_charges(region, self.types, model_box)
        cross = self.cross_energy(positions.to(torch.float64), charges.to(torch.float64), box)
        return energy.to(torch.float64) + cross

    def cross_energy(self, positions: torch.Tensor, charges: torch.Tensor, box: Optional[torch.Tensor]) -> torch.Tensor:
        """Σ_{i ∈ ML} q_i V_MM(r_i) in kJ/mol for ML ``charges`` (n_ML,) and every particle's
        ``positions`` (N, 3) nm; V_MM from the MM charges (every image under PME/Ewald)."""
        q_mm = self.mm_charges.index_select(0, self.mm)
        if self.mm.shape[0] == 0:  # mechanical embedding of a cluster model: the region alone
            return torch.zeros((), dtype=positions.dtype, device=positions.device)
        if box is None:
            vectors = positions.index_select(0, self.mm).unsqueeze(0) - positions.index_select(0, self.ml).unsqueeze(1)
            distances = torch.linalg.norm(vectors, dim=2)
            return self.prefactor * (charges.unsqueeze(1) * q_mm.unsqueeze(0) / distances).sum()
        check_cutoff_fits(box, self.cutoff)
        pos = wrap_positions(positions, box)
        vectors = pos.index_select(0, self.mm).unsqueeze(0) - pos.index_select(0, self.ml).unsqueeze(1)
        fractional = vectors.detach() @ torch.linalg.inv(box.detach())
        vectors = vectors - torch.round(fractional) @ box  # nearest image (exact within the cutoff)
        distances = torch.linalg.norm(vectors, dim=2)
        inside = (distances < self.cutoff).nonzero()
        i = self.ml.index_select(0, inside[:, 0])
        j = self.mm.index_select(0, inside[:, 1])
        d = distances[inside[:, 0], inside[:, 1]]
        # torch-pme: the potential of the MM charges alone (ML entries zero), real space over the
        # ML–MM pairs only, reciprocal space and background over all MM charges; it returns half
        # the potential (its energy is Σ q φ over all particles, each pair counted from both ends)
        work = self.mesh_charges.dtype
        potential = self.coulomb.calculator.forward(
            charges=self.mesh_charges, cell=box.to(work), positions=pos.to(work),
            neighbor_indices=torch.stack([i, j], dim=1), neighbor_distances=d.to(work),
        )
        return 2.0 * (charges * potential.squeeze(1).index_select(0, self.ml).to(charges.dtype)).sum()


class EmbeddingComputation:
    """The callable handed to ``openmm.PythonForce``: State → (energy, forces on every particle).
    Pickles as the model's checkpoint dictionary and plain data, never as code."""

    def __init__(self, module: ElectrostaticEmbedding, options: Dict):
        self.module = module
        self.options = options

    def __call__(self, state: openmm.State):
        from openmm import unit

        positions = torch.from_numpy(np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)))
        positions.requires_grad_(True)
        box = None
        if self.module.periodic:
            box = torch.from_numpy(np.asarray(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)))
        energy = self.module(positions, box)
        (gradient,) = torch.autograd.grad(energy, positions)
        return float(energy.detach()), (-gradient).numpy()

    def __reduce__(self):
        return (_rebuild_embedding, (model_state(self.module.model), self.options))


def _rebuild_embedding(state: Dict, options: Dict) -> EmbeddingComputation:
    return EmbeddingComputation(embedding_module(model_from_state(state).eval(), **options), options)


def embedding_module(model, types: Sequence[int], ml: Sequence[int], mm_charges: Sequence[float],
                     coulomb: Optional[Dict], allow_default_box: bool = False) -> ElectrostaticEmbedding:
    """An :class:`ElectrostaticEmbedding` from plain data (``coulomb``: Coulomb's keyword options
    or None for a System without a box)."""
    return ElectrostaticEmbedding(
        model, torch.tensor(list(types), dtype=torch.long), torch.tensor(list(ml), dtype=torch.long),
        torch.tensor(list(mm_charges), dtype=torch.float64),
        None if coulomb is None else Coulomb(**coulomb), allow_default_box,
    )


def electrostatic_embedding_force(
    model, ml_types: Sequence[str], ml: Sequence[int], mm_charges: Sequence[float], coulomb: Optional[Dict],
    *, backend: str = "torchforce", allow_default_box: bool = False,
) -> openmm.Force:
    """The OpenMM Force of :class:`ElectrostaticEmbedding` on every particle of the System
    (TorchForce or PythonForce), in the bridge's ML force group and named with its tag."""
    from e3nn.util.jit import script as e3nn_script

    from multiscale.openmm.bridge import BACKENDS, ML_FORCE_GROUP, ML_FORCE_TAG, _import_openmmtorch

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    copy = model_from_state(model_state(model)).eval()  # never the caller's own modules
    options = dict(types=model.type_indices(list(ml_types)).tolist(), ml=[int(a) for a in ml],
                   mm_charges=[float(q) for q in mm_charges], coulomb=coulomb, allow_default_box=allow_default_box)
    module = embedding_module(copy, **options)
    if backend == "pythonforce":
        force = openmm.PythonForce(EmbeddingComputation(module, options), {})
    else:
        openmmtorch = _import_openmmtorch()
        force = openmmtorch.TorchForce(e3nn_script(module))
    force.setUsesPeriodicBoundaryConditions(coulomb is not None)
    label = {"torchforce": "TorchForce", "pythonforce": "PythonForce"}[backend]
    force.setName(f"{ML_FORCE_TAG} electrostatic embedding ({label})")
    force.setForceGroup(ML_FORCE_GROUP)
    return force


__all__: List[str] = ["ElectrostaticEmbedding", "electrostatic_embedding_force", "make_whole", "check_cutoff_fits"]
