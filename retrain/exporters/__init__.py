"""Output formats: each one a check (before any work) and a write."""
