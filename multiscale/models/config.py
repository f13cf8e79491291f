"""ModelConfig: every hyper-parameter of an EquivariantPotential, loadable from YAML.

A checkpoint stores exactly this dataclass (as a plain dict), so a model can always be rebuilt
from its file. Units: ``cutoff`` in nm; energies of the readout shift/scale in kJ/mol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from multiscale.config import YamlConfig
from multiscale.units import check_cutoff_nm

_DTYPES = ("float32", "float64")


@dataclass
class ModelConfig(YamlConfig):
    """Hyper-parameters of :class:`multiscale.models.EquivariantPotential`.

    Attributes
    ----------
    types: particle type names: element symbols for atoms, bead-type names for CG beads.
    cutoff: interaction cutoff in nm.
    channels: multiplicity of every irrep in the hidden features.
    num_layers: number of interaction (message-passing) blocks.
    lmax: highest spherical-harmonic degree of edges and hidden features.
    parity: True → E(3) (O(3)) equivariance, invariant under inversion; False → SE(3) only.
    hidden_irreps: explicit e3nn irreps string for hidden features; overrides channels/lmax/parity.
    num_basis: number of Bessel radial basis functions.
    envelope_exponent: p of the polynomial cutoff envelope (smoothness at r_c).
    radial_hidden, radial_layers: width and depth of the radial MLP.
    readout_hidden: width of the per-particle energy MLP.
    avg_num_neighbors: normalisation of the aggregated messages.
    dtype: "float32" or "float64" (all parameters and all arithmetic).
    """

    SECTION = "model"
    DESCRIPTION = "model option"

    types: List[str]
    cutoff: float
    channels: int = 16
    num_layers: int = 2
    lmax: int = 2
    parity: bool = True
    hidden_irreps: Optional[str] = None
    num_basis: int = 8
    envelope_exponent: int = 6
    radial_hidden: int = 32
    radial_layers: int = 2
    readout_hidden: int = 16
    avg_num_neighbors: float = 16.0
    dtype: str = "float32"
    extra: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # field types are checked first by YamlConfig (a string for types, 2.7 for channels,
        # "False" for parity are refused there)
        if not self.types:
            raise ValueError("types is empty; pass the particle type names, e.g. types=['H', 'O']")
        empty = [t for t in self.types if not t.strip()]
        if empty:
            raise ValueError(f"types contains an empty name; give every type a name, got {self.types}")
        duplicates = sorted({t for t in self.types if self.types.count(t) > 1})
        if duplicates:
            raise ValueError(f"types lists {duplicates} more than once; each type name must be unique")
        self.cutoff = check_cutoff_nm(self.cutoff, "cutoff")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {self.dtype!r}")
        for name in ("channels", "num_layers", "num_basis", "radial_hidden", "readout_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.radial_layers < 0:
            raise ValueError(f"radial_layers must be >= 0, got {self.radial_layers}")
        if self.lmax < 0:
            raise ValueError(f"lmax must be >= 0, got {self.lmax}")
        if self.envelope_exponent < 2:
            raise ValueError(f"envelope_exponent must be >= 2 for a smooth cutoff, got {self.envelope_exponent}")
        if not self.avg_num_neighbors > 0:
            raise ValueError(f"avg_num_neighbors must be > 0, got {self.avg_num_neighbors}")
        if self.hidden_irreps is not None:
            from e3nn import o3

            try:
                o3.Irreps(self.hidden_irreps)
            except (ValueError, AssertionError) as err:
                raise ValueError(f"hidden_irreps {self.hidden_irreps!r} is not an e3nn irreps string like '16x0e+16x1o' ({err})") from None
