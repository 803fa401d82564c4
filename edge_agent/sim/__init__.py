"""Simulated devices: cameras with exact ground truth and synthetic event sources."""
