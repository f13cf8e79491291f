"""Named physical constants and unit conversions.

Everything inside multiscale uses OpenMM units: nm, ps, kJ/mol, elementary charge (e), K.
Files in ASE conventions (extxyz: Å, eV, eV/Å) are converted at the I/O edge with the
constants below, never with inlined numbers.

Sources: CODATA 2018 as used by OpenMM (``openmm.unit`` and ``ONE_4PI_EPS0``).
"""

from __future__ import annotations

#: Coulomb constant 1/(4 pi eps0) in kJ mol^-1 nm e^-2: OpenMM 8.6's ONE_4PI_EPS0 to the last digit
#: (CODATA 2018; older OpenMM builds used 138.935456), so that in-model electrostatics and OpenMM's
#: NonbondedForce agree to rounding.
ONE_4PI_EPS0 = 138.93545764438198
#: Boltzmann constant in kJ mol^-1 K^-1.
KB_KJ_PER_MOL_K = 0.00831446261815324
#: 1 eV in kJ/mol.
EV_TO_KJ_PER_MOL = 96.48533212
#: 1 Hartree in kJ/mol.
HARTREE_TO_KJ_PER_MOL = 2625.499639
#: 1 Bohr in nm.
BOHR_TO_NM = 0.0529177210903
#: 1 Å in nm.
ANGSTROM_TO_NM = 0.1
#: 1 eV/Å in kJ mol^-1 nm^-1.
EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM = EV_TO_KJ_PER_MOL / ANGSTROM_TO_NM
#: Avogadro constant in mol^-1 (exact, SI 2019).
AVOGADRO_PER_MOL = 6.02214076e23
#: 1 debye in e·nm: 10⁻²¹/c C·m (c = 299792458 m/s, exact) over e = 1.602176634e-19 C (exact, SI 2019)
DEBYE_TO_E_NM = 1e-21 / 299792458.0 / 1.602176634e-19 / 1e-9
#: 1 kJ mol^-1 nm^-3 (an energy density, i.e. a pressure) in bar: 1e3 J / (N_A 1e-27 m^3) / 1e5 Pa.
KJ_PER_MOL_NM3_TO_BAR = 1e3 / (AVOGADRO_PER_MOL * 1e-27) / 1e5
#: 1 eV/Å^3 (stress) in kJ mol^-1 nm^-3.
EV_PER_ANGSTROM3_TO_KJ_PER_MOL_NM3 = EV_TO_KJ_PER_MOL / ANGSTROM_TO_NM**3


def kT(temperature_K: float) -> float:
    """Thermal energy k_B T in kJ/mol at ``temperature_K``."""
    return KB_KJ_PER_MOL_K * float(temperature_K)


#: Largest cutoff (nm) accepted for a short-range potential. Typical ML cutoffs are 0.4–0.6 nm for
#: atoms and 0.7–1.5 nm for coarse-grained beads; a value of 3–6 is almost surely meant in Å.
MAX_SHORT_RANGE_CUTOFF_NM = 2.5
#: Smallest cutoff (nm) accepted for a short-range potential: below 1 Å not even a bonded
#: neighbour is in range, so such a value is almost surely a unit slip (e.g. converted twice).
MIN_SHORT_RANGE_CUTOFF_NM = 0.1


def check_cutoff_nm(value, what: str = "cutoff") -> float:
    """``value`` as a float cutoff in nm, or a ValueError that says why it is almost surely in the
    wrong unit (or not a number at all)."""
    import math

    if isinstance(value, bool) or value is None:
        raise ValueError(f"{what} must be a distance in nm (e.g. 0.5), got {value!r}")
    try:
        cutoff = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a distance in nm (e.g. 0.5), got {value!r}") from None
    if not math.isfinite(cutoff) or cutoff <= 0:
        raise ValueError(f"{what} must be a positive distance in nm, got {value!r}")
    if cutoff > MAX_SHORT_RANGE_CUTOFF_NM:
        raise ValueError(
            f"{what}={cutoff:g} nm is implausibly large for a short-range potential (at most "
            f"{MAX_SHORT_RANGE_CUTOFF_NM} nm); cutoffs are in nm, not Å: 5 Å is 0.5 nm"
        )
    if cutoff < MIN_SHORT_RANGE_CUTOFF_NM:
        raise ValueError(
            f"{what}={cutoff:g} nm is below {MIN_SHORT_RANGE_CUTOFF_NM} nm (1 Å), where not even bonded "
            "neighbours are in range; cutoffs are in nm (0.5 nm = 5 Å): was the value converted twice?"
        )
    return cutoff
