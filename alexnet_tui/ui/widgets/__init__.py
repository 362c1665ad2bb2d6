"""Widgets of the training console."""
