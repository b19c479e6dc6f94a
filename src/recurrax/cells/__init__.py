"""Cell families: one module each."""
