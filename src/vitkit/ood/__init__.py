"""Out-of-distribution and open-set detection: metrics, baseline detectors, MoLAR."""
