"""ner_accel's benchmarks against the seed's Trainer recipe: the scripts, and the modules they share."""
