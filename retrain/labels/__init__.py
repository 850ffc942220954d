"""Label sources: what yields (file, labels, split)."""
