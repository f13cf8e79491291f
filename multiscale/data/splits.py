"""Train/validation/test splits, per-type reference energies and dataset statistics (OpenMM units)."""

from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from multiscale.data.configuration import Configuration, type_counts


def _split_counts(n: int, fractions: Sequence[float]) -> List[int]:
    """Largest-remainder rounding of ``fractions·n``, then every positive fraction gets ≥ 1 if possible."""
    exact = [f * n for f in fractions]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(len(fractions)), key=lambda j: (-(exact[j] - counts[j]), j))
    for j in order[: n - sum(counts)]:
        counts[j] += 1
    for j, f in enumerate(fractions):
        if f > 0 and counts[j] == 0:
            donor = max(range(len(counts)), key=lambda i: (counts[i], -i))
            if counts[donor] <= 1:
                break  # fewer configurations than positive fractions
            counts[donor] -= 1
            counts[j] += 1
    return counts


def split_dataset(
    configs: Sequence[Configuration],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> Tuple[List[Configuration], List[Configuration], List[Configuration]]:
    """Random (train, validation, test) split; the same ``seed`` always gives the same split.

    Every configuration lands in exactly one split; split sizes are ``fractions·n`` rounded by the
    largest-remainder method, and every split with a positive fraction gets at least one
    configuration when there are enough (a zero fraction gives an empty split). Which configurations
    go where is drawn with ``numpy.random.default_rng(seed)``; each split keeps the input order.
    """
    configs = list(configs)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a whole number >= 0, got {seed!r}")
    fractions = [float(f) for f in fractions]
    if len(fractions) != 3:
        raise ValueError(f"fractions must be three numbers (train, validation, test), got {len(fractions)}")
    if not all(math.isfinite(f) and f >= 0 for f in fractions):
        raise ValueError(f"fractions must be finite and non-negative, got {fractions}")
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {fractions} (sum {sum(fractions)}); e.g. (0.8, 0.1, 0.1)")
    if not configs:
        raise ValueError("cannot split an empty dataset (no configurations)")
    total = sum(fractions)
    counts = _split_counts(len(configs), [f / total for f in fractions])
    permutation = np.random.default_rng(seed).permutation(len(configs))
    bounds = np.cumsum([0] + counts)
    return tuple(  # type: ignore[return-value]
        [configs[i] for i in np.sort(permutation[bounds[j] : bounds[j + 1]])] for j in range(3)
    )


def fit_reference_energies(configs: Sequence[Configuration], types: Sequence[str]) -> Dict[str, float]:
    """Per-type reference energies E0 (kJ/mol) from least squares of E ≈ Σ_types count·E0.

    Configurations without an energy are skipped. Solved with ``numpy.linalg.lstsq``, which returns
    the minimum-norm solution when the count matrix is rank-deficient — e.g. when every labelled
    configuration has the same composition (only Σ count·E0 is then determined, and the split
    among types is the smallest-norm one) or when a type never occurs (its E0 is 0).
    """
    types = [str(t) for t in types]
    if not types:
        raise ValueError("types is empty; pass the model's type names, e.g. ['H', 'O']")
    if len(set(types)) != len(types):
        raise ValueError(f"types contains duplicates: {types}")
    labelled = [c for c in configs if c.energy is not None]
    if not labelled:
        raise ValueError("no configuration has an energy; reference energies need energy labels")
    counts = type_counts(labelled, types)
    energies = np.array([c.energy for c in labelled])
    e0, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    return {t: float(e) for t, e in zip(types, e0)}


def dataset_statistics(
    configs: Sequence[Configuration],
    types: Sequence[str],
    reference_energies: Mapping[str, float],
) -> Dict[str, Optional[float]]:
    """Label statistics used to normalise training losses (OpenMM units).

    Returns a dict with
      ``num_configs``, ``num_atoms`` (particles over all configurations),
      ``num_energies``, ``num_forces``, ``num_virials`` (how many configurations carry each label),
      ``energy_per_atom_mean``, ``energy_per_atom_std`` (kJ/mol): mean and population standard
      deviation over labelled configurations of (E − Σ count·E0)/N; None without energies,
      ``force_rms`` (kJ/mol/nm): root mean square of all force components; None without forces,
      ``virial_per_atom_rms`` (kJ/mol): root mean square of the components of virial/N; None
      without virials.
    """
    configs = list(configs)
    types = [str(t) for t in types]
    missing = [t for t in types if t not in reference_energies]
    if missing:
        raise ValueError(f"reference_energies has no entry for types {missing}; "
                         "get them from fit_reference_energies(configs, types)")
    e0 = np.array([float(reference_energies[t]) for t in types])
    counts = type_counts(configs, types)  # also checks every type is known
    labelled = [k for k, c in enumerate(configs) if c.energy is not None]
    stats: Dict[str, Optional[float]] = {
        "num_configs": len(configs),
        "num_atoms": int(sum(c.num_particles for c in configs)),
        "num_energies": len(labelled),
        "num_forces": sum(c.forces is not None for c in configs),
        "num_virials": sum(c.virial is not None for c in configs),
        "energy_per_atom_mean": None,
        "energy_per_atom_std": None,
        "force_rms": None,
        "virial_per_atom_rms": None,
    }
    if labelled:
        centred = np.array(
            [(configs[k].energy - counts[k] @ e0) / configs[k].num_particles for k in labelled]
        )
        stats["energy_per_atom_mean"] = float(centred.mean())
        stats["energy_per_atom_std"] = float(centred.std())
    forces = [c.forces for c in configs if c.forces is not None]
    if forces:
        stats["force_rms"] = float(np.sqrt(np.mean(np.concatenate(forces) ** 2)))
    virials = [c.virial / c.num_particles for c in configs if c.virial is not None]
    if virials:
        stats["virial_per_atom_rms"] = float(np.sqrt(np.mean(np.stack(virials) ** 2)))
    return stats
