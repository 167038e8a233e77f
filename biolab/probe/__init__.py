"""Probing where attributes are stored: hidden states (states), tasks and positions (tasks), linear
probes on cached states (linear), the paper's P-/Q-probes (paper_probes), the runner (probes) and
the heatmaps (plots)."""
