"""Configuration: where the declared model set and the knobs come from, and how they change."""
