"""Analysis probes: first-layer energy profiles (:mod:`.first_layer`), outlier features
(:mod:`.outliers`), and the jobs that train models through the harness and run them (:mod:`.job`)."""
