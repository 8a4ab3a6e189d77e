"""Image: quality measures and transforms."""
