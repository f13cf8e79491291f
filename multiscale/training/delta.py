"""Δ-learning: learn E_high − E_base, where the base is any OpenMM System.

Train on :func:`delta_configurations`, then deploy with
:func:`multiscale.openmm.create_delta_system` (the base System plus the ML force), which then
reproduces E_high = E_base + E_ML.
"""

from __future__ import annotations

from typing import Sequence

from multiscale.data.configuration import Configuration


def delta_configurations(
    configs: Sequence[Configuration], base_system, *, platform: str = "Reference"
) -> list:
    """Copies of ``configs`` whose energy and forces are (high-level label) − (``base_system``'s, an
    ``openmm.System``).

    Configurations need energy and/or forces labels; the base is evaluated by
    :class:`multiscale.labels.OpenMMLabeller` (one Context, reused). A configuration the base
    cannot evaluate raises, naming its index. Virials are dropped (OpenMM does not provide one).
    """
    from multiscale.labels import OpenMMLabeller

    for k, config in enumerate(configs):
        if config.energy is None and config.forces is None:
            raise ValueError(f"configuration {k} has neither energy nor forces; Δ-learning needs high-level labels")
    base = OpenMMLabeller(base_system, platform=platform).label(configs).raise_on_failure()
    out = []
    for config, base_config in zip(configs, base.configurations):
        out.append(
            config.with_labels(
                energy=None if config.energy is None else config.energy - base_config.energy,
                forces=None if config.forces is None else config.forces - base_config.forces,
                virial=None,
                info={**config.info, "delta_base": "OpenMM System"},
            )
        )
    return out
