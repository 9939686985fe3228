"""Numerical operators shared by the models."""

from sisr.ops.scan import selective_scan, selective_scan_ref

__all__ = ["selective_scan", "selective_scan_ref"]
