"""Ensembles of potentials: the mean prediction plus its epistemic uncertainty.

K independently trained members (same particle types in the same order, same cutoff) are
evaluated on the same configuration. The ensemble's prediction is the member mean; the spread
between members estimates the model (epistemic) uncertainty — large where the members were not
trained, which is what active learning and on-the-fly MD monitoring look for.

Spreads are *population* (biased, ddof = 0) standard deviations over the K members, i.e. divided
by K, not K − 1, everywhere:

    energy_std            = sqrt( mean_m (E_m − Ē)² )                        kJ/mol
    forces_std[i, c]      = sqrt( mean_m (F_m,ic − F̄_ic)² )                   kJ/mol/nm
    force_uncertainty[i]  = sqrt( mean_m |F_m,i − F̄_i|² ) = |forces_std[i]|  kJ/mol/nm

so a one-member ensemble has zero spread (rather than NaN) and ``force_uncertainty`` is exactly
the Euclidean norm of the per-component ``forces_std`` row.

Deployment: ``forward`` returns the mean energy, so ``e3nn.util.jit.script(ensemble)`` is a
TorchScript module whose autograd forces are the mean forces;
:func:`multiscale.openmm.ensemble_force` wraps it as an OpenMM Force (openmm-torch ``TorchForce``
or OpenMM's ``PythonForce``).

On disk an ensemble is a directory ``member_0/model.ckpt, member_1/model.ckpt, ...`` (each a
:func:`multiscale.models.io.save_model` checkpoint — the layout ``protocols/train_potential.py
--ensemble K`` writes under ``OUT/ensemble``) plus an ``ensemble.json`` manifest listing them.

Units: positions and box in nm, energies in kJ/mol, forces in kJ/mol/nm.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from e3nn.util.jit import compile_mode

from multiscale.atomic import atomic_write_text
from multiscale.models.io import load_model, save_model

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence]
PathLike = Union[str, "os.PathLike[str]"]

#: name of the manifest :func:`save_ensemble` writes next to the member directories
MANIFEST = "ensemble.json"
ENSEMBLE_FORMAT = "multiscale.Ensemble"
ENSEMBLE_FORMAT_VERSION = 1
MEMBER_CHECKPOINT = "model.ckpt"



def _member_dtype(model: torch.nn.Module) -> Optional[torch.dtype]:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


def _member_device(model: torch.nn.Module) -> Optional[torch.device]:
    for p in model.parameters():
        return p.device
    return None


@compile_mode("script")
class EnsemblePotential(torch.nn.Module):
    """K potentials evaluated together: mean energy/forces and their spread.

    Parameters
    ----------
    members: the K ≥ 1 member models (e.g. :class:`multiscale.models.EquivariantPotential`).
        All must have the same ``type_names`` (same order, since type indices are shared), the
        same ``cutoff`` (nm) and the same parameter dtype and device; a mismatch raises a
        ValueError naming the offending member and what differs. Members are held, not copied.

    ``ensemble(positions, types, box=None)`` returns the *mean* energy in kJ/mol (0-d tensor), with
    ``positions`` (N, 3) in nm, ``types`` int64 (N,) type indices and ``box`` None or (3, 3) rows
    a, b, c in nm — the same signature as a member, so it scripts and deploys like one. For the
    spread use :meth:`compute`.
    """

    __jit_unused_properties__ = ["members"]

    def __init__(self, members: Sequence[torch.nn.Module]):
        super().__init__()
        if isinstance(members, torch.nn.Module):
            raise TypeError("EnsemblePotential takes a list of member models, not a single model; wrap it: EnsemblePotential([model])")
        members = list(members)
        if not members:
            raise ValueError("an ensemble needs at least one member model; pass a list of K trained potentials")
        for k, member in enumerate(members):
            missing = [name for name in ("type_names", "cutoff", "compute", "type_indices") if not hasattr(member, name)]
            if not isinstance(member, torch.nn.Module) or missing:
                raise TypeError(
                    f"ensemble member {k} ({type(member).__name__}) is not a multiscale potential "
                    f"(missing {missing or 'torch.nn.Module'}); load members with multiscale.models.load_model(path)"
                )
        first = members[0]
        types0 = [str(t) for t in first.type_names]
        cutoff0 = float(first.cutoff)
        dtype0 = _member_dtype(first)
        device0 = _member_device(first)
        for k, member in enumerate(members[1:], start=1):
            types = [str(t) for t in member.type_names]
            if types != types0:
                how = "the same types in a different order" if sorted(types) == sorted(types0) else "different types"
                raise ValueError(
                    f"ensemble members disagree on particle types ({how}): member 0 has {types0}, member {k} has "
                    f"{types}; every member must be trained with the same `types` list in the same order"
                )
            if not math.isclose(float(member.cutoff), cutoff0, rel_tol=1e-12, abs_tol=0.0):
                raise ValueError(
                    f"ensemble members disagree on the cutoff: member 0 has {cutoff0} nm, member {k} has "
                    f"{float(member.cutoff)} nm; train all members with the same cutoff"
                )
            if _member_dtype(member) != dtype0:
                raise ValueError(
                    f"ensemble members disagree on dtype: member 0 is {dtype0}, member {k} is {_member_dtype(member)}; "
                    "convert them to one dtype first (e.g. member.double() for all)"
                )
            if _member_device(member) != device0:
                raise ValueError(
                    f"ensemble members are on different devices: member 0 on {device0}, member {k} on "
                    f"{_member_device(member)}; move them together (ensemble.to(device) after building it)"
                )
        self.models = torch.nn.ModuleList(members)
        self.type_names: List[str] = types0
        self.num_types = len(types0)
        self.cutoff = cutoff0
        self.num_members = len(members)

    # ------------------------------------------------------------------ TorchScript-visible core
    def forward(
        self, positions: torch.Tensor, types: torch.Tensor, box: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Mean over members of the total energy, kJ/mol (0-d tensor in the members' dtype)."""
        energies: List[torch.Tensor] = []
        for model in self.models:
            energies.append(model(positions, types, box))
        return torch.stack(energies).mean()

    # ------------------------------------------------------------------ Python conveniences
    @property
    def members(self) -> List[torch.nn.Module]:
        """The member models, in order (the held modules themselves, not copies)."""
        return list(self.models)

    @torch.jit.unused
    def type_indices(self, particle_types: Sequence[str]) -> torch.Tensor:
        """Map type names to indices (shared by all members); an unknown name raises ValueError naming it."""
        return self.models[0].type_indices(particle_types)

    @torch.jit.unused
    def compute(
        self,
        positions: ArrayLike,
        types: Union[Sequence[str], torch.Tensor],
        box: Optional[ArrayLike] = None,
        *,
        forces: bool = True,
    ) -> Dict[str, torch.Tensor]:
        """Mean prediction and member spread (population std, ddof = 0) on one configuration.

        ``positions`` (N, 3) nm; ``types`` type names or an int64 (N,) index tensor; ``box`` None
        (open) or (3, 3) cell rows in nm. Returns detached tensors (members' dtype and device):

        * ``energy`` (0-d, kJ/mol): mean member energy; ``energy_std`` (0-d, kJ/mol);
          ``member_energies`` (K,) kJ/mol.
        * with ``forces=True``: ``forces`` (N, 3) kJ/mol/nm, the mean member force (= −∂Ē/∂r);
          ``forces_std`` (N, 3) per-component spread; ``force_uncertainty`` (N,) =
          sqrt(mean_m |F_m,i − F̄_i|²) per particle; ``max_force_uncertainty`` (0-d) its maximum
          over particles; ``member_forces`` (K, N, 3). All in kJ/mol/nm.
        """
        if not isinstance(types, torch.Tensor):
            types = self.type_indices(list(types))
        outputs = [member.compute(positions, types, box, forces=forces) for member in self.models]
        energies = torch.stack([out["energy"] for out in outputs])
        mean_energy = energies.mean()
        result: Dict[str, torch.Tensor] = {
            "energy": mean_energy,
            "energy_std": torch.sqrt(((energies - mean_energy) ** 2).mean()),
            "member_energies": energies,
        }
        if forces:
            member_forces = torch.stack([out["forces"] for out in outputs])  # (K, N, 3)
            mean_forces = member_forces.mean(dim=0)
            deviation_sq = (member_forces - mean_forces) ** 2  # (K, N, 3)
            per_particle = torch.sqrt(deviation_sq.sum(dim=-1).mean(dim=0))  # (N,)
            result["forces"] = mean_forces
            result["forces_std"] = torch.sqrt(deviation_sq.mean(dim=0))
            result["force_uncertainty"] = per_particle
            result["max_force_uncertainty"] = (
                per_particle.max() if per_particle.numel() else torch.zeros((), dtype=per_particle.dtype)
            )
            result["member_forces"] = member_forces
        return result


# ---------------------------------------------------------------------------------- files
def save_ensemble(
    ensemble: EnsemblePotential, directory: PathLike, metadata: Optional[Dict[str, Any]] = None
) -> List[Path]:
    """Write each member to ``directory/member_k/model.ckpt`` (atomic, via ``save_model``), then the
    ``ensemble.json`` manifest listing them (also atomic, written last). Returns the member paths.

    Member directories left over from an earlier, larger ensemble in the same ``directory`` are
    not deleted, but the manifest lists only the current members, and :func:`load_ensemble` of
    the directory follows the manifest.
    """
    if not isinstance(ensemble, EnsemblePotential):
        raise TypeError(
            f"save_ensemble expects an EnsemblePotential, got {type(ensemble).__name__}; "
            "build one with EnsemblePotential([model_a, model_b, ...]) or save a single model with save_model"
        )
    directory = Path(directory)
    paths = []
    for k, member in enumerate(ensemble.members):
        path = directory / f"member_{k}" / MEMBER_CHECKPOINT
        member_metadata = dict(metadata or {})
        member_metadata.update({"ensemble_member": k, "ensemble_size": ensemble.num_members})
        save_model(member, path, metadata=member_metadata)
        paths.append(path)
    manifest = {
        "format": ENSEMBLE_FORMAT,
        "format_version": ENSEMBLE_FORMAT_VERSION,
        "members": [str(p.relative_to(directory)) for p in paths],
        "types": list(ensemble.type_names),
        "cutoff_nm": ensemble.cutoff,
        "metadata": dict(metadata or {}),
    }
    atomic_write_text(directory / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return paths


def _member_paths(directory: Path) -> List[Path]:
    manifest = directory / MANIFEST
    if manifest.is_file():
        data = json.loads(manifest.read_text(encoding="utf-8"))
        if data.get("format") != ENSEMBLE_FORMAT:
            raise ValueError(f"{manifest} is not a multiscale ensemble manifest (format {data.get('format')!r})")
        if int(data.get("format_version", -1)) > ENSEMBLE_FORMAT_VERSION:
            raise ValueError(
                f"{manifest}: ensemble format_version {data['format_version']} is newer than this multiscale "
                f"understands ({ENSEMBLE_FORMAT_VERSION}); upgrade multiscale"
            )
        return [directory / p for p in data["members"]]
    found = []
    for child in directory.iterdir():
        match = re.fullmatch(r"member_(\d+)", child.name)
        if match and (child / MEMBER_CHECKPOINT).is_file():
            found.append((int(match.group(1)), child / MEMBER_CHECKPOINT))
    if not found:
        raise FileNotFoundError(
            f"{directory} holds no ensemble: no {MANIFEST} and no member_K/{MEMBER_CHECKPOINT}; "
            "write one with save_ensemble() or train with protocols/train_potential.py --ensemble K "
            "(members under OUT/ensemble), or pass the checkpoint paths as a list"
        )
    return [path for _, path in sorted(found)]


def load_ensemble(
    paths: Union[PathLike, Sequence[PathLike]], map_location: Union[str, torch.device] = "cpu"
) -> EnsemblePotential:
    """Load an ensemble.

    ``paths`` is either one directory (written by :func:`save_ensemble`, or the ``OUT/ensemble``
    folder of ``protocols/train_potential.py --ensemble K``: ``member_K/model.ckpt`` in numeric
    order), or a list of member checkpoints — each a ``model.ckpt`` file or a directory holding
    one. Members are loaded with ``load_model`` (``weights_only``; no pickled code runs) and
    checked for matching types and cutoff.
    """
    if isinstance(paths, (str, os.PathLike)):
        root = Path(paths)
        if root.is_dir():
            files = _member_paths(root)
        elif root.is_file():
            files = [root]
        else:
            raise FileNotFoundError(f"no ensemble directory or checkpoint at {root}")
    else:
        files = []
        for p in paths:
            p = Path(p)
            files.append(p / MEMBER_CHECKPOINT if p.is_dir() else p)
        if not files:
            raise ValueError("load_ensemble got an empty list of paths; pass the member checkpoints or an ensemble directory")
    members = [load_model(path, map_location=map_location) for path in files]
    try:
        return EnsemblePotential(members)
    except ValueError as err:
        raise ValueError(f"{err} (checkpoints: {[str(f) for f in files]})") from None
