"""evaluate stage of the rest2visual workflow."""
