"""Tags the tagging worker attaches to images (labels, coarse categories)."""
