"""Recipes: a short function per method that wires config -> models -> algorithm -> trainer."""
