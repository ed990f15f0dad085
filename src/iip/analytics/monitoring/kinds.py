"""Imports every monitor kind so that each registers itself in `MONITOR_KINDS`."""

from iip.analytics.monitoring import dpca, dynamic, ica, pca

__all__ = ["dpca", "dynamic", "ica", "pca"]
