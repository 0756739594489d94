"""Command-line options: one typed configuration per command, parsed and checked the same way."""
