"""Configuration: the variables, the model list and its sources, profiles, Go-style durations,
and how the declared set changes while running."""
