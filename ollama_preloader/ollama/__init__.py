"""Talking to Ollama: the API client and Ollama's own rules for names, hosts and ps output."""
