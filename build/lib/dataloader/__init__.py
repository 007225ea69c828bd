"""Readers (npy, HDF5, WFDB, PTB-XL, manifest) → one record type; labels; the preprocessing cache; splits;
Dataset/DataLoader; the MAIC layout; the synthetic demo generator."""
