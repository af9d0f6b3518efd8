"""Settings: the variables, the model list, the profiles and Go-style durations."""
