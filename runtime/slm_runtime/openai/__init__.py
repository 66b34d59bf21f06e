"""The OpenAI-compatible API: protocol models, serving logic and the router."""
