"""OpenMM platforms by name, with an error that says how to get a missing one.

OpenMM's own ``Platform.getPlatformByName`` answers a missing CUDA platform with "There is no
registered Platform called CUDA"; a user needs to hear that GPU support is an extra install.
"""

from __future__ import annotations

from typing import List

import openmm

#: how to get each optional platform
INSTALL_HINTS = {
    "CUDA": 'GPU support is an extra install: pip install -e ".[cuda12]" (openmm[cuda12], openmmtorch[cuda12]) '
    "on a machine with an NVIDIA GPU and driver, then check with python -m openmm.testInstallation",
    "OpenCL": "the OpenCL platform needs an OpenCL driver (libOpenCL.so.1) for your GPU",
    "HIP": "the HIP platform needs OpenMM's HIP plugin and an AMD GPU with ROCm",
}


def available_platforms() -> List[str]:
    return [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]


def get_platform(name: str) -> openmm.Platform:
    """The OpenMM platform ``name`` ("Reference", "CPU", "CUDA", "OpenCL", ...), or a ValueError
    that lists the ones available here and how to install a missing one."""
    available = available_platforms()
    if name not in available:
        hint = INSTALL_HINTS.get(name, "")
        names = ", ".join(available)
        raise ValueError(
            f"the OpenMM platform {name!r} is not available on this machine (available: {names})"
            + (f"; {hint}" if hint else "; choose one of those")
        )
    return openmm.Platform.getPlatformByName(name)
