"""The parts of one optimizer step and where the loop stands: AdamW, the backward, precision, signals."""
