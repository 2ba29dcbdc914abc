"""Wire schemas (request and response models) and the row→wire helpers, per capability.

Route modules import from here, never from one another.
"""
