"""EquivariantPotential: the E(3)-equivariant short-range network (NequIP/MACE class).

    positions (nm), types, box  ──NeighborList──▶ edges (i, j, r_ij)
    r_ij ──▶ spherical harmonics Y_l(r̂), l ≤ lmax      |r_ij| ──▶ Bessel × envelope basis
    types ──▶ one-hot ──▶ TypeEmbedding ──▶ h⁰
    h⁰ ──InteractionBlock × num_layers──▶ h
    h ──EnergyReadout (scalars only, per-type scale/shift)──▶ e_i (kJ/mol) ──Σ──▶ E

Energy is invariant (translation, rotation, inversion when parity=True, permutation of same-type
particles); forces are exactly -∂E/∂r by autograd, so they are conservative; the virial is the
exact strain derivative. Units everywhere: nm, kJ/mol, kJ/mol/nm.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from e3nn import o3
from e3nn.util.jit import compile_mode

from multiscale.models.base import ArrayLike, Potential  # noqa: F401  (ArrayLike: old import path)
from multiscale.models.config import ModelConfig
from multiscale.models.embedding import TypeEmbedding
from multiscale.models.interaction import InteractionBlock
from multiscale.models.radial import BesselBasis, RadialMLP
from multiscale.models.readout import EnergyReadout
from multiscale.models.registry import register_family
from multiscale.neighbors import NeighborList, edge_chunks, wrap_positions  # noqa: F401  (wrap_positions: old import path)


#: Two particles closer than this (nm) are refused as overlapping: at zero distance the edge
#: direction is undefined and energy and forces become NaN; no physical structure comes near it.
MIN_SEPARATION_NM = 1e-4


def check_particles(positions: torch.Tensor, types: torch.Tensor, num_types: int = -1) -> None:
    """Refuse malformed input with a message that names the problem (TorchScript-compatible).

    ``num_types`` (when >= 0) bounds the type indices."""
    if positions.dim() != 2 or positions.shape[1] != 3:
        raise ValueError("positions must have shape (N, 3), in nm")
    if positions.shape[0] == 0:
        raise ValueError("there are no particles (positions has 0 rows); pass at least one particle")
    if types.dim() != 1 or types.shape[0] != positions.shape[0]:
        raise ValueError(
            "particle-count mismatch: types has "
            + str(types.shape[0])
            + " entries but positions has "
            + str(positions.shape[0])
            + " rows; pass one type per particle"
        )
    if types.dtype != torch.long:
        raise ValueError("types must be an int64 tensor of type indices, one per particle (model.type_indices(names) makes one)")
    if num_types >= 0:
        low = int(types.min())
        high = int(types.max())
        if low < 0 or high >= num_types:
            raise ValueError(
                "type index out of range: got indices from "
                + str(low)
                + " to "
                + str(high)
                + " but the model has "
                + str(num_types)
                + " types (0.."
                + str(num_types - 1)
                + "); map type names with model.type_indices(names)"
            )
    if not bool(torch.isfinite(positions).all()):
        raise ValueError("positions contain NaN or Inf; check the input coordinates (nm) or the simulation for a blow-up")


def check_separation(
    senders: torch.Tensor, receivers: torch.Tensor, vectors: torch.Tensor, min_separation: float = 1e-4
) -> None:
    """Refuse overlapping particles (closer than ``min_separation`` nm, MIN_SEPARATION_NM; a
    literal here because TorchScript cannot read module-level floats), naming the pair
    (TorchScript-compatible). Costs one reduction over the edges."""
    if vectors.shape[0] == 0:
        return
    squared = (vectors.detach() * vectors.detach()).sum(-1)
    closest = int(torch.argmin(squared))
    distance = float(squared[closest].sqrt())
    if distance < min_separation:
        raise ValueError(
            "particles "
            + str(int(receivers[closest]))
            + " and "
            + str(int(senders[closest]))
            + " overlap ("
            + str(distance)
            + " nm apart, periodic images included): energy and forces are undefined there. "
            + "Check the input coordinates (duplicated atoms?), or the simulation for a blow-up"
        )


def prepare_positions(
    positions: torch.Tensor, types: torch.Tensor, box: Optional[torch.Tensor], num_types: int, dtype: torch.dtype
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Checked positions and box in the model's ``dtype``, the positions wrapped into the cell
    first (in their own precision) when there is one."""
    check_particles(positions, types, num_types)
    cell: Optional[torch.Tensor] = None
    pos = positions
    if box is not None:
        pos = wrap_positions(positions, box)
        cell = box.to(dtype)
    return pos.to(dtype), cell


def average_num_neighbors(graphs) -> float:
    """Mean number of edges per particle over graphs (objects with ``senders`` and
    ``num_particles``, such as :class:`multiscale.training.Graph`); at least 1."""
    edges = sum(int(g.senders.shape[0]) for g in graphs)
    atoms = sum(g.num_particles for g in graphs)
    return max(edges / max(atoms, 1), 1.0)


def hidden_irreps_for(config: ModelConfig) -> o3.Irreps:
    """Hidden irreps: ``channels x l`` with natural parity (-1)^l for l ≤ lmax (or the override)."""
    if config.hidden_irreps:
        return o3.Irreps(config.hidden_irreps).simplify()
    parts = []
    for l in range(int(config.lmax) + 1):
        p = (-1) ** l if config.parity else 1
        parts.append((int(config.channels), (l, p)))
    return o3.Irreps(parts)


#: checkpoint tag of this family
FORMAT = "multiscale.EquivariantPotential"


@compile_mode("script")
class EquivariantPotential(Potential):
    """E(3)-equivariant message-passing potential.

    Parameters
    ----------
    types: particle type names (element symbols, or CG bead-type names). Type ``k`` of a particle
        is its index in this list.
    cutoff: cutoff radius in nm; energy and force go smoothly to zero there.
    dtype: "float32" (default) or "float64" (for validation; works end to end).
    Other keyword arguments: see :class:`multiscale.models.ModelConfig`.

    ``model(positions, types, box=None)`` returns the total energy in kJ/mol as a 0-d tensor.
    ``positions`` is (N, 3) in nm (any float dtype; cast inside), ``types`` an int64 (N,) tensor
    of type indices, ``box`` None (open boundaries) or (3, 3) with rows a, b, c in nm.
    For forces and stress use :meth:`compute`.
    """

    __jit_unused_properties__ = ["config", "dtype", "device"]
    CONFIG_CLASS = ModelConfig

    def __init__(self, types: List[str], cutoff: float, *, dtype: str = "float32", **options):
        super().__init__()
        config = ModelConfig.from_dict(dict(options, types=types, cutoff=cutoff, dtype=dtype))
        self._config = config
        self.type_names: List[str] = list(config.types)
        self.num_types = len(self.type_names)
        self.cutoff = float(config.cutoff)
        torch_dtype = getattr(torch, config.dtype)

        irreps_hidden = hidden_irreps_for(config)
        sh_parity = -1 if config.parity else 1
        irreps_sh = o3.Irreps.spherical_harmonics(int(config.lmax), p=sh_parity)
        irreps_scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_hidden if ir.l == 0 and ir.p == 1])
        if irreps_scalars.dim == 0:
            raise ValueError(f"hidden irreps {irreps_hidden} need at least one even scalar (0e) channel")

        self.neighbors = NeighborList(self.cutoff)
        #: Edges per chunk of the per-edge work on CPU (a run-time setting, not a hyper-parameter:
        #: results do not depend on it beyond float rounding). ~16k edges keep per-edge temporaries
        #: at a few MB, reused chunk after chunk. On other devices all edges form one chunk: the
        #: reasons for chunking (glibc's heap, page faults, CPU caches) are CPU ones, and there
        #: every chunk would cost its own kernel launches.
        self.chunk_edges: int = 16384
        self.spherical_harmonics = o3.SphericalHarmonics(irreps_sh, normalize=True, normalization="component")
        self.radial_basis = BesselBasis(self.cutoff, config.num_basis, config.envelope_exponent)
        self.embedding = TypeEmbedding(self.num_types, irreps_scalars)

        layers = []
        irreps_in = irreps_scalars
        for index in range(int(config.num_layers)):
            # The readout sees scalars only, so the last block need not produce l > 0 features:
            # keeping only its 0e paths cuts its tensor-product cost several-fold (as in MACE).
            last = index == int(config.num_layers) - 1
            layer = InteractionBlock(
                irreps_in=irreps_in,
                irreps_out=irreps_scalars if last else irreps_hidden,
                irreps_sh=irreps_sh,
                irreps_attr=self.embedding.irreps_attr,
                avg_num_neighbors=config.avg_num_neighbors,
            )
            layers.append(layer)
            irreps_in = layer.gate.irreps_out
        self.layers = torch.nn.ModuleList(layers)
        #: width of node_features (the last block keeps only even scalars, so they are invariant)
        self.num_features: int = int(o3.Irreps(irreps_in).dim)
        self.radial = RadialMLP(
            config.num_basis, config.radial_hidden, config.radial_layers, [layer.weight_numel for layer in layers]
        )
        self.readout = EnergyReadout(irreps_in, self.num_types, config.readout_hidden)
        self.to(torch_dtype)

    # ------------------------------------------------------------------ TorchScript-visible core
    def atomic_energies(
        self, positions: torch.Tensor, types: torch.Tensor, box: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Per-particle energies e_i in kJ/mol, shape (N,)."""
        pos, cell = prepare_positions(positions, types, box, self.num_types, self.readout.shift.dtype)
        senders, receivers, vectors = self.neighbors(pos, cell)
        check_separation(senders, receivers, vectors)
        return self.edge_energies(types, senders, receivers, vectors)

    def edge_energies(
        self, types: torch.Tensor, senders: torch.Tensor, receivers: torch.Tensor, vectors: torch.Tensor
    ) -> torch.Tensor:
        """Per-particle energies (kJ/mol) from a precomputed graph.

        ``vectors[e] = r_sender − r_receiver`` (+ the periodic image shift) in nm, differentiable;
        this is the entry point for batched training, where many configurations' graphs are
        concatenated (see :mod:`multiscale.training.batch`).
        """
        return self.readout(self.node_features(types, senders, receivers, vectors), types)

    def node_features(
        self, types: torch.Tensor, senders: torch.Tensor, receivers: torch.Tensor, vectors: torch.Tensor
    ) -> torch.Tensor:
        """The invariant per-particle features (N, F) the energy readout sees (other heads, such as
        the charge head of :class:`multiscale.models.HybridPotential`, read them too)."""
        dtype = self.readout.shift.dtype
        vectors = vectors.to(dtype)
        # Edges sorted by receiver (NeighborList's order; re-sorted here only for other callers),
        # then cut into equal chunks: all per-edge work runs chunk by chunk, so its temporaries
        # stay chunk-sized whatever the system size (see edge_chunks).
        if receivers.shape[0] > 1 and not bool((receivers[1:] >= receivers[:-1]).all()):
            receivers, order = torch.sort(receivers, stable=True)
            senders = senders.index_select(0, order)
            vectors = vectors.index_select(0, order)
        num_edges = int(receivers.shape[0])
        edge_sizes = edge_chunks(num_edges, self.chunk_edges if vectors.device.type == "cpu" else max(num_edges, 1))
        receiver_chunks = receivers.split(edge_sizes, dim=0)
        sh_chunks: List[torch.Tensor] = []
        weight_chunks: List[List[torch.Tensor]] = []
        for _ in range(len(self.layers)):
            weight_chunks.append([])
        for chunk in vectors.split(edge_sizes, dim=0):
            lengths = torch.linalg.norm(chunk, dim=-1)
            sh_chunks.append(self.spherical_harmonics(chunk))
            k = 0
            for weights in self.radial(self.radial_basis(lengths)):
                weight_chunks[k].append(weights)
                k += 1
        attrs = self.embedding.attributes(types, dtype)
        features = self.embedding(attrs)
        k = 0
        for layer in self.layers:
            features = layer(features, attrs, sh_chunks, weight_chunks[k], senders, receiver_chunks, edge_sizes)
            k += 1
        return features


    @classmethod
    def options_from_data(cls, graphs) -> Dict[str, float]:
        """``avg_num_neighbors``: the mean neighbour count of the training graphs (the message
        normalisation), as training derives it."""
        return {"avg_num_neighbors": average_num_neighbors(graphs)}


register_family("equivariant", EquivariantPotential, FORMAT, derived=("types", "avg_num_neighbors"))
