"""Video: sampled frames (decoded once per worker), quality, shot splitting."""
