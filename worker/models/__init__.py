"""The model layer: one interface for structured completions and embeddings, whatever serves
them (the OpenAI API, an OpenAI-compatible server, mlx-lm in process), through shared gates.
"""
