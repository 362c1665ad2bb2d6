"""Data: folder scan, demo set, splits and the uint8 datasets the engine trains on.

Nothing is imported here: viewers read the demo set's names and draw its images without torch,
which `loading` needs."""
