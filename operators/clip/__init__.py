"""CLIP-backed scoring: image-text alignment, zero-shot tags, aesthetics."""
