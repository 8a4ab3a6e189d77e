"""Audio: quality measures, transcoding, voice activity."""
