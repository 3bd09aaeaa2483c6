"""Training and evaluation: uses the library, never imported by it."""
