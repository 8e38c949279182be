"""Targeted manipulation when optimising for simulated user feedback (Williams, Carroll et al. 2024)."""
