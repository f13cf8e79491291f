"""HybridPotential: an equivariant short-range network plus explicit long-range electrostatics.

    E(r) = E_short(r) + E_Coulomb(q(r), r)

* ``charges="predicted"``: a charge-equilibration head (:mod:`multiscale.models.charges`) on the
  network's invariant features gives per-particle charges whose sum is ``total_charge`` exactly;
  forces are the exact −∇E, the dq/dr term included (autograd through the charges).
* ``charges="fixed"``: per-type charges ``fixed_charges={type: q}``.

One neighbour list per call, at the larger of the two cutoffs, serves both the network (its
edges within its cutoff) and the real-space Coulomb sum (one direction of each pair). Units: nm,
e, kJ/mol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import numpy as np
import torch
from e3nn.util.jit import compile_mode

from multiscale.config import YamlConfig
from multiscale.electrostatics.coulomb import Coulomb
from multiscale.electrostatics.pairs import half_of_full, pair_vectors
from multiscale.models.base import ArrayLike, BatchGraph, Potential
from multiscale.models.charges import ChargeEquilibration
from multiscale.models.config import ModelConfig
from multiscale.models.potential import EquivariantPotential, check_separation, prepare_positions
from multiscale.models.registry import register_family
from multiscale.neighbors import NeighborList

CHARGE_MODES = ("predicted", "fixed")
#: the Coulomb options a checkpoint stores (the constructor's arguments)
COULOMB_OPTIONS = ("cutoff", "method", "tolerance", "screening_length", "dtype")


@dataclass
class HybridConfig(YamlConfig):
    """Everything that rebuilds a :class:`HybridPotential`: the short-range model's ModelConfig
    (as a dict), the Coulomb options, the total charge and the charge mode."""

    SECTION = "model"
    DESCRIPTION = "hybrid model option"

    short_range: Dict[str, Any]
    coulomb: Dict[str, Any]
    total_charge: float = 0.0
    charges: str = "predicted"
    fixed_charges: Dict[str, float] = field(default_factory=dict)
    charge_hidden: int = 16

    def __post_init__(self):
        self.short_range = ModelConfig.from_dict(dict(self.short_range)).to_dict()
        unknown = sorted(set(self.coulomb) - set(COULOMB_OPTIONS))
        if unknown:
            raise ValueError(f"unknown coulomb option(s) {unknown}; known: {list(COULOMB_OPTIONS)}")
        if "cutoff" not in self.coulomb:
            raise ValueError("coulomb needs a real-space cutoff in nm, e.g. coulomb: {cutoff: 1.0}")
        if self.charges not in CHARGE_MODES:
            raise ValueError(f"charges must be one of {CHARGE_MODES}, got {self.charges!r}")
        if self.charges == "fixed":
            missing = sorted(set(self.short_range["types"]) - set(self.fixed_charges))
            if missing:
                raise ValueError(f"charges='fixed' needs fixed_charges for every type; missing {missing}")
        if self.charge_hidden < 1:
            raise ValueError(f"charge_hidden must be >= 1, got {self.charge_hidden}")

    @property
    def types(self):
        return list(self.short_range["types"])

    @property
    def cutoff(self) -> float:
        return float(self.short_range["cutoff"])


@compile_mode("script")
class HybridPotential(Potential):
    """Short-range equivariant network + Coulomb with predicted or fixed charges.

    Parameters
    ----------
    short_range: an :class:`EquivariantPotential` (its types are this model's types).
    coulomb: a :class:`multiscale.electrostatics.Coulomb` (cast to the network's dtype).
    total_charge: the net charge in e that predicted charges sum to exactly.
    charges: "predicted" (charge-equilibration head) or "fixed" (``fixed_charges={type: q}``).

    ``compute`` adds ``charges`` (N,) e and, for open boundaries, ``dipole`` Σ q_i r_i (e·nm) to
    energy, forces and stress.
    """

    __jit_unused_properties__ = ["config", "dtype", "device", "readout"]
    __jit_ignored_attributes__ = ["_config"]
    CONFIG_CLASS = HybridConfig
    #: training may fit its charges and dipole (LossConfig.charge_weight, dipole_weight)
    PREDICTS_CHARGES = True

    def __init__(
        self,
        short_range: EquivariantPotential,
        coulomb: Coulomb,
        total_charge: float = 0.0,
        charges: str = "predicted",
        *,
        fixed_charges: Optional[Dict[str, float]] = None,
        charge_hidden: int = 16,
    ):
        super().__init__()
        if not isinstance(short_range, EquivariantPotential):
            raise TypeError(f"short_range must be an EquivariantPotential, got {type(short_range).__name__}")
        if not isinstance(coulomb, Coulomb):
            raise TypeError(f"coulomb must be a multiscale.electrostatics.Coulomb, got {type(coulomb).__name__}")
        coulomb_options = {
            "cutoff": coulomb.cutoff, "method": coulomb.method, "tolerance": coulomb.tolerance,
            "screening_length": coulomb.screening_length if coulomb.screened else None,
            "dtype": short_range.config.dtype,
        }
        self._config = HybridConfig(
            short_range=short_range.config.to_dict(), coulomb=coulomb_options, total_charge=float(total_charge),
            charges=charges, fixed_charges={str(k): float(v) for k, v in (fixed_charges or {}).items()},
            charge_hidden=int(charge_hidden),
        )
        self.short_range = short_range
        self.coulomb = coulomb.to(short_range.dtype)
        self.type_names = list(short_range.type_names)
        self.num_types = short_range.num_types
        self.cutoff = short_range.cutoff
        self.total_charge = float(total_charge)
        self.predicted = charges == "predicted"
        self.charge_head = ChargeEquilibration(short_range.num_features, self.num_types, int(charge_hidden)).to(short_range.dtype)
        table = [float(self._config.fixed_charges.get(name, 0.0)) for name in self.type_names]
        self.register_buffer("type_charges", torch.tensor(table, dtype=torch.float64))
        self.direct = coulomb.method == "direct" and not coulomb.screened
        # one list for both parts; the direct sum takes every pair itself, so it needs no longer list
        self.neighbors = NeighborList(self.cutoff if self.direct else max(self.cutoff, coulomb.cutoff))

    @classmethod
    def from_config(cls, config: HybridConfig) -> "HybridPotential":
        options = dict(config.short_range)
        short = EquivariantPotential(options.pop("types"), options.pop("cutoff"), dtype=options.pop("dtype"), **options)
        return cls(
            short, Coulomb(**config.coulomb), config.total_charge, config.charges,
            fixed_charges=config.fixed_charges, charge_hidden=config.charge_hidden,
        )

    @torch.jit.unused
    def set_total_charge(self, total_charge: float) -> "HybridPotential":
        """Deploy on a system of another net charge (e): the charges of ``forward``/``compute`` and
        OpenMM then sum to it (training uses each configuration's own total instead). Kept in the
        config, so checkpoints saved afterwards carry it. Returns self."""
        value = float(total_charge)
        if not np.isfinite(value):
            raise ValueError(f"total_charge must be a finite charge in e, got {total_charge!r}")
        self.total_charge = value
        self._config.total_charge = value
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self.short_range.dtype

    @property
    def device(self) -> torch.device:
        return self.short_range.device

    # ------------------------------------------------------------------ TorchScript-visible core
    def forward(self, positions: torch.Tensor, types: torch.Tensor, box: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Total energy E_short + E_Coulomb in kJ/mol."""
        energy, charges = self.energy_and_charges(positions, types, box)
        return energy

    def atomic_energies(self, positions: torch.Tensor, types: torch.Tensor, box: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The short-range part per particle (kJ/mol); the Coulomb energy is not a per-particle sum."""
        return self.short_range.atomic_energies(positions, types, box)

    def energy_and_charges(
        self, positions: torch.Tensor, types: torch.Tensor, box: Optional[torch.Tensor] = None
    ):
        pos, cell = prepare_positions(positions, types, box, self.num_types, self.short_range.readout.shift.dtype)
        i, j, shifts = self.neighbors.pairs(pos, cell)
        vectors = pair_vectors(pos, i, j, shifts, cell)
        lengths = torch.linalg.norm(vectors, dim=1)
        near = lengths < self.cutoff
        check_separation(j[near], i[near], vectors[near])
        features = self.short_range.node_features(types, j[near], i[near], vectors[near])
        energy = self.short_range.readout(features, types).sum()
        if self.predicted:
            charges = self.charge_head(features, types, self.total_charge)
        else:
            charges = self.type_charges.index_select(0, types)
        if self.direct:
            pairs = self.coulomb.pairs(pos, cell)
            coulomb = self.coulomb.energy_from_pairs(pos, charges, cell, pairs[0], pairs[1], pairs[2])
        else:
            half = half_of_full(i, j, shifts)
            coulomb = self.coulomb.energy_from_pairs(pos, charges, cell, i[half], j[half], shifts[half])
        return energy + coulomb, charges

    def edge_energies(self, types: torch.Tensor, senders: torch.Tensor, receivers: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(
            "a HybridPotential's Coulomb energy needs whole configurations (positions, box), not edge lists; "
            "train it through batch_outputs (multiscale.training.batch.predict does)"
        )

    # ------------------------------------------------------------------ Python side
    @torch.jit.unused
    def outputs(self, positions: torch.Tensor, types: torch.Tensor, box: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        energy, charges = self.energy_and_charges(positions, types, box)
        return {"energy": energy, "charges": charges}

    @torch.jit.unused
    def batch_outputs(self, graph: BatchGraph) -> Dict[str, torch.Tensor]:
        """Energies (B,) kJ/mol and charges (N,) e of a training batch: the network on the batch's
        edges, the charges with one exact total per configuration (``graph.total_charge``), and the
        Coulomb energy of each configuration (open boundaries: the direct or screened sum; periodic:
        the configured method)."""
        features = self.short_range.node_features(graph.types, graph.senders, graph.receivers, graph.vectors)
        atomic = self.short_range.readout(features, graph.types)
        energy = atomic.new_zeros(graph.num_graphs).index_add(0, graph.batch, atomic)
        if self.predicted:
            charges = self.charge_head.per_configuration(features, graph.types, graph.batch, graph.total_charge)
        else:
            charges = self.type_charges.index_select(0, graph.types)
        coulomb = []
        for b in range(graph.num_graphs):
            mine = (graph.batch == b).nonzero().squeeze(1)
            box = graph.boxes[b] if bool(graph.periodic[b]) else None
            coulomb.append(self.coulomb(graph.positions.index_select(0, mine), charges.index_select(0, mine), box))
        energy = energy + torch.stack(coulomb).to(energy.dtype)
        return {"energy": energy, "charges": charges}

    # ------------------------------------------------------------------ training hooks
    #: JobConfig.model options of the hybrid family besides the short-range model's own
    HYBRID_OPTIONS = ("coulomb", "total_charge", "charges", "fixed_charges", "charge_hidden")

    @classmethod
    def build(cls, types, cutoff: float, dtype: str = "float32", **options) -> "HybridPotential":
        """From flat training options: the short-range model's options plus ``coulomb`` (a dict of
        Coulomb options, ``cutoff`` required), ``total_charge``, ``charges``, ``fixed_charges``
        and ``charge_hidden``."""
        hybrid = {key: options.pop(key) for key in cls.HYBRID_OPTIONS if key in options}
        coulomb = dict(hybrid.pop("coulomb", {}))
        coulomb["dtype"] = dtype
        short = EquivariantPotential(list(types), cutoff, dtype=dtype, **options)
        return cls(short, Coulomb(**coulomb), hybrid.pop("total_charge", 0.0), hybrid.pop("charges", "predicted"),
                   **hybrid)

    @classmethod
    def check_options(cls, options: Dict[str, Any], derived) -> None:
        short = {key: value for key, value in options.items() if key not in cls.HYBRID_OPTIONS}
        EquivariantPotential.check_options(short, derived)
        if "coulomb" not in options:
            raise ValueError("the hybrid family needs a coulomb: section in model:, e.g. "
                             "coulomb: {cutoff: 1.0, method: pme} (or method: direct for clusters)")
        if not isinstance(options["coulomb"], dict):
            raise ValueError(f"model option coulomb must hold Coulomb options (cutoff, method, ...), got {options['coulomb']!r}")
        hybrid = {key: options[key] for key in cls.HYBRID_OPTIONS if key in options}
        # types come from the data later: the fixed-charge table's keys (or a placeholder) stand in
        types = sorted(hybrid.get("fixed_charges") or {}) or ["placeholder"]
        config = HybridConfig(short_range={**short, "types": types}, **hybrid)
        Coulomb(**{**config.coulomb, "dtype": short.get("dtype", "float32")})

    @classmethod
    def options_from_data(cls, graphs) -> Dict[str, object]:
        return EquivariantPotential.options_from_data(graphs)

    @torch.jit.unused
    def initialise_from_data(self, graphs) -> None:
        """Check that the Coulomb method suits the data's boundaries (before any training), then
        let the network derive its own constants."""
        if not self.coulomb.screened:
            periodic = sorted({bool(g.periodic) for g in graphs})
            if self.coulomb.method in ("ewald", "pme") and False in periodic:
                raise ValueError(
                    f"coulomb method {self.coulomb.method!r} needs periodic configurations, but the training data hold "
                    "clusters (no box); use coulomb: {method: direct} for clusters"
                )
            if self.coulomb.method == "direct" and True in periodic:
                raise ValueError(
                    "coulomb method 'direct' sums a cluster's pairs, but the training data hold periodic "
                    "configurations; use coulomb: {method: pme} (or ewald) for periodic data"
                )
        self.short_range.initialise_from_data(graphs)

    @property
    def readout(self):
        """The short-range network's readout (its per-type shift and scale, set from the data)."""
        return self.short_range.readout

    @torch.jit.unused
    def compute(self, positions: ArrayLike, types, box: Optional[ArrayLike] = None, **options) -> Dict[str, torch.Tensor]:
        """Energy, forces (and stress) as :meth:`Potential.compute` (one evaluation), plus
        ``charges`` (N,) in e and, for open boundaries, the ``dipole`` Σ q_i r_i in e·nm (an
        l = 1 vector)."""
        out = super().compute(positions, types, box, **options)
        if box is None:
            pos = torch.as_tensor(positions if isinstance(positions, torch.Tensor) else np.asarray(positions))
            out["dipole"] = (out["charges"].unsqueeze(1) * pos.to(device=self.device, dtype=torch.float64)).sum(0)
        return out

register_family("hybrid", HybridPotential, "multiscale.HybridPotential", derived=("types", "avg_num_neighbors"))
