"""Broadcasts: a one-off or scheduled send of a customer template to the members of a
named segment, through the contact gate, quiet hours and a holdout (docs/broadcasts.md)."""
