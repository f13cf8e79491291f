"""BehlerParrinelloPotential: an invariant atom-centred symmetry-function network (baseline).

    positions (nm), types, box ──NeighborList──▶ edges (i ← j, r_ij)
    edges ──▶ radial G2 per neighbour type, angular G5 per unordered neighbour-type pair ──▶ G_i
    G_i ──log1p, per-type standardisation──▶ x_i ──MLP of type t_i──▶ y_i
    e_i = scale[t_i] · y_i + shift[t_i]  (kJ/mol)        E = Σ_i e_i

The baseline for honest comparisons with :class:`~multiscale.models.EquivariantPotential`: the
same interface (constructor, ``edge_energies`` for the trainer, ``forward`` for the OpenMM
bridge, ``compute`` for energies/forces/stress, checkpoints through ``save_model``/``load_model``)
but hand-crafted invariant descriptors and no message passing (Behler & Parrinello, PRL 98,
146401 (2007); Behler, J. Chem. Phys. 134, 074106 (2011)).

Symmetry functions of particle i (units: r in nm, η in nm⁻², r_s in nm; every sum runs over the
neighbours within ``cutoff``, periodic images counted separately):

* radial, for each neighbour type b and each (η, r_s) in ``radial_etas × radial_shifts``::

      G2_i[b; η, r_s] = Σ_{j: t_j = b} exp(−η (r_ij − r_s)²) f_c(r_ij)

* angular, the "G5" variant of Behler 2011 (no r_jk terms: neither exp(−η r_jk²) nor
  f_c(r_jk)), for each unordered neighbour-type pair {b, c} (b ≤ c) and each (ζ, λ, η) in
  ``angular_zetas × angular_lambdas × angular_etas``::

      G5_i[{b,c}; ζ, λ, η] = 2^{1−ζ} Σ_{j≠k: {t_j, t_k} = {b, c}} (1 + λ cos θ_jik)^ζ
                                        exp(−η (r_ij² + r_ik²)) f_c(r_ij) f_c(r_ik)

  summed over *ordered* pairs (j, k), so each unordered pair counts twice (Behler's convention;
  computed once per unordered pair, times 2).

``f_c`` is the cosine cutoff 0.5 (cos(π r / r_c) + 1) (``cutoff_function="cosine"``, Behler's
choice: continuous forces) or the project's :class:`~multiscale.models.radial.PolynomialEnvelope`
(``"polynomial"``, continuous force derivatives too). Both vanish for r ≥ r_c.

Feature layout (``num_features = T·R + T(T+1)/2 · A`` for T types, R radial, A angular
functions): first the radial block, ordered (neighbour type b, η, r_s) with r_s fastest; then the
angular block, ordered (type pair (b, c) with b ≤ c lexicographically, ζ, λ, η) with η fastest.
:meth:`BehlerParrinelloPotential.feature_names` spells it out.

The network sees ``x = (log1p(G) − μ[t_i]) / σ[t_i]``: ``log1p`` tames the heavy tail of the
angular sums (they grow as the square of the neighbour count), and μ, σ are per-type, per-feature
constants, 0 and 1 until :meth:`BehlerParrinelloPotential.standardise_descriptors` sets them from
training data. They are buffers, so checkpoints carry them.

Angular terms need triplets: ordered pairs of distinct edges with the same receiver, built from
the edge list with tensor operations only (sort by receiver, ``repeat_interleave``), in
O(Σ_i n_i²) memory, n_i the neighbour count of particle i.

The energy is invariant under translation, rotation, inversion and permutation of same-type
particles by construction; forces are −∂E/∂r by autograd. TorchScript-compatible
(``e3nn.util.jit.script``), as the OpenMM bridge requires. Units: nm, kJ/mol, kJ/mol/nm.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from e3nn.util.jit import compile_mode

from multiscale.config import YamlConfig
from multiscale.models.base import ArrayLike, Potential
from multiscale.models.potential import check_separation, prepare_positions
from multiscale.models.registry import register_family
from multiscale.models.radial import PolynomialEnvelope
from multiscale.neighbors import NeighborList
from multiscale.units import check_cutoff_nm

_DTYPES = ("float32", "float64")
_ACTIVATIONS = ("silu", "tanh")
_CUTOFF_FUNCTIONS = ("cosine", "polynomial")
FORMAT = "multiscale.BehlerParrinelloPotential"


def default_radial_etas(cutoff: float, count: int = 8) -> List[float]:
    """η_m = 1 / (2 σ_m²) nm⁻² with widths σ_m = r_c·m/count, m = 1..count: Gaussians centred at
    r_s = 0 whose widths span the cutoff, from r_c/8 (first neighbour shell) to r_c (≈ f_c alone)."""
    return [1.0 / (2.0 * (cutoff * m / count) ** 2) for m in range(1, count + 1)]


def default_angular_etas(cutoff: float) -> List[float]:
    """η = 1 / (2 σ²) nm⁻² for σ = r_c/4, r_c/2, r_c (short-, mid- and full-range angular terms)."""
    return [1.0 / (2.0 * (cutoff * f) ** 2) for f in (0.25, 0.5, 1.0)]


def _float_list(name: str, values: Any) -> List[float]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple, np.ndarray)):
        raise ValueError(f"{name} must be a list of numbers, got {values!r}")
    out = []
    for v in values:
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a list of numbers, got the entry {v!r}") from None
        if not math.isfinite(x):
            raise ValueError(f"{name} contains a non-finite value ({v!r})")
        out.append(x)
    duplicates = sorted({x for x in out if out.count(x) > 1})
    if duplicates:
        raise ValueError(f"{name} lists {duplicates} more than once; duplicate values only duplicate features")
    return out


@dataclass
class BPConfig(YamlConfig):
    """Hyper-parameters of :class:`BehlerParrinelloPotential` (see the module docstring for the
    symmetry functions).

    Attributes
    ----------
    types: particle type names (element symbols or CG bead types); type k is index k here.
    cutoff: cutoff radius r_c in nm, of both radial and angular functions.
    radial_etas: Gaussian exponents η of G2 in nm⁻² (≥ 0). None → :func:`default_radial_etas`
        (8 values, widths r_c/8 … r_c), resolved at construction so checkpoints store numbers.
    radial_shifts: Gaussian centres r_s of G2 in nm, in [0, r_c). The radial functions are the
        product ``radial_etas × radial_shifts``: many η with r_s = [0] (default) is Behler's
        centred scheme; one η with many r_s the shifted scheme.
    angular_zetas: angular resolutions ζ ≥ 1 of G5.
    angular_lambdas: λ = +1 and/or −1 (maxima of (1 + λ cos θ) at θ = 0 or π).
    angular_etas: Gaussian exponents η of G5 in nm⁻² (≥ 0). None → :func:`default_angular_etas`.
        The angular functions are the product ``zetas × lambdas × etas``; an empty list disables
        them (a radial-only, many-body-by-nonlinearity model).
    hidden: widths of the hidden layers of each per-type MLP (empty: a linear model).
    activation: "silu" (default) or "tanh" (Behler's original choice).
    cutoff_function: "cosine" (0.5 (cos(π r/r_c) + 1), Behler's) or "polynomial" (the project's
        PolynomialEnvelope with ``envelope_exponent``; smooth to second order).
    envelope_exponent: p of the polynomial envelope (used only with ``cutoff_function="polynomial"``).
    dtype: "float32" or "float64" (all parameters and all arithmetic).
    extra: free-form metadata, stored in checkpoints and otherwise ignored.
    """

    SECTION = "model"
    DESCRIPTION = "Behler-Parrinello model option"

    types: List[str]
    cutoff: float
    radial_etas: Optional[List[float]] = None
    radial_shifts: List[float] = field(default_factory=lambda: [0.0])
    angular_zetas: List[float] = field(default_factory=lambda: [1.0, 4.0])
    angular_lambdas: List[float] = field(default_factory=lambda: [-1.0, 1.0])
    angular_etas: Optional[List[float]] = None
    hidden: List[int] = field(default_factory=lambda: [32, 32])
    activation: str = "silu"
    cutoff_function: str = "cosine"
    envelope_exponent: int = 6
    dtype: str = "float32"
    extra: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.types, str):
            raise ValueError(f"types must be a list of type names, e.g. ['H', 'O'], not the string {self.types!r}")
        self.types = [str(t) for t in self.types]
        if not self.types:
            raise ValueError("types is empty; pass the particle type names, e.g. types=['H', 'O']")
        duplicates = sorted({t for t in self.types if self.types.count(t) > 1})
        if duplicates:
            raise ValueError(f"types lists {duplicates} more than once; each type name must be unique")
        self.cutoff = check_cutoff_nm(self.cutoff, "cutoff")
        if self.radial_etas is None:
            self.radial_etas = default_radial_etas(self.cutoff)
        if self.angular_etas is None:
            self.angular_etas = default_angular_etas(self.cutoff)
        self.radial_etas = _float_list("radial_etas", self.radial_etas)
        self.radial_shifts = _float_list("radial_shifts", self.radial_shifts)
        self.angular_zetas = _float_list("angular_zetas", self.angular_zetas)
        self.angular_lambdas = _float_list("angular_lambdas", self.angular_lambdas)
        self.angular_etas = _float_list("angular_etas", self.angular_etas)
        if not self.radial_etas or not self.radial_shifts:
            raise ValueError("radial_etas and radial_shifts must each hold at least one value (nm⁻² and nm)")
        for name in ("radial_etas", "angular_etas"):
            bad = [x for x in getattr(self, name) if x < 0]
            if bad:
                raise ValueError(f"{name} must be >= 0 (Gaussian exponents in nm⁻²), got {bad}")
        bad = [x for x in self.radial_shifts if not 0.0 <= x < self.cutoff]
        if bad:
            raise ValueError(
                f"radial_shifts {bad} lie outside [0, cutoff={self.cutoff}) nm; shifts are distances "
                "in nm (0.1 nm = 1 Å), not Å"
            )
        bad = [x for x in self.angular_zetas if x < 1.0]
        if bad:
            raise ValueError(f"angular_zetas must be >= 1 ((1 + λ cos θ)^ζ is not differentiable at θ = 0/π otherwise), got {bad}")
        bad = [x for x in self.angular_lambdas if x not in (-1.0, 1.0)]
        if bad:
            raise ValueError(f"angular_lambdas must be +1 or -1, got {bad}")
        if isinstance(self.hidden, (int, str)) or not isinstance(self.hidden, (list, tuple)):
            raise ValueError(f"hidden must be a list of layer widths, e.g. [32, 32], got {self.hidden!r}")
        hidden = []
        for h in self.hidden:
            if isinstance(h, bool) or int(h) != h or int(h) < 1:
                raise ValueError(f"hidden layer widths must be integers >= 1, got {list(self.hidden)}")
            hidden.append(int(h))
        self.hidden = hidden
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {self.activation!r}")
        if self.cutoff_function not in _CUTOFF_FUNCTIONS:
            raise ValueError(f"cutoff_function must be one of {_CUTOFF_FUNCTIONS}, got {self.cutoff_function!r}")
        if int(self.envelope_exponent) != self.envelope_exponent or int(self.envelope_exponent) < 2:
            raise ValueError(f"envelope_exponent must be an integer >= 2, got {self.envelope_exponent}")
        self.envelope_exponent = int(self.envelope_exponent)
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {self.dtype!r}")
        if not isinstance(self.extra, dict):
            raise ValueError(f"extra must be a dict, got {type(self.extra).__name__}")

    @property
    def num_radial(self) -> int:
        """Radial functions per neighbour type."""
        return len(self.radial_etas) * len(self.radial_shifts)

    @property
    def num_angular(self) -> int:
        """Angular functions per unordered neighbour-type pair."""
        return len(self.angular_zetas) * len(self.angular_lambdas) * len(self.angular_etas)

    @property
    def num_features(self) -> int:
        t = len(self.types)
        return t * self.num_radial + t * (t + 1) // 2 * self.num_angular


@compile_mode("script")
class SymmetryFunctions(torch.nn.Module):
    """Element-resolved radial G2 and angular G5 symmetry functions of every particle.

    ``forward(types, senders, receivers, vectors)`` returns the normalised descriptors
    ``(log1p(G) − μ[t_i]) / σ[t_i]``, shape (N, num_features); :meth:`symmetry_functions` the raw
    G (dimensionless: sums of Gaussians times cutoff functions). ``vectors[e] = r_sender −
    r_receiver`` in nm; particle i is the receiver.
    """

    def __init__(
        self,
        num_types: int,
        cutoff: float,
        radial_etas: List[float],
        radial_shifts: List[float],
        angular_zetas: List[float],
        angular_lambdas: List[float],
        angular_etas: List[float],
        cutoff_function: str = "cosine",
        envelope_exponent: int = 6,
    ):
        super().__init__()
        self.num_types = int(num_types)
        self.cutoff = float(cutoff)
        self.use_cosine = cutoff_function == "cosine"
        self.envelope = PolynomialEnvelope(self.cutoff, int(envelope_exponent))
        f64 = torch.float64
        radial = list(itertools.product(radial_etas, radial_shifts))
        angular = list(itertools.product(angular_zetas, angular_lambdas, angular_etas))
        self.num_radial = len(radial)
        self.num_angular = len(angular)
        self.num_pairs = self.num_types * (self.num_types + 1) // 2
        self.num_features = self.num_types * self.num_radial + self.num_pairs * self.num_angular
        # Hyper-parameters (non-persistent: rebuilt from the config, cast with the module's dtype).
        self.register_buffer("radial_eta", torch.tensor([e for e, _ in radial], dtype=f64), persistent=False)
        self.register_buffer("radial_shift", torch.tensor([s for _, s in radial], dtype=f64), persistent=False)
        self.register_buffer("angular_zeta", torch.tensor([z for z, _, _ in angular], dtype=f64), persistent=False)
        self.register_buffer("angular_lambda", torch.tensor([l for _, l, _ in angular], dtype=f64), persistent=False)
        self.register_buffer("angular_eta", torch.tensor([e for _, _, e in angular], dtype=f64), persistent=False)
        self.register_buffer(
            # 2^{1−ζ}, times 2 because the ordered-pair sum is computed over unordered pairs
            "angular_prefactor", torch.tensor([2.0 ** (2.0 - z) for z, _, _ in angular], dtype=f64), persistent=False
        )
        # Unordered type pair {b, c} → its index, for the ordered pair (b, c) at b·T + c.
        pair_index = torch.zeros(self.num_types, self.num_types, dtype=torch.long)
        k = 0
        for b in range(self.num_types):
            for c in range(b, self.num_types):
                pair_index[b, c] = k
                pair_index[c, b] = k
                k += 1
        self.register_buffer("pair_index", pair_index.reshape(-1), persistent=False)
        # Per-type standardisation of log1p(G) (data-derived: persistent, saved in checkpoints).
        # the cutoff the descriptors (and the weights fitted to them) belong to; checked on loading
        self.register_buffer("cutoff_nm", torch.tensor(float(cutoff), dtype=f64))
        self.register_buffer("feature_mean", torch.zeros(self.num_types, self.num_features, dtype=f64))
        self.register_buffer("feature_std", torch.ones(self.num_types, self.num_features, dtype=f64))

    def cutoff_function(self, r: torch.Tensor) -> torch.Tensor:
        """f_c(r), dimensionless, zero for r ≥ r_c (r in nm)."""
        if self.use_cosine:
            fc = 0.5 * (torch.cos(r * (math.pi / self.cutoff)) + 1.0)
            return torch.where(r < self.cutoff, fc, torch.zeros_like(fc))
        return self.envelope(r)

    def triplets(self, receivers: torch.Tensor, num_nodes: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Every unordered pair {e1, e2} of distinct edges with the same receiver, once, as two
        index tensors (n_i (n_i − 1) / 2 pairs for particle i).

        O(Σ_i n_i²) time and memory; no Python loop over particles.
        """
        order = torch.argsort(receivers)
        counts = torch.bincount(receivers, minlength=num_nodes)
        starts = torch.cumsum(counts, 0) - counts  # first sorted position of each node's edges
        sorted_receivers = receivers.index_select(0, order)
        per_edge = counts.index_select(0, sorted_receivers)  # n_i for the edge at each sorted position
        positions = torch.arange(order.shape[0], device=receivers.device)
        first = torch.repeat_interleave(positions, per_edge)  # sorted position p, repeated n_i times
        block_start = torch.cumsum(per_edge, 0) - per_edge
        local = torch.arange(first.shape[0], device=receivers.device) - block_start.index_select(0, first)
        second = starts.index_select(0, sorted_receivers).index_select(0, first) + local
        keep = first < second  # each unordered pair once (the G5 summand is symmetric in j, k)
        return order.index_select(0, first[keep]), order.index_select(0, second[keep])

    def symmetry_functions(
        self, types: torch.Tensor, senders: torch.Tensor, receivers: torch.Tensor, vectors: torch.Tensor
    ) -> torch.Tensor:
        """Raw G2/G5 of every particle, (N, num_features), in the layout of the module docstring."""
        num_nodes = types.shape[0]
        num_types = self.num_types
        dtype = vectors.dtype
        device = vectors.device
        lengths = torch.linalg.norm(vectors, dim=-1)
        fc = self.cutoff_function(lengths)
        neighbour_types = types.index_select(0, senders)

        radial_eta = self.radial_eta.to(dtype)
        radial_shift = self.radial_shift.to(dtype)
        g2 = torch.exp(-radial_eta * (lengths.unsqueeze(-1) - radial_shift) ** 2) * fc.unsqueeze(-1)
        radial = torch.zeros(num_nodes * num_types, self.num_radial, dtype=dtype, device=device)
        radial = radial.index_add(0, receivers * num_types + neighbour_types, g2)
        blocks = [radial.reshape(num_nodes, num_types * self.num_radial)]

        if self.num_angular > 0:
            first, second = self.triplets(receivers, num_nodes)
            zeta = self.angular_zeta.to(dtype)
            lam = self.angular_lambda.to(dtype)
            eta = self.angular_eta.to(dtype)
            # exp(−η r²) f_c(r) per edge and angular function: the triplet term factorises over its two edges.
            edge_part = torch.exp(-eta * lengths.unsqueeze(-1) ** 2) * fc.unsqueeze(-1)
            v1 = vectors.index_select(0, first)
            v2 = vectors.index_select(0, second)
            cos = (v1 * v2).sum(-1) / (lengths.index_select(0, first) * lengths.index_select(0, second))
            base = torch.clamp(1.0 + lam * cos.unsqueeze(-1), min=0.0)  # ≥ 0 up to rounding
            g5 = (
                self.angular_prefactor.to(dtype)
                * base.pow(zeta)
                * edge_part.index_select(0, first)
                * edge_part.index_select(0, second)
            )
            pair = self.pair_index.index_select(
                0, neighbour_types.index_select(0, first) * num_types + neighbour_types.index_select(0, second)
            )
            angular = torch.zeros(num_nodes * self.num_pairs, self.num_angular, dtype=dtype, device=device)
            angular = angular.index_add(0, receivers.index_select(0, first) * self.num_pairs + pair, g5)
            blocks.append(angular.reshape(num_nodes, self.num_pairs * self.num_angular))
        return torch.cat(blocks, dim=1)

    def forward(
        self, types: torch.Tensor, senders: torch.Tensor, receivers: torch.Tensor, vectors: torch.Tensor
    ) -> torch.Tensor:
        x = torch.log1p(self.symmetry_functions(types, senders, receivers, vectors))
        mean = self.feature_mean.to(x.dtype).index_select(0, types)
        std = self.feature_std.to(x.dtype).index_select(0, types)
        return (x - mean) / std


@compile_mode("script")
class TypeNetwork(torch.nn.Module):
    """One per-type MLP: descriptors (n, F) → dimensionless energies (n,)."""

    def __init__(self, num_features: int, hidden: List[int], activation: str = "silu"):
        super().__init__()
        sizes = [int(num_features)] + [int(h) for h in hidden] + [1]
        self.layers = torch.nn.ModuleList([torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])])
        self.use_tanh = activation == "tanh"
        gain = 5.0 / 3.0 if self.use_tanh else 1.68  # variance-preserving for tanh / SiLU
        for k, layer in enumerate(self.layers):
            last = k == len(self.layers) - 1
            std = (1.0 if last else gain) / math.sqrt(layer.in_features)
            torch.nn.init.normal_(layer.weight, std=std)
            torch.nn.init.zeros_(layer.bias)
        self.num_layers = len(self.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = 0
        for layer in self.layers:
            x = layer(x)
            k += 1
            if k < self.num_layers:
                x = torch.tanh(x) if self.use_tanh else torch.nn.functional.silu(x)
        return x.squeeze(-1)


@compile_mode("script")
class BPReadout(torch.nn.Module):
    """e_i = scale[t_i] · MLP_{t_i}(x_i) + shift[t_i], in kJ/mol; one MLP per particle type.

    Each type's MLP runs only on that type's particles (selected by mask, scattered back), so the
    cost is one MLP evaluation per particle whatever the number of types. ``shift`` (per-type
    reference energies) and ``scale`` (typical energy scale) are set by the trainer's
    :func:`multiscale.training.initialise_readout`, exactly as for the equivariant model.
    """

    def __init__(self, num_features: int, num_types: int, hidden: List[int], activation: str = "silu"):
        super().__init__()
        self.networks = torch.nn.ModuleList([TypeNetwork(num_features, hidden, activation) for _ in range(num_types)])
        self.register_buffer("shift", torch.zeros(num_types, dtype=torch.get_default_dtype()))
        self.register_buffer("scale", torch.ones(num_types, dtype=torch.get_default_dtype()))

    def forward(self, features: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        out = features.new_zeros(features.shape[0])
        t = 0
        for network in self.networks:
            index = torch.nonzero(types == t).squeeze(1)
            out = out.index_add(0, index, network(features.index_select(0, index)))
            t += 1
        return out * self.scale.index_select(0, types) + self.shift.index_select(0, types)


@compile_mode("script")
class BehlerParrinelloPotential(Potential):
    """Invariant Behler–Parrinello symmetry-function potential (baseline for the equivariant model).

    Parameters
    ----------
    types: particle type names (element symbols, or CG bead-type names). Type ``k`` of a particle
        is its index in this list.
    cutoff: cutoff radius in nm; energy and force go continuously to zero there.
    dtype: "float32" (default) or "float64".
    Other keyword arguments: see :class:`BPConfig` (an unknown one raises ValueError listing the
    known ones).

    ``model(positions, types, box=None)`` returns the total energy in kJ/mol as a 0-d tensor;
    ``positions`` (N, 3) in nm, ``types`` int64 (N,) type indices, ``box`` None (open) or (3, 3)
    with rows a, b, c in nm. For forces and stress use :meth:`compute`. Symmetry functions,
    normalisation and feature layout: see :mod:`multiscale.models.behler_parrinello`.
    """

    __jit_unused_properties__ = ["config", "dtype", "device"]
    CONFIG_CLASS = BPConfig

    def __init__(self, types: List[str], cutoff: float, *, dtype: str = "float32", **options):
        super().__init__()
        config = BPConfig.from_dict(dict(options, types=types, cutoff=cutoff, dtype=dtype))
        self._config = config
        self.type_names: List[str] = list(config.types)
        self.num_types = len(self.type_names)
        self.cutoff = float(config.cutoff)
        self.neighbors = NeighborList(self.cutoff)
        self.descriptor = SymmetryFunctions(
            self.num_types,
            self.cutoff,
            config.radial_etas,
            config.radial_shifts,
            config.angular_zetas,
            config.angular_lambdas,
            config.angular_etas,
            config.cutoff_function,
            config.envelope_exponent,
        )
        self.num_features = self.descriptor.num_features
        self.readout = BPReadout(self.num_features, self.num_types, config.hidden, config.activation)
        self.to(getattr(torch, config.dtype))

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
        the entry point of batched training (:func:`multiscale.training.predict`).
        """
        vectors = vectors.to(self.readout.shift.dtype)
        features = self.descriptor(types, senders, receivers, vectors)
        return self.readout(features, types)

    @torch.jit.unused
    def feature_names(self) -> List[str]:
        """Names of the descriptor columns, in order, e.g. ``G2[O](eta=128,rs=0)`` or
        ``G5[H,O](zeta=4,lambda=-1,eta=8)`` (η in nm⁻², r_s in nm)."""
        cfg = self._config
        names = []
        for b in self.type_names:
            for eta, rs in itertools.product(cfg.radial_etas, cfg.radial_shifts):
                names.append(f"G2[{b}](eta={eta:g},rs={rs:g})")
        for i, b in enumerate(self.type_names):
            for c in self.type_names[i:]:
                for zeta, lam, eta in itertools.product(cfg.angular_zetas, cfg.angular_lambdas, cfg.angular_etas):
                    names.append(f"G5[{b},{c}](zeta={zeta:g},lambda={lam:g},eta={eta:g})")
        return names

    @torch.jit.unused
    def symmetry_functions(
        self, positions: ArrayLike, types: Union[Sequence[str], torch.Tensor], box: Optional[ArrayLike] = None
    ) -> torch.Tensor:
        """Raw (un-normalised) G2/G5 descriptors of one configuration, (N, num_features)."""
        dtype = self.dtype
        device = self.device
        pos = torch.as_tensor(np.asarray(positions) if not isinstance(positions, torch.Tensor) else positions)
        pos = pos.to(device=device, dtype=dtype)
        if isinstance(types, torch.Tensor):
            type_idx = types.to(device=device, dtype=torch.long)
        else:
            type_idx = self.type_indices(list(types)).to(device)
        cell = None
        if box is not None:
            cell = torch.as_tensor(np.asarray(box) if not isinstance(box, torch.Tensor) else box).to(device=device, dtype=dtype)
        with torch.no_grad():
            senders, receivers, vectors = self.neighbors(pos, cell)
            return self.descriptor.symmetry_functions(type_idx, senders, receivers, vectors)

    @torch.jit.unused
    def initialise_from_data(self, graphs: Sequence[Any]) -> None:
        """Descriptor standardisation from the training graphs (see :meth:`standardise_descriptors`)."""
        self.standardise_descriptors(graphs)

    @torch.jit.unused
    def standardise_descriptors(self, graphs: Sequence[Any], min_std: float = 1e-3) -> Dict[str, int]:
        """Set the per-type mean μ and standard deviation σ of log1p(G) from training graphs.

        ``graphs``: :class:`multiscale.training.Graph` objects (``build_graphs(configs,
        model.type_names, model.cutoff)``). A feature whose σ is below ``min_std`` within a type
        (e.g. a type pair that never occurs around it) keeps σ = 1; a type absent from the data
        keeps μ = 0, σ = 1. Call before training; it changes the model's energies. Returns the
        number of particles seen per type.
        """
        desc = self.descriptor
        dtype = self.dtype
        device = self.device
        num_types, num_features = self.num_types, desc.num_features
        total = torch.zeros(num_types, num_features, dtype=torch.float64)
        squares = torch.zeros(num_types, num_features, dtype=torch.float64)
        counts = torch.zeros(num_types, dtype=torch.float64)
        with torch.no_grad():
            for graph in graphs:
                types = graph.types.to(device)
                pos = graph.positions.to(device=device, dtype=dtype)
                senders, receivers = graph.senders.to(device), graph.receivers.to(device)
                vectors = pos.index_select(0, senders) - pos.index_select(0, receivers)
                if graph.periodic:
                    vectors = vectors + graph.shifts.to(device=device, dtype=dtype) @ graph.box.to(device=device, dtype=dtype)
                x = torch.log1p(desc.symmetry_functions(types, senders, receivers, vectors)).to(torch.float64).cpu()
                t = types.cpu()
                total.index_add_(0, t, x)
                squares.index_add_(0, t, x * x)
                counts.index_add_(0, t, torch.ones_like(t, dtype=torch.float64))
        seen = counts > 0
        mean = torch.zeros_like(total)
        mean[seen] = total[seen] / counts[seen].unsqueeze(-1)
        var = torch.zeros_like(total)
        var[seen] = (squares[seen] / counts[seen].unsqueeze(-1) - mean[seen] ** 2).clamp_min(0.0)
        std = var.sqrt()
        std = torch.where(std < min_std, torch.ones_like(std), std)
        with torch.no_grad():
            desc.feature_mean.copy_(mean.to(desc.feature_mean))
            desc.feature_std.copy_(std.to(desc.feature_std))
        return {name: int(counts[k]) for k, name in enumerate(self.type_names)}


register_family("behler_parrinello", BehlerParrinelloPotential, FORMAT)
