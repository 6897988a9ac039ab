"""Contract tests: what workers/broker/ assumes of kombu and Flower, checked on the real thing.

They fail loudly when an upgrade of kombu or Flower changes a private detail the workers rely
on; pyproject.toml pins the minor versions they last passed with.
"""
