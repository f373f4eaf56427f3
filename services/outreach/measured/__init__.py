"""Per-resource and per-survey reports (issue 22, item 7): :mod:`.service` computes them,
:mod:`.router` serves them."""
