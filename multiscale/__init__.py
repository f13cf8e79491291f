"""multiscale: E(3)-equivariant ML potentials, hybrid electrostatics and coarse-graining in OpenMM.

Importing multiscale imports torch first: openmmtorch's binary needs libnvrtc.so.12 from the
torch wheel to be loaded before it, so ``import multiscale`` (or any submodule) before
``import openmmtorch`` is always safe.
"""

import torch  # noqa: F401  (must precede any openmmtorch import; see module docstring)

__version__ = "0.1.0"
