"""Reference labellers: GFN2-xTB (tblite) and any OpenMM System, returning a LabelResult."""

from multiscale.labels.openmm_teacher import OpenMMLabeller
from multiscale.labels.result import LabelResult
from multiscale.labels.xtb import GFN2xTBLabeller

__all__ = ["GFN2xTBLabeller", "OpenMMLabeller", "LabelResult"]
