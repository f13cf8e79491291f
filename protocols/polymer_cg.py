#!/usr/bin/env python
"""Coarse-grain a polyethylene melt (TraPPE-UA) by force matching, then run it long in OpenMM.

    python protocols/polymer_cg.py [--quick] --out DIR [--platform CPU|CUDA] [...]

Steps (each writes its outputs; a re-run skips the steps whose outputs exist, so an interrupted
job resumes, and the CG MD itself resumes from its last checkpoint):

1. build the melt (packing + minimisation)                     DIR/fine/melt.pdb
2. equilibrate and sample the fine model, recording forces     DIR/fine/recording/ (npz chunks)
3. map to beads (k monomers per bead, centre of mass;          DIR/mapping.json
   summed forces — bonds are flexible, so no constraint crosses a bead)
4. fit priors by Boltzmann inversion                            DIR/priors.json, DIR/priors.png
5. model_family "network": force-match the bead network on      DIR/model/ (model.ckpt, log.csv, ...)
   F_mapped − F_prior; "tabulated": MS-CG tables by linear      DIR/tabulated.json, DIR/tabulated.png
   least squares, pressure-matched (native OpenMM forces),
   then bonded and chain-pair (1-5, 1-6) refinement           DIR/tabulated_refined.json, .png
   and density matching                                        DIR/density_matching.json
5c. time the constrained TraPPE-UA reference (the speed-up's    DIR/reference_timing.json
   baseline) at its largest stable step, on every core and (with
   cg_single_core) on one pinned core; the faster counts
6. run the CG simulation                                        DIR/cg.pdb, DIR/cg.dcd,
   (the CG System without the network, for multiscale.validate)  DIR/cg_system.xml
7. validate against the mapped reference                        DIR/reference_cg.pdb/.dcd,
                                                                DIR/report.json, report.md, *.png

The speed-up is CG simulated time per wall second over the constrained reference's, each in its
faster thread configuration on this machine (the quick preset runs the CG model on one pinned
core: multiscale.openmm.affinity); the chains' centre-of-mass diffusion, CG against reference, is reported apart from it (report "diffusion").

``--quick`` (~11 minutes on 2 CPU cores) runs the tabulated family in closed form with bonded and
chain-pair refinement and density matching; the full run (longer chains, more sampling, the bead network) is meant for a
GPU. ``model_family`` in a --config file switches either to the other family's settings.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import multiscale  # noqa: E402,F401  (torch before openmmtorch)
from multiscale.atomic import atomic_write_json  # noqa: E402
from multiscale.cli import existing_file, nonnegative_int, output_dir, positive_int, run_main  # noqa: E402
from multiscale.config import YamlConfig, read_yaml  # noqa: E402
from multiscale.jobs import ResumableJob, Stage  # noqa: E402
from multiscale.openmm.platforms import get_platform  # noqa: E402
from multiscale.units import check_cutoff_nm  # noqa: E402
import numpy as np  # noqa: E402
import openmm  # noqa: E402
import torch  # noqa: E402
from openmm import app, unit  # noqa: E402
from tqdm import tqdm  # noqa: E402

from multiscale.cg.mapping import MappingDefinition, PolymerRule, build_mapping  # noqa: E402
from multiscale.cg.priors import BOND_FITS, PriorConfig, collect_samples, fit_priors_from_samples, plot_priors  # noqa: E402
from multiscale.cg.tabulated import TabulatedConfig, TabulatedModel, fit_tabulated, plot_tables  # noqa: E402
from multiscale.openmm.tabulated import FORMS as TABULATED_FORMS  # noqa: E402
from multiscale.openmm.affinity import single_core  # noqa: E402
from multiscale.openmm.speed import faster_of, time_alternating  # noqa: E402
from multiscale.openmm.cg_simulation import CGSimulation  # noqa: E402
from multiscale.openmm.assembly import Barostat  # noqa: E402
from multiscale.openmm.cg_system import build_cg_system, force_matching_set  # noqa: E402
from multiscale.openmm.evaluation import write_system_xml  # noqa: E402
from multiscale.openmm.pressure import PressureCorrection, fit_pressure_correction  # noqa: E402
from multiscale.models import load_model  # noqa: E402
from multiscale.models.io import with_dtype  # noqa: E402
from multiscale.openmm.recording import ForceRecorder, load_recording  # noqa: E402
from multiscale.training.config import TrainerConfig  # noqa: E402
from multiscale.training.loss import LossConfig  # noqa: E402
from multiscale.training.workflow import JobConfig, fit_potential  # noqa: E402
from systems.polyethylene import build_melt, trappe_system  # noqa: E402


@dataclass
class Settings(YamlConfig):
    """Every knob of the job (quick and full presets below; ``--config FILE`` overrides fields
    from YAML, bare or under a ``polymer_cg:`` section). Units: K, nm, ps, s, bar."""

    SECTION = "polymer_cg"
    DESCRIPTION = "polymer_cg setting"

    num_chains: int
    chain_length: int
    monomers_per_bead: int
    temperature_K: float
    fine_cutoff_nm: float
    fine_timestep_ps: float
    equilibration_steps: int
    sample_frames: int
    sample_interval: int
    train_max_time_s: float
    train_epochs: int
    model_cutoff_nm: float
    channels: int
    num_layers: int
    lmax: int
    prior_cutoff_nm: float
    cg_timestep_ps: float
    cg_steps: int
    cg_report_interval: int
    cg_npt_steps: int
    pressure_bar: float = 1.0
    force_map_neighbors: int = 4  # optimal force map support (bonds beyond the bead); -1: plain sum
    # Boltzmann-inverted torsion priors. Off: the bead angles reach 180°, where a torsion is
    # undefined and its forces diverge; with them on, the 30 fs CG run here went to NaN.
    dihedral_priors: bool = False
    # Bond priors: "well" (parabola on the Boltzmann-inverted well) or "moments" (mean and width of
    # the Jacobian-corrected distribution; robust for the short runs of small systems)
    prior_bond_fit: str = "well"
    # Fit the intermolecular ramp that restores the reference pressure (step 5b). Off by default:
    # in the quick run it took the NPT density error from -19 % to -5.5 % but swelled the chains
    # (Rg +2.5 % -> +5.6 %), and this job validates structure at the reference density.
    pressure_correction: bool = False
    # A CG run that goes to NaN restarts from its last checkpoint with fresh velocities, this many
    # times at most (counted in report.json extra.cg.restarts). At 30 fs one quick run in six blew
    # up after ~10,000 steps (hard r^-12 contacts), hence the 20 fs step and this safety net.
    cg_max_restarts: int = 3
    # "network": priors + the equivariant bead network (many-body); "tabulated": MS-CG pair, bond,
    # angle and bending-torsion tables run natively by OpenMM (fast; pairwise). Each family has its
    # own presets (PRESETS): --quick is tabulated, the full run the network.
    model_family: str = "network"
    # multiple time stepping: bonded forces on cg_inner_steps sub-steps of cg_timestep_ps (1: off)
    cg_inner_steps: int = 1
    # tabulated family: how OpenMM runs the tables, "tables" (tabulated functions, exact) or
    # "closed" (each table projected onto a polynomial; 2-3x cheaper per CG step on the CPU)
    tabulated_form: str = "tables"
    # run the CG simulations (refinement, density matching, NVT, NPT) on one CPU-platform thread
    # pinned to one core (multiscale.openmm.affinity): a System of a few hundred beads spends most
    # of a CPU step waking the platform's worker on another core. CPU platform only; the
    # speed-up's baseline is then timed both ways and the faster counts
    cg_single_core: bool = False
    tabulated_pair_spacing_nm: float = 0.02
    tabulated_dihedral_order: int = 6
    # the tabulated fit's virial constraint: the model's mean pressure on the reference
    # configurations is pressure_bar (Das & Andersen 2010), so its NPT density follows
    pressure_matching: bool = True
    # the speed-up's baseline: published TraPPE-UA (constrained bonds) at this step, timed for
    # reference_timing_steps steps in this job (5 fs: stable, T and density as at 2 fs; README)
    reference_timestep_ps: float = 0.005
    reference_timing_steps: int = 2000
    # before the flexible model's equilibration: this long (ps) of the constrained TraPPE-UA at
    # reference_timestep_ps, 5x cheaper per ps, so that the chains' conformations relax (the packed
    # chains start compact: with 20 ps of flexible equilibration alone, the quick reference's mean
    # Rg still rose from 0.585 to 0.635 nm during its 100 ps of sampling); 0: off
    constrained_equilibration_ps: float = 0.0
    # tabulated family: short NPT runs (density_iteration_steps each) that set a pair ramp
    # A (1 - r/r_c) so that the NPT density is the reference's (secant method); 0: off
    density_iterations: int = 0
    density_iteration_steps: int = 2000
    # tabulated family: rounds of iterative Boltzmann refinement of the bond and angle tables and
    # the bending-torsion coefficients, each measured in an NVT run of bonded_refinement_steps at
    # the reference density (before any density matching); 0: off
    bonded_refinements: int = 0
    bonded_refinement_steps: int = 3000
    # tabulated family: chain-pair tables on the distances of bead pairs this many bonds apart
    # within a chain (4, 5: the 1-5 and 1-6 pairs), refined in the same rounds as the bonded tables
    # to the reference's distributions: what sets a chain's size and shape beyond its torsions
    # ([]: off; needs bonded_refinements)
    chain_pair_separations: List[int] = field(default_factory=list)
    # the fraction of each iterative Boltzmann step taken (1: the full step), and the number of
    # last rounds whose models are averaged into the refined one (0: the last round's model; at
    # most all bonded_refinements rounds)
    bonded_refinement_damping: float = 1.0
    bonded_refinement_averaging: int = 0

    def __post_init__(self) -> None:
        # field types are checked by YamlConfig first ("20fs" for a float is refused there); the
        # ranges below are checked here, so that every setting is known good before any work starts
        positive = ("num_chains", "chain_length", "monomers_per_bead", "temperature_K", "fine_cutoff_nm",
                    "fine_timestep_ps", "sample_frames", "sample_interval", "train_max_time_s", "train_epochs",
                    "model_cutoff_nm", "channels", "num_layers", "prior_cutoff_nm", "cg_timestep_ps", "cg_steps",
                    "cg_report_interval", "pressure_bar")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"polymer_cg setting {name} must be > 0, got {getattr(self, name)!r}")
        if self.model_family not in MODEL_FAMILIES:
            raise ValueError(f"polymer_cg setting model_family must be one of {MODEL_FAMILIES}, got {self.model_family!r}")
        for name in ("cg_inner_steps", "reference_timing_steps", "tabulated_pair_spacing_nm", "reference_timestep_ps",
                     "density_iteration_steps", "bonded_refinement_steps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"polymer_cg setting {name} must be > 0, got {getattr(self, name)!r}")
        if self.tabulated_form not in TABULATED_FORMS:
            raise ValueError(f"polymer_cg setting tabulated_form must be one of {TABULATED_FORMS}, got {self.tabulated_form!r}")
        if self.model_family == "tabulated" and self.pressure_correction:
            raise ValueError("pressure_correction (the ramp fitted under the network) is for model_family network; "
                             "the tabulated family is pressure-matched inside its fit (pressure_matching)")
        if self.reference_timestep_ps > 0.01:
            raise ValueError(f"reference_timestep_ps={self.reference_timestep_ps} ps is too long for the atomistic reference; "
                             "time steps are in ps (5 fs = 0.005)")
        for name in ("density_iterations", "bonded_refinements"):
            if getattr(self, name) and self.model_family != "tabulated":
                raise ValueError(f"{name} applies to model_family tabulated (set it to 0 for the network family)")
        for name in ("equilibration_steps", "lmax", "cg_npt_steps", "cg_max_restarts", "density_iterations",
                     "bonded_refinements", "constrained_equilibration_ps"):
            if getattr(self, name) < 0:
                raise ValueError(f"polymer_cg setting {name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 < self.bonded_refinement_damping <= 1.0:
            raise ValueError(f"polymer_cg setting bonded_refinement_damping must be in (0, 1], got {self.bonded_refinement_damping!r}")
        if self.bonded_refinement_averaging < 0:
            raise ValueError(f"polymer_cg setting bonded_refinement_averaging must be >= 0 rounds, got {self.bonded_refinement_averaging!r}")
        if self.chain_pair_separations:
            if self.model_family != "tabulated" or not self.bonded_refinements:
                raise ValueError("chain_pair_separations are refined with the bonded tables: they need model_family "
                                 "tabulated and bonded_refinements > 0 (or set chain_pair_separations: [])")
            if min(self.chain_pair_separations) < 3 or len(set(self.chain_pair_separations)) != len(self.chain_pair_separations):
                raise ValueError(f"chain_pair_separations are distinct numbers of bonds >= 3 (4, 5: the 1-5 and 1-6 pairs; "
                                 f"1-2, 1-3 are the bonds and angles), got {self.chain_pair_separations}")
        if self.prior_bond_fit not in BOND_FITS:
            raise ValueError(f"polymer_cg setting prior_bond_fit must be one of {BOND_FITS}, got {self.prior_bond_fit!r}")
        if self.force_map_neighbors < -1:
            raise ValueError(f"force_map_neighbors must be -1 (plain sum) or >= 0 bonds, got {self.force_map_neighbors}")
        if self.chain_length % self.monomers_per_bead:
            raise ValueError(
                f"chain_length {self.chain_length} is not a multiple of monomers_per_bead {self.monomers_per_bead}; "
                "every bead must hold the same number of monomers"
            )
        if self.chain_length // self.monomers_per_bead < 2:
            raise ValueError("a chain needs at least 2 beads (chain_length >= 2 * monomers_per_bead)")
        beads = self.chain_length // self.monomers_per_bead
        if self.chain_pair_separations and max(self.chain_pair_separations) > beads - 1:
            raise ValueError(f"chain_pair_separations {self.chain_pair_separations}: a chain of {beads} beads "
                             f"(chain_length {self.chain_length} / monomers_per_bead {self.monomers_per_bead}) has no pair more "
                             f"than {beads - 1} bonds apart; use separations <= {beads - 1}")
        check_cutoff_nm(self.model_cutoff_nm, "model_cutoff_nm")
        for name in ("fine_cutoff_nm", "prior_cutoff_nm"):
            if getattr(self, name) > 5.0:
                raise ValueError(f"{name}={getattr(self, name)} is implausibly large; distances are in nm (1 nm = 10 Å)")
        if self.fine_timestep_ps > 0.01:
            raise ValueError(
                f"fine_timestep_ps={self.fine_timestep_ps} ps is too long for the flexible united-atom model "
                "(1-2 fs = 0.001-0.002 ps); time steps are in ps"
            )
        if self.cg_timestep_ps > 0.2:
            raise ValueError(f"cg_timestep_ps={self.cg_timestep_ps} ps (= {self.cg_timestep_ps * 1000:g} fs) is implausibly long; time steps are in ps (20 fs = 0.02)")
        if not 100.0 <= self.temperature_K <= 1000.0:
            raise ValueError(f"temperature_K={self.temperature_K} is outside 100-1000 K; temperatures are in kelvin (450 K for the melt)")
        if self.cg_steps % self.cg_report_interval:
            raise ValueError(f"cg_steps ({self.cg_steps}) must be a multiple of cg_report_interval ({self.cg_report_interval})")
        if self.cg_npt_steps % self.cg_report_interval:
            raise ValueError(f"cg_npt_steps ({self.cg_npt_steps}) must be a multiple of cg_report_interval ({self.cg_report_interval})")


#: frames recorded in each bonded refinement run (the first quarter dropped): a chain-pair
#: distribution has one 1-6 pair per chain, so 32 chains give ~3,600 samples a round (with 40
#: frames, 960, too few for the 1.5-knot kernel density of a 2 nm wide distribution)
REFINEMENT_FRAMES = 150

#: the CG model families (see Settings.model_family)
MODEL_FAMILIES = ("network", "tabulated")

QUICK_NETWORK = Settings(
    num_chains=32, chain_length=24, monomers_per_bead=4, temperature_K=450.0, fine_cutoff_nm=1.0,
    fine_timestep_ps=0.001, equilibration_steps=20_000, sample_frames=500, sample_interval=400,
    train_max_time_s=240.0, train_epochs=400, model_cutoff_nm=0.8, channels=8, num_layers=2, lmax=1,
    prior_cutoff_nm=1.0, cg_timestep_ps=0.02, cg_steps=20_000, cg_report_interval=100, cg_npt_steps=7_500,
    constrained_equilibration_ps=150.0,
)
# The quick default: the tabulated family with the settings that meet the structure and
# density goals in three seeds (README): MTS (pairs every 80 fs, bonded every 20 fs), eight rounds
# of iterative Boltzmann refinement of the bonded tables and of chain-pair tables on the 1-5 and
# 1-6 bead distances (which set the chains' size distribution: without them the CG Rg spread
# 0.062 nm against the reference's 0.076), half steps, the last four rounds' models averaged (the
# angle, torsion and chain-pair steps all correct the chain size: at full steps the chain size
# swung by ±5 % from round to round, and the last round's model was 4 % small in one run), then
# four short NPT runs that set the intermolecular density ramp. The network family at 20 fs is 25 % too dilute at 1 bar. The
# density runs are long because this 192-bead melt's density wanders by ~3 % over ~100 ps: with
# 120 ps trials and a 300 ps NPT run, a repeat of a run that had come out at -0.6 % read +5.5 % (README).
# A frame every 1.2 ps: with one every 6 ps, the CG run's own torsion histogram (32
# chains, 100 frames) disagreed with itself by a JSD of 0.023 between its halves, and its JSD
# against the reference read 0.011; with 500 frames 0.007 (the reference's half-to-half floor 0.008).
# Both quick presets sample 200 ps of reference (a frame every 400 fs, ~2 min more than 100 ps):
# over six runs of 100 ps its mean Rg ranged 0.63–0.66 nm and its halves' Rg distributions
# differed by JSD 0.011–0.017.
# The tables run in closed form (polynomials): 2-3x cheaper per CG step on the CPU, with the same
# structure after the refinements (speed-up 7.0-7.5x over seeds 0-2 with the bending-torsion terms
# in coordinates and a 60/20 fs step, against 2.4-2.9x with tabulated functions; README).
# The pairs every 80 fs rather than 60 (28 % more ps per wall second): they held at 90 fs in every
# run tried; the bonded step stays 20 fs, because at 25-30 fs one refined model ran 13-340 K hot
# (README). The run lengths in ps are those of the 60/20 fs preset (600 ps NVT with a frame every
# 1.2 ps, 180 ps refinement runs), but for the density: trials of 900 ps instead of 300 (the
# second half averaged) and 1.8 ns of NPT instead of 900 ps. With the shorter runs, three runs at
# 80/20 fs each stopped at a trial that read within 1 % of the reference density, and their NPT
# runs then read +1.3, +4.4 and -2.9 %; seven 300-900 ps repeats of the +4.4 % run's trial read
# 0.725-0.751 g/cm³ where it had read 0.715 (the density's correlation time is 25-80 ps).
# Six monomers per bead (4 beads per C24 chain, 128 beads; since 2026-12-06, third batch): at 4 per
# bead the step stayed at 80/20 fs (10.0-10.6x); the heavier, softer beads hold 120/40 fs (160 fs
# blew up, 120/60 ran 40 K hot; README), and the chain-pair table on the 1-4 bead distance, the
# end-to-end distance of these chains, keeps their size distribution. Run lengths in ps are those
# of the 80/20 fs preset, but for the density's: on one pinned core (cg_single_core) the CG runs
# cost half as much, and the saving buys 4x longer density trials (3.6 ns) and 3x the NPT run
# (5.4 ns). With 900 ps trials two trials at one ramp read 0.708 and 0.740 g/cm³, and one job's
# NPT run then read -3.0 %.
QUICK = replace(
    QUICK_NETWORK, model_family="tabulated", monomers_per_bead=6, cg_timestep_ps=0.12, cg_inner_steps=3, cg_steps=5_000,
    cg_npt_steps=45_000, cg_report_interval=10, bonded_refinements=8, bonded_refinement_steps=3_000, density_iterations=4,
    density_iteration_steps=30_000, tabulated_form="closed", chain_pair_separations=[3], bonded_refinement_damping=0.5,
    bonded_refinement_averaging=4, cg_single_core=True,
)
# The full preset (for a GPU) stays the network family: many-body accuracy is what a GPU buys.
FULL = Settings(
    num_chains=64, chain_length=96, monomers_per_bead=4, temperature_K=450.0, fine_cutoff_nm=1.4,
    fine_timestep_ps=0.001, equilibration_steps=500_000, sample_frames=5000, sample_interval=500,
    train_max_time_s=4 * 3600.0, train_epochs=2000, model_cutoff_nm=1.2, channels=32, num_layers=3, lmax=2,
    prior_cutoff_nm=1.2, cg_timestep_ps=0.02, cg_steps=5_000_000, cg_report_interval=1000, cg_npt_steps=500_000,
    constrained_equilibration_ps=2000.0,
)
# the full tabulated preset keeps pairs every 60 fs: 80-90 fs was tried in runs of ~1 ns, this
# preset's run is 100 ns
FULL_TABULATED = replace(
    FULL, model_family="tabulated", cg_timestep_ps=0.06, cg_inner_steps=3, cg_steps=1_700_000, cg_npt_steps=170_000,
    bonded_refinements=3, bonded_refinement_steps=20_000, density_iterations=4, density_iteration_steps=20_000,
    tabulated_form="closed",
)
#: the preset of each (--quick, model_family): a --config that names the other family starts from
#: that family's time step, MTS, refinement and density settings, so `model_family: network` alone
#: switches the job (a partial switch, e.g. network with the tabulated family's 60 fs, is never made)
PRESETS = {(True, "tabulated"): QUICK, (True, "network"): QUICK_NETWORK,
           (False, "network"): FULL, (False, "tabulated"): FULL_TABULATED}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=output_dir)
    p.add_argument("--quick", action="store_true", help="small melt, short runs, tabulated family: ~10 min on 2 CPU cores")
    p.add_argument("--platform", default="CPU", help="OpenMM platform: CPU (default), CUDA, OpenCL, Reference")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--cg-steps", type=positive_int, help="override the CG MD length (steps); a finished run is extended")
    p.add_argument("--config", type=existing_file, help="YAML file overriding settings of the preset (see Settings)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def settings_for(args) -> Settings:
    """The preset (--quick or full, for the model family that --config names, else the preset's
    own), then --config's overrides, then --cg-steps; every setting is checked here, before any
    work starts."""
    preset = QUICK if args.quick else FULL
    if args.config is not None:
        preset = PRESETS.get((bool(args.quick), _named_family(args.config)), preset)
    settings = Settings.from_yaml(args.config, base=preset) if args.config is not None else preset
    if args.cg_steps is None:
        return settings
    try:
        return Settings.from_dict({**settings.to_dict(), "cg_steps": args.cg_steps})
    except ValueError as error:
        raise ValueError(f"--cg-steps: {error}") from None


def _named_family(path) -> Optional[str]:
    """The model_family a --config file names, or None (a file that cannot be read, or a bad value,
    is left for Settings.from_yaml to refuse with its own message)."""
    try:
        data = read_yaml(path)
    except ValueError:
        return None
    section = data.get(Settings.SECTION, data)
    family = section.get("model_family") if isinstance(section, dict) else None
    return family if isinstance(family, str) else None


#: settings that may change between a run and its resumption (they only lengthen the CG runs)
EXTENDABLE = ("cg_steps", "cg_npt_steps")

#: the job's stages with a completion marker (the others are quick and redone on every run; the
#: CG runs resume from their own checkpoints)
STAGES = (
    Stage("fine_sampling", outputs=("fine/melt.pdb", "fine/recording/manifest.json"), marker="fine/recording/DONE"),
    Stage("force_matching", outputs=("model/model.ckpt",), marker="model/DONE"),
    Stage("pressure_correction", outputs=(), marker="pressure_correction.json"),
    Stage("tabulated_fit", outputs=("tabulated.json",)),
    Stage("reference_timing", outputs=(), marker="reference_timing.json"),
    Stage("bonded_refinement", outputs=("tabulated_refined.json",)),
    Stage("density_matching", outputs=(), marker="density_matching.json"),
)


def npt_temperature(path: Path, target_K: float) -> Optional[dict]:
    """Mean kinetic temperature (K) of a CGSimulation energy log, its first third dropped as in
    the density; with its relative difference from ``target_K`` (%). None without the log (an NPT
    run finished before the job logged it)."""
    if not path.is_file():
        return None
    temperatures = np.atleast_1d(np.genfromtxt(path, delimiter=",", names=True)["temperature_K"])
    kept = temperatures[len(temperatures) // 3:]
    mean = float(np.mean(kept))
    return {"cg_npt_mean_K": mean, "target_K": float(target_K), "relative_difference_percent": 100.0 * (mean / target_K - 1.0),
            "frames": int(len(kept))}


def say(message: str) -> None:
    print(f"[polymer_cg {time.strftime('%H:%M:%S')}] {message}", flush=True)


def fine_stage(args, s: Settings, out: Path, job: ResumableJob):
    """Steps 1–2: melt, equilibration, sampling with forces. Returns (topology, system, recording, speed)."""
    fine = out / "fine"
    fine.mkdir(parents=True, exist_ok=True)
    topology, positions, box, _ = build_melt(
        s.num_chains, s.chain_length, temperature_K=s.temperature_K, seed=args.seed, platform=args.platform,
        cutoff_nm=s.fine_cutoff_nm,
    )
    system = trappe_system(topology, box, cutoff_nm=s.fine_cutoff_nm)
    # NPT (Monte Carlo barostat): the reference density is the fine model's own at s.pressure_bar
    Barostat(s.pressure_bar, s.temperature_K, seed=args.seed + 13).add_to(system)
    if job.is_done("fine_sampling"):
        return topology, system, load_recording(fine / "recording"), job.result("fine_sampling")
    with open(fine / "melt.pdb", "w") as handle:
        app.PDBFile.writeFile(topology, positions * unit.nanometer, handle)
    if s.constrained_equilibration_ps > 0:
        positions, box = constrained_equilibration(topology, positions, box, s, args)
    integrator = openmm.LangevinMiddleIntegrator(s.temperature_K * unit.kelvin, 1.0 / unit.picosecond, s.fine_timestep_ps * unit.picosecond)
    integrator.setRandomNumberSeed(args.seed + 11)
    sim = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName(args.platform))
    sim.context.setPeriodicBoxVectors(*[openmm.Vec3(*map(float, row)) for row in np.asarray(box, dtype=np.float64)])
    sim.context.setPositions(positions)
    sim.context.setVelocitiesToTemperature(s.temperature_K * unit.kelvin, args.seed + 12)
    say(f"fine model: {topology.getNumAtoms()} united atoms, NPT at {s.pressure_bar} bar; equilibrating {s.equilibration_steps} steps")
    chunk = max(s.equilibration_steps // 20, 1)
    for _ in tqdm(range(0, s.equilibration_steps, chunk), desc="equilibrate", disable=args.no_progress):
        sim.step(chunk)
    # an earlier, interrupted sampling is discarded: the equilibration above restarted from the melt
    if (fine / "recording").exists():
        import shutil

        shutil.rmtree(fine / "recording")
    recorder = ForceRecorder(fine / "recording", s.sample_interval, chunk_size=50)
    sim.reporters.append(recorder)
    sim.currentStep = 0
    start = time.perf_counter()
    for _ in tqdm(range(s.sample_frames), desc="sample fine (forces)", disable=args.no_progress):
        sim.step(s.sample_interval)
    elapsed = time.perf_counter() - start
    recorder.close()
    speed = {"fine_simulated_ps_per_wall_second": s.sample_frames * s.sample_interval * s.fine_timestep_ps / elapsed}
    job.complete("fine_sampling", speed)
    return topology, system, load_recording(fine / "recording"), speed


def constrained_equilibration(topology, positions, box, s: Settings, args):
    """``constrained_equilibration_ps`` of the published TraPPE-UA (constrained bonds, NPT at
    ``reference_timestep_ps``) from the packed melt: the chains' conformations and the density
    relax at a fifth of the flexible model's cost per ps. Returns (positions, box) in nm."""
    context, integrator = trappe_npt_context(topology, positions, box, s, args, constrained=True,
                                             timestep_ps=s.reference_timestep_ps, seeds=(17, 18, 19))
    steps = max(int(round(s.constrained_equilibration_ps / s.reference_timestep_ps)), 1)
    chunk = max(steps // 20, 1)
    say(f"constrained TraPPE-UA: equilibrating the chains {s.constrained_equilibration_ps:g} ps at "
        f"{s.reference_timestep_ps * 1000:g} fs")
    for done in tqdm(range(0, steps, chunk), desc="equilibrate (constrained)", disable=args.no_progress):
        integrator.step(min(chunk, steps - done))
    state = context.getState(getPositions=True)
    return (state.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
            state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer))


def trappe_npt_context(topology, positions, box, s: Settings, args, *, constrained: bool, timestep_ps: float,
                       seeds: tuple):
    """(Context, integrator) of the TraPPE-UA melt, NPT at ``pressure_bar`` (Langevin,
    ``timestep_ps``), bonds constrained or flexible, at ``positions`` in ``box`` (nm), with
    velocities drawn; ``seeds``: offsets from --seed of the barostat, the integrator (None: OpenMM
    picks) and the velocities."""
    barostat_seed, integrator_seed, velocity_seed = seeds
    system = trappe_system(topology, box, cutoff_nm=s.fine_cutoff_nm, constrain_bonds=constrained)
    Barostat(s.pressure_bar, s.temperature_K, seed=args.seed + barostat_seed).add_to(system)
    integrator = openmm.LangevinMiddleIntegrator(s.temperature_K * unit.kelvin, 1.0 / unit.picosecond,
                                                 timestep_ps * unit.picosecond)
    if integrator_seed is not None:
        integrator.setRandomNumberSeed(args.seed + integrator_seed)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(args.platform))
    context.setPeriodicBoxVectors(*[openmm.Vec3(*map(float, row)) for row in np.asarray(box, dtype=np.float64)])
    context.setPositions(positions)
    if constrained:
        context.applyConstraints(1e-6)
    context.setVelocitiesToTemperature(s.temperature_K * unit.kelvin, args.seed + velocity_seed)
    return context, integrator


def cg_on_one_core(s: Settings, args) -> bool:
    """Whether the CG runs go on one pinned core: ``cg_single_core``, on the CPU platform only."""
    return bool(s.cg_single_core) and args.platform == "CPU"


def time_fine_models(topology, rec, s: Settings, args, blocks: int = 3) -> dict:
    """Simulated ps per wall second of the published TraPPE-UA (constrained bonds, at
    ``reference_timestep_ps``) and of the flexible model that gave the forces (at
    ``fine_timestep_ps``), both NPT from the last recorded frame, timed in alternating blocks so
    that the machine's load hits both alike; the median block counts. With ``cg_single_core`` on
    the CPU platform the constrained reference is also timed on one pinned core
    (:func:`multiscale.openmm.affinity.single_core`), as the CG runs are, and its faster
    configuration is the baseline ("constrained", with both under "configurations")."""
    positions = rec["positions"][-1].astype(np.float64)
    box = rec["boxes"][-1].astype(np.float64)
    variants = [("constrained", True, s.reference_timestep_ps, False), ("flexible", False, s.fine_timestep_ps, False)]
    if cg_on_one_core(s, args):
        # the CG runs use one pinned core: the reference gets the same chance, and the faster counts
        variants.insert(1, ("constrained_single_core", True, s.reference_timestep_ps, True))
    runs = {}
    for name, constrained, dt, one_core in variants:
        with single_core(one_core):  # the platform's threads start, and stay, where the Context is made
            context, integrator = trappe_npt_context(topology, positions, box, s, args, constrained=constrained,
                                                     timestep_ps=dt, seeds=(15, None, 16))
            integrator.step(200)  # warm-up (kernels, neighbour lists)
        runs[name] = (context, integrator, dt, one_core)
    timing = time_alternating(runs, max(s.reference_timing_steps // blocks, 1), blocks, progress=not args.no_progress,
                              desc="time the fine models")
    for name, (_, _, dt, _) in runs.items():
        timing[name]["timestep_ps"] = dt
    if "constrained_single_core" in timing:
        # the speed-up's baseline is the reference's faster configuration on this machine
        timing["constrained"] = faster_of(timing["constrained"], timing.pop("constrained_single_core"))
    return timing


#: settings introduced after older job folders were made, each with the value those folders used:
#: such a folder resumes as long as the current value is the same
ADDED_SETTINGS = {"tabulated_form": "tables", "chain_pair_separations": [], "bonded_refinement_damping": 1.0,
                  "bonded_refinement_averaging": 0, "cg_single_core": False}


def main(argv=None) -> int:
    args = parse_args(argv)
    s = settings_for(args)
    get_platform(args.platform)  # a missing CUDA platform says how to install it, before any work
    out = args.out
    torch.manual_seed(args.seed)
    recorded = {"quick": args.quick, "platform": args.platform, "seed": args.seed, **asdict(s)}
    # the settings are stored only now that every one passed, so a corrected re-run into the same
    # --out is not refused; a DIR made with other settings is
    stages = ResumableJob(out, recorded, STAGES, extendable=EXTENDABLE, added=ADDED_SETTINGS,
                          what="polymer_cg job").begin()
    t0 = time.perf_counter()
    cg_one_core = cg_on_one_core(s, args)  # for the CG runs (the fine model keeps every core)

    # 1–2. fine model
    topology, fine_system, rec, fine_speed = fine_stage(args, s, out, stages)
    say(f"fine sampling: {rec['positions'].shape[0]} frames, {fine_speed['fine_simulated_ps_per_wall_second']:.2f} ps/s")

    # 3. mapping: k monomers (united atoms) per bead; flexible bonds → plain-sum force map is exact
    definition = MappingDefinition(polymers=[PolymerRule(residues=["CH3", "CH2"], monomers_per_bead=s.monomers_per_bead,
                                                         bead_type="M", end_bead_type="E")])
    mapping = build_mapping(topology, definition, constraints=fine_system, masses=fine_system)
    boxes = rec["boxes"].astype(np.float64)
    atom_forces = rec["forces"].astype(np.float64)
    split = int(0.9 * len(boxes))
    # Minimum-noise ("optimal") force map, fitted on the training frames: the stiff UA bonds that
    # cross bead boundaries put ~±2000 kJ/mol/nm of vibrational noise on summed bead forces; weights
    # on atoms up to `force_map_neighbors` bonds away cancel much of it (Krämer et al. 2023)
    force_map_info = {"kind": "sum"}
    if s.force_map_neighbors >= 0:
        mapping, force_map_info = mapping.with_optimal_force_map(atom_forces[:split], atom_forces[split:],
                                                                 neighbors=s.force_map_neighbors)
        say(f"optimal force map: mean-square bead force {100 * force_map_info['mean_square_reduction_held_out']:.0f} % "
            "below the plain sum on held-out frames")
    mapping.save(out / "mapping.json")
    cg_pos = mapping.map_positions(rec["positions"].astype(np.float64))
    cg_forces = mapping.map_forces(atom_forces)
    say(f"mapped {mapping.n_atoms} sites onto {mapping.n_beads} beads ({mapping.force_map_kind} force map)")

    # 4. priors
    prior_config = PriorConfig(nonbonded_cutoff_nm=s.prior_cutoff_nm, min_samples=200, use_dihedrals=s.dihedral_priors,
                               bond_fit=s.prior_bond_fit)
    dihedrals = mapping.bead_dihedrals if s.dihedral_priors else []
    # the samples are collected once, for the fit and for its plot
    samples = collect_samples(cg_pos, mapping.bead_types, mapping.bead_bonds, mapping.bead_angles, dihedrals, boxes=boxes,
                              config=prior_config)
    priors = fit_priors_from_samples(samples, s.temperature_K, prior_config)
    atomic_write_json(out / "priors.json", priors.to_dict())
    plot_priors(priors, samples, out / "priors.png", config=prior_config)

    model = correction = tabulated = None
    if s.model_family == "network":
        # 5. force matching on F_mapped − F_prior
        box0 = boxes[0]
        prior_system, _ = build_cg_system(mapping, priors, box=box0, nonbonded_cutoff_nm=s.prior_cutoff_nm)
        configs = force_matching_set(cg_pos, cg_forces, mapping.bead_types, prior_system, boxes=boxes)
        model_dir = out / "model"
        job = JobConfig(
            model={"cutoff": s.model_cutoff_nm, "channels": s.channels, "num_layers": s.num_layers, "lmax": s.lmax},
            trainer=TrainerConfig(epochs=s.train_epochs, batch_size=8, learning_rate=5e-3, max_time=s.train_max_time_s,
                                  device="auto", seed=args.seed, early_stopping_patience=60),
            loss=LossConfig(force_only=True),
        )
        def force_match() -> str:
            _, result, _ = fit_potential(configs[:split], configs[split:], model_dir, job, types=sorted(set(mapping.bead_types)),
                                         resume=(model_dir / "checkpoint.pt").exists(), progress=not args.no_progress, log=say)
            return result.stop_reason

        stages.run("force_matching", force_match)
        model = load_model(model_dir / "model.ckpt")

        # 5b. pressure correction: force matching leaves the CG pressure free; a ramp A (1 − r/r_c) on
        # intermolecular bead pairs, with A solved on the reference configurations, brings the model's
        # pressure there to the reference's (see multiscale.openmm.pressure)
        correction = None
        if s.pressure_correction:
            def fit_correction() -> dict:
                system64, _ = build_cg_system(mapping, priors, model=with_dtype(model, "float64"), box=boxes[0],
                                              nonbonded_cutoff_nm=s.prior_cutoff_nm)
                frames = np.linspace(0, split - 1, min(split, 150)).astype(int)
                return fit_pressure_correction(system64, cg_pos[frames], boxes[frames], mapping.chains, s.temperature_K,
                                               target_bar=s.pressure_bar, cutoff_nm=s.prior_cutoff_nm).to_dict()

            correction = PressureCorrection(**stages.run("pressure_correction", fit_correction))
            say(f"pressure correction: the model's pressure on the reference frames is {correction.pressure_before_bar:.0f} "
                f"± {correction.pressure_before_sem_bar:.0f} bar (target {s.pressure_bar:g}); ramp A = {correction.A_kj_mol:.3f} kJ/mol")

    else:
        # 5'. the tabulated family: MS-CG tables by linear least squares on the same mapped data
        def fit_tables() -> dict:
            config = TabulatedConfig(cutoff_nm=s.prior_cutoff_nm, pair_spacing_nm=s.tabulated_pair_spacing_nm,
                                     dihedral_order=s.tabulated_dihedral_order, exclusion=prior_config.exclusion,
                                     pressure_bar=s.pressure_bar if s.pressure_matching else None)
            fitted = fit_tabulated(cg_pos[:split], cg_forces[:split], mapping.bead_types, mapping.bead_bonds,
                                   mapping.bead_angles, mapping.bead_dihedrals, temperature_K=s.temperature_K,
                                   boxes=boxes[:split], config=config, progress=not args.no_progress,
                                   held_out=(cg_pos[split:], cg_forces[split:], boxes[split:]))
            fitted.save(out / "tabulated.json")
            plot_tables(fitted, out / "tabulated.png")
            return fitted.fit

        fit = stages.run("tabulated_fit", fit_tables)
        tabulated = TabulatedModel.load(out / "tabulated.json")
        say(f"tabulated model: held-out force residual {fit['relative_force_residual_held_out']:.3f} of |F|², "
            f"pressure on the reference frames {fit['pressure_bar']:.0f} bar (unconstrained {fit['pressure_unconstrained_bar']:.0f})")
    family_priors = priors if s.model_family == "network" else None
    volumes = np.abs(np.linalg.det(boxes))
    start = int(np.argmin(np.abs(volumes - volumes.mean())))
    ref = mapping.mapped_trajectory(rec["positions"], boxes)  # the mapped reference, same bead order as the CG runs
    if tabulated is not None and s.bonded_refinements > 0:
        # 5c'. iterative Boltzmann refinement of the bonded terms in NVT runs at the reference
        # density, before the density matching (whose ramp then sets the density of the refined
        # model): force matching fits mean forces, not the bond, angle and torsion distributions
        from multiscale.cg.analysis import bonded_values
        from multiscale.openmm.bonded_iteration import refine_bonded_in_runs

        reference_values = bonded_values(ref, types=mapping.bead_types)
        if s.chain_pair_separations:
            from multiscale.cg.analysis import chain_pair_values

            reference_values["chain_pair"] = chain_pair_values(ref, s.chain_pair_separations, types=mapping.bead_types)

        def refine() -> dict:
            refined = refine_bonded_in_runs(
                tabulated.with_chain_pairs(reference_values.get("chain_pair", {})), lambda m: build_cg_system(mapping, None, tabulated=m, box=boxes[start],
                                                     nonbonded_cutoff_nm=s.prior_cutoff_nm, tabulated_form=s.tabulated_form)[0],
                mapping.mdtraj_topology(), mapping.bead_types, cg_pos[start], boxes[start],
                reference_values, rounds=s.bonded_refinements, temperature_K=s.temperature_K,
                steps=s.bonded_refinement_steps, timestep_ps=s.cg_timestep_ps, inner_steps=s.cg_inner_steps,
                platform=args.platform, seed=args.seed + 500, dihedrals=True, damping=s.bonded_refinement_damping,
                average_last=min(s.bonded_refinement_averaging, s.bonded_refinements),
                frames=min(REFINEMENT_FRAMES, s.bonded_refinement_steps), discard=min(REFINEMENT_FRAMES, s.bonded_refinement_steps) // 4,
                log=say)
            refined.save(out / "tabulated_refined.json")
            plot_tables(refined, out / "tabulated_refined.png")
            return refined.fit["bonded_refinements"]

        with single_core(cg_one_core):
            stages.run("bonded_refinement", refine)
        tabulated = TabulatedModel.load(out / "tabulated_refined.json")

    if tabulated is not None and s.density_iterations > 0:
        # 5d. iterated pressure correction: the pair ramp whose short NPT runs give the reference
        # density (the virial constraint fixes the pressure at one volume, not the compressibility).
        # Between chains only, so that it leaves the refined chain shapes alone: the same ramp on
        # every pair (-0.63 kJ/mol, after the refinement) shrank the chains by 13 % (Rg) in one run
        from multiscale.cg.analysis.density import AMU_PER_NM3_TO_G_PER_CM3
        from multiscale.openmm.density_matching import match_density

        target = float(np.mean(np.sum(mapping.bead_masses) / volumes) * AMU_PER_NM3_TO_G_PER_CM3)

        def densities() -> dict:
            def system_for(A):
                return build_cg_system(mapping, None, tabulated=tabulated.with_pair_ramp(A, intermolecular=True), box=boxes[start],
                                       nonbonded_cutoff_nm=s.prior_cutoff_nm, tabulated_form=s.tabulated_form,
                                       barostat=Barostat(s.pressure_bar, s.temperature_K, seed=args.seed + 17))[0]

            return match_density(system_for, cg_pos[start], boxes[start], target_g_cm3=target, iterations=s.density_iterations,
                                 log=say, temperature_K=s.temperature_K, steps=s.density_iteration_steps,
                                 timestep_ps=s.cg_timestep_ps, inner_steps=s.cg_inner_steps, platform=args.platform,
                                 seed=args.seed + 300)

        with single_core(cg_one_core):
            matched = stages.run("density_matching", densities)
        tabulated = tabulated.with_pair_ramp(matched["A_kj_mol"], intermolecular=True)
        say(f"density matching: pair ramp A = {matched['A_kj_mol']:.3f} kJ/mol")

    def cg_system(barostat=None):
        system, topology = build_cg_system(mapping, family_priors, tabulated=tabulated, model=model, box=boxes[start],
                                           nonbonded_cutoff_nm=s.prior_cutoff_nm, pressure_correction=correction,
                                           barostat=barostat, tabulated_form=s.tabulated_form)
        return system, topology

    # 6. CG simulation (resumable), NVT at the reference's mean density: start from the recorded
    # frame whose volume is closest to the mean (`start`), in that frame's box
    cg_system_nvt, cg_top = cg_system()
    # the CG System without its network (priors, corrections, box, masses), for
    # `python -m multiscale.validate --model DIR/model --structure DIR/cg.pdb --system DIR/cg_system.xml`
    write_system_xml(build_cg_system(mapping, family_priors, tabulated=tabulated, box=boxes[start],
                                     nonbonded_cutoff_nm=s.prior_cutoff_nm, pressure_correction=correction,
                                     tabulated_form=s.tabulated_form)[0],
                     out / "cg_system.xml")
    # 5c. the speed-up's baseline, timed in this job: the published (constrained) TraPPE-UA
    ref_timing = stages.run("reference_timing", lambda: time_fine_models(topology, rec, s, args))
    say(f"constrained TraPPE-UA reference: {ref_timing['constrained']['ps_per_wall_second']:.2f} ps/s at "
        f"{ref_timing['constrained']['timestep_ps'] * 1000:g} fs, {ref_timing['constrained'].get('threads', 'the platform default')} "
        f"(flexible bonds: "
        f"{ref_timing['flexible']['ps_per_wall_second']:.2f} ps/s at {ref_timing['flexible']['timestep_ps'] * 1000:g} fs)")
    checkpoint_interval = s.cg_report_interval * 20
    with single_core(cg_one_core):  # made and run in the block (multiscale.openmm.affinity)
        sim = CGSimulation(cg_top, cg_system_nvt, cg_pos[start], out, name="cg", temperature_K=s.temperature_K,
                           timestep_ps=s.cg_timestep_ps, report_interval=s.cg_report_interval,
                           checkpoint_interval=checkpoint_interval, platform=args.platform, seed=args.seed,
                           inner_steps=s.cg_inner_steps)
        timing = sim.run(s.cg_steps, progress=not args.no_progress, max_restarts=s.cg_max_restarts)
    timing["threads"] = "one, pinned to one core" if cg_one_core else "the platform's default"
    say(f"CG MD: {timing['steps']} steps, {timing['simulated_ps_per_wall_second']:.2f} ps/s")

    # 6b. the CG model's own density: a separate NPT run at the reference pressure (force matching
    # fits mean forces, not the pressure, so this is a test, not a given)
    import mdtraj

    npt = npt_timing = None
    if s.cg_npt_steps > 0:
        npt_system, _ = cg_system(Barostat(s.pressure_bar, s.temperature_K, seed=args.seed + 14))
        with single_core(cg_one_core):
            npt_sim = CGSimulation(cg_top, npt_system, cg_pos[start], out, name="cg_npt", temperature_K=s.temperature_K,
                                   timestep_ps=s.cg_timestep_ps, report_interval=s.cg_report_interval,
                                   checkpoint_interval=checkpoint_interval, platform=args.platform, seed=args.seed + 100,
                                   inner_steps=s.cg_inner_steps, log_energies=True)
            try:
                npt_timing = npt_sim.run(s.cg_npt_steps, progress=not args.no_progress, max_restarts=s.cg_max_restarts)
                npt_traj = mdtraj.load_dcd(str(out / "cg_npt.dcd"), top=str(out / "cg_npt.pdb"))
                npt = npt_traj[npt_traj.n_frames // 3:]  # the first third relaxes the box
            except (openmm.OpenMMException, ValueError, RuntimeError) as error:
                # e.g. the box shrank below twice the cutoff; the structural results above still stand
                say(f"CG NPT density run failed ({error}); the report keeps the NVT density")

    # 7. mapped reference trajectory in the same bead order, and the validation report
    ref[0].save_pdb(str(out / "reference_cg.pdb"))
    ref.save_dcd(str(out / "reference_cg.dcd"))
    cg = mdtraj.load_dcd(str(out / "cg.dcd"), top=str(out / "cg.pdb"))
    from multiscale.cg.analysis import validation_report

    reference_speed = ref_timing["constrained"]["ps_per_wall_second"]
    speedup = timing["simulated_ps_per_wall_second"] / reference_speed
    report = validation_report(ref, cg, mapping.bead_masses, out_dir=out, speedup=speedup, types=mapping.bead_types,
                               density_traj=npt,
                               extra={"fine": fine_speed, "cg": timing, "cg_npt": npt_timing,
                                      "wall_seconds": time.perf_counter() - t0,
                                      "ensembles": {"reference": f"NPT {s.pressure_bar} bar", "cg": "NVT at the reference mean density",
                                                    "cg_density": "NPT" if npt is not None else "NVT (no NPT run)"},
                                      "timesteps_ps": {"fine": s.fine_timestep_ps, "cg": s.cg_timestep_ps,
                                                       "cg_inner_steps": s.cg_inner_steps},
                                      "force_map": force_map_info,
                                      "pressure_correction": None if correction is None else correction.to_dict(),
                                      "tabulated_fit": None if tabulated is None else tabulated.fit,
                                      "density_matching": stages.result("density_matching") if stages.is_done("density_matching") else None})
    # the job's own entries: dynamics (apart from the speed-up) and the speed-up's baseline
    from multiscale.cg.analysis import chain_diffusion_coefficient

    d_ref = chain_diffusion_coefficient(ref, mapping.bead_masses, frame_interval_ps=s.sample_interval * s.fine_timestep_ps)
    d_cg = chain_diffusion_coefficient(cg, mapping.bead_masses, frame_interval_ps=s.cg_report_interval * s.cg_timestep_ps)
    report["diffusion"] = {"reference": d_ref, "cg": d_cg, "acceleration": d_cg / d_ref if d_ref > 0 else None,
                           "what": "chain centre-of-mass D (nm^2/ps), reference NPT, CG NVT"}
    report["reference_speed"] = {"ps_per_wall_second": reference_speed, **ref_timing["constrained"],
                                 "model": "TraPPE-UA, constrained bonds, NPT", "flexible": ref_timing["flexible"]}
    report["model_family"] = s.model_family
    report["restarts"] = {"nvt": timing.get("restarts", 0), "npt": None if npt_timing is None else npt_timing.get("restarts", 0)}
    # the kinetic temperature of the NPT run (logged there, not in the timed NVT run): a multiple
    # time step too long for a model's stiffest terms heats it without ever reaching NaN (a 30 fs
    # bonded step ran one quick model at 700-790 K with bonds 50 % too wide)
    report["temperature"] = npt_temperature(out / "cg_npt_energies.csv", s.temperature_K) if npt is not None else None
    if report["temperature"] is not None and abs(report["temperature"]["relative_difference_percent"]) > 5.0:
        say(f"warning: the CG NPT run's kinetic temperature is {report['temperature']['cg_npt_mean_K']:.0f} K against "
            f"{s.temperature_K:g} K; the CG time step is too long for this model (lower cg_timestep_ps or raise cg_inner_steps)")
    atomic_write_json(out / "report.json", report)
    lines = ["", "## Speed and dynamics", "",
             f"- model family: {s.model_family}; CG step {s.cg_timestep_ps * 1000:g} fs"
             + (f" (MTS, bonded forces every {s.cg_timestep_ps * 1000 / s.cg_inner_steps:g} fs)" if s.cg_inner_steps > 1 else ""),
             f"- speed-up: {speedup:.1f}× (CG {timing['simulated_ps_per_wall_second']:.2f} ps/s against the constrained "
             f"TraPPE-UA reference's {reference_speed:.3f} ps/s at {ref_timing['constrained']['timestep_ps'] * 1000:g} fs)",
             f"- chain centre-of-mass diffusion: reference {d_ref:.3g} nm²/ps, CG {d_cg:.3g} nm²/ps "
             f"(dynamical acceleration {d_cg / d_ref:.1f}×, not part of the speed-up)" if d_ref > 0 else "- diffusion: n/a",
             f"- CG restarts: NVT {report['restarts']['nvt']}, NPT {report['restarts']['npt']}",
             (f"- CG kinetic temperature (NPT run): {report['temperature']['cg_npt_mean_K']:.1f} K against {s.temperature_K:g} K"
              if report["temperature"] is not None else "- CG kinetic temperature: n/a (no NPT run)"), ""]
    from multiscale.atomic import atomic_write_text

    atomic_write_text(out / "report.md", (out / "report.md").read_text() + "\n".join(lines))
    say(f"done: speed-up {speedup:.1f}× against the constrained reference; report in {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
