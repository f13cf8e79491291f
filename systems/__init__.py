"""Builders of simulation-ready molecular systems (OpenMM Topology, positions and box, in nm)."""
