"""The Ollama server a supervisor works with: the owned `ollama serve` child or a remote one."""
