"""``python -m multiscale.validate --model PATH --structure FILE [--system SYSTEM.xml]
[--platform CPU|Reference] [--out DIR] [--quick]``

Prints the table of checks; with ``--out`` writes DIR/validation.json, DIR/validation.md and
DIR/validation.png. Exit status: 0 when every check passed, 1 when one failed (so it can gate a
pipeline), 2 on bad input (an ``error:`` line, no traceback).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from multiscale.cli import existing_file, output_dir, positive_float, run_main

PROG = "python -m multiscale.validate"
#: exit status when a check failed
CHECK_FAILED = 1


def parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Check a model's physics and tell the largest safe time step.")
    p.add_argument("--model", type=Path, help="model checkpoint (model.ckpt, or a training folder / ensemble folder)")
    p.add_argument("--structure", type=existing_file, required=True, help="PDB (nm), or extxyz in ASE units (Å)")
    p.add_argument("--system", type=existing_file, help="serialised OpenMM System (XmlSerializer); with --model, the model is added to it")
    p.add_argument("--platform", default="CPU", help="OpenMM platform for the working-precision checks and MD: CPU (default) or Reference")
    p.add_argument("--out", type=output_dir, help="folder for validation.json, validation.md, validation.png")
    p.add_argument("--quick", action="store_true", help="fewer samples: under a minute for a few hundred particles on 2 cores")
    p.add_argument("--temperature", type=positive_float, help="K, for the thermal perturbations and NVE velocities (default 300)")
    p.add_argument("--config", type=existing_file, help="YAML with ValidationSettings fields (thresholds, sample sizes)")
    p.add_argument("--backend", default="torchforce", choices=["torchforce", "pythonforce"], help="how the model runs in OpenMM")
    return p


def main(argv: Optional[Sequence[str]] = None, prog: str = PROG) -> int:
    args = parser(prog).parse_args(argv)
    if args.model is None and args.system is None:
        raise SystemExit("give a model (--model PATH), a System (--system SYSTEM.xml), or both")
    from multiscale.openmm.platforms import get_platform

    get_platform(args.platform)  # refuse a missing platform before any work
    from multiscale.validate.settings import QUICK, ValidationSettings

    settings = ValidationSettings.from_yaml(args.config, base=QUICK if args.quick else None) if args.config else (
        QUICK if args.quick else ValidationSettings())
    if args.temperature is not None:
        settings = ValidationSettings.from_dict({**settings.to_dict(), "temperature_K": float(args.temperature)})

    from multiscale.validate.inputs import build_system, load_any_model, read_structure

    structure = read_structure(args.structure)
    model = load_any_model(args.model) if args.model is not None else None
    system = None
    if args.system is not None:
        from multiscale.openmm.evaluation import read_system_xml

        system = read_system_xml(args.system)
    system, types = build_system(structure, model, system, backend=args.backend)
    from multiscale.validate.pipeline import validate

    inputs = {"structure": structure.source, "model": str(args.model) if args.model else None,
              "system": str(args.system) if args.system else None}
    report = validate(system, structure.positions, structure.box, model=model, types=types, platform=args.platform,
                      settings=settings, backend=args.backend, progress=True, inputs=inputs)
    print(report.table())
    if args.out is not None:
        from multiscale.atomic import atomic_write_json, atomic_write_text
        from multiscale.validate.plots import plot_validation

        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.out / "validation.json", report.to_dict())
        atomic_write_text(args.out / "validation.md", report.to_markdown())
        plot_validation(report.path.get("paths", []), report.nve, args.out / "validation.png")
        print(f"wrote {args.out / 'validation.json'}, validation.md, validation.png")
    return 0 if report.passed else CHECK_FAILED


if __name__ == "__main__":
    sys.exit(run_main(main, prog=PROG))
