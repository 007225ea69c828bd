"""Readers (npy, HDF5, WFDB, PTB-XL, manifest) → one record type; preprocessing; cache; Dataset/DataLoader."""
from .preprocessing import LIMA, MAIC, PRESETS, PreprocessSpec, preprocess
from .records import LEADS, Reader, Record, RecordError, open_reader

__all__ = ["LEADS", "LIMA", "MAIC", "PRESETS", "PreprocessSpec", "Reader", "Record", "RecordError", "open_reader",
           "preprocess"]
