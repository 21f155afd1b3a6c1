"""reid."""
