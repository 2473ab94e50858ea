"""Jupyter widgets (ipywidgets; install ``mktsframe[jupyter]``).

Each widget lives in its own module, imported on demand: ``from mktsframe.widgets.browser import
SymbolBrowser`` (pick a bucket and a range) and ``from mktsframe.widgets.live import LiveView``
(follow a subscription live).
"""
