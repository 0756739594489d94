"""The run directory: atomic writes, checkpoints and their checksums, the run lock, the final save."""
