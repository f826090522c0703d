"""Routing quality: the learned scorer, RouteLLM-style evaluation (APGR, CPT), threshold
calibration and policy replay. Only ``features`` and ``learned`` are on the request path; the
rest is offline tooling (training imports numpy and scikit-learn, plots import matplotlib)."""
