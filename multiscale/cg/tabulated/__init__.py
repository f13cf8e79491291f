"""The fast native CG tier: tabulated pair, bond and angle potentials and combined bending–torsion
terms, force-matched by linear least squares on a spline basis (MS-CG, as VOTCA does), with an
optional virial (pressure) constraint. The OpenMM forces that run them natively are built by
:mod:`multiscale.openmm.tabulated`.

* :class:`TabulatedConfig` — options (YAML section ``tabulated``);
* :func:`fit_tabulated` — the fit; returns a :class:`TabulatedModel` (JSON: ``save``/``load``);
* :class:`Table` — one g(q) = −dU/dq table with its walls; :func:`dihedral_energy`; :func:`plot_tables`;
* :func:`refine_bonded` — iterative Boltzmann refinement of the bond and angle tables (and the
  bending–torsion coefficients) after a CG run;
* :func:`refine_pairs` — iterative Boltzmann inversion of the pair tables from pair counts.
"""

from multiscale.cg.tabulated.basis import HatBasis
from multiscale.cg.tabulated.config import TabulatedConfig
from multiscale.cg.tabulated.fit import fit_tabulated
from multiscale.cg.tabulated.plots import plot_tables
from multiscale.cg.tabulated.pair_refinement import refine_pairs
from multiscale.cg.tabulated.refine import refine_bonded
from multiscale.cg.tabulated.tables import Table, TabulatedModel, dihedral_energy

__all__ = ["HatBasis", "Table", "TabulatedConfig", "TabulatedModel", "dihedral_energy", "fit_tabulated", "plot_tables",
           "refine_bonded", "refine_pairs"]
