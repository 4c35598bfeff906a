"""Training: where Lightning meets the networks and losses."""
