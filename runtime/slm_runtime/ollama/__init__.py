"""The Ollama API: protocol models, serving logic and the router."""
