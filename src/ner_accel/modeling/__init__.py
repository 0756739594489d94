"""The token classifier: the seed's head over encoder bodies, packed attention, loading models."""
