"""Jupyter widgets (ipywidgets; install ``mktsframe[jupyter]``).

Each widget lives in its own module, imported on demand: ``from mktsframe.widgets.browser import
SymbolBrowser``.
"""
