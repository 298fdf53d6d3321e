"""Reproductions of the paper's tables and their baselines (M2, labels only, majority), apart from the
product: `ccvae` and `app` never import this package."""
