"""Data: folder scan, demo set, splits and the uint8 datasets the engine trains on."""

from alexnet_tui.data.loading import DataBundle, load_data

__all__ = ["DataBundle", "load_data"]
