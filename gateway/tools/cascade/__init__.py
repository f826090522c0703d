"""``tiergate cascade-calibrate``: fit and measure the confidence cascade's calibration on a
verifiable question set answered by a real model (offline only)."""
