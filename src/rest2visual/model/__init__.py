"""model stage of the rest2visual workflow."""
