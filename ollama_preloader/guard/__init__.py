"""The guard: an opt-in reverse proxy in front of Ollama that keeps clients from undoing the pin."""
