"""orders migrations."""
