"""A 30-H-3 sigmoid network that tells the letters A, B and C apart, as a DVC pipeline."""
