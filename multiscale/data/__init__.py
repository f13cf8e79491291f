"""Datasets of labelled configurations: the record type, file formats, splits, reference energies."""

from multiscale.data.configuration import Configuration, type_counts
from multiscale.data.extxyz import atoms_to_configuration, configuration_to_atoms, read_extxyz, write_extxyz
from multiscale.data.sampling import configurations_from_trajectory, sample_simulation
from multiscale.data.splits import dataset_statistics, fit_reference_energies, split_dataset
from multiscale.data.store import load_dataset, read_configurations, save_dataset, write_configurations

__all__ = [
    "Configuration",
    "type_counts",
    "read_extxyz",
    "write_extxyz",
    "atoms_to_configuration",
    "configuration_to_atoms",
    "save_dataset",
    "load_dataset",
    "read_configurations",
    "write_configurations",
    "split_dataset",
    "fit_reference_energies",
    "dataset_statistics",
    "sample_simulation",
    "configurations_from_trajectory",
]
