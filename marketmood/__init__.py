"""MarketMood: sentiment and topic monitoring for financial news.

This small composition package holds what ties the subsystems together: settings, logging, the embedded
runtime and the ``marketmood`` CLI. The subsystems live in the top-level packages ``models``, ``training``,
``streams``, ``storage`` and ``alerts``.
"""

__version__ = "0.1.0"
