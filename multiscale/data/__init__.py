"""Datasets of labelled configurations: the record type, file formats, splits, reference energies."""

from multiscale.data.configuration import Configuration, type_counts

__all__ = ["Configuration", "type_counts"]
