"""The engine: typed node graphs (built in Python or read from YAML), validated before they run, and the scheduler
that runs them with a shared embedding cache and a model pool. It knows nothing of particular models: SAM enters
only through the nodes (`samflow.nodes`), which adapt the library to the engine's hooks. See docs/ARCHITECTURE.md.
"""
