"""The SAM-facing library: the predictor (the official API), the automatic mask generator, prompt parsing, text
prompts, the one-call `segment` API and `Pipeline`. Usable without a graph; the nodes wrap it for the engine.
"""
