"""The headless core: runs agents step by step, cheapest capable tier first, under caps, with verify gates.

Import what you need from its modules (``supervisor.runtime.runtime`` for the ``Runtime`` API); this package
re-exports nothing, so importing one light module never loads the rest.
"""
