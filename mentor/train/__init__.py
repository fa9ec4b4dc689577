"""The trainer that runs the one pipeline, and the run directory it writes."""
