"""samflow's built-in nodes, installed as the package `samflow.nodes`: thin adapters over samflow's models and ops.

Every module here is imported when the node registry first loads (see samflow.engine.registry), so a module only has to
define its nodes with `@register`. Heavy imports (torch, the models) stay inside the functions that need them,
so `samflow validate` and `samflow nodes` stay quick.
"""
