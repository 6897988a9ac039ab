"""What the workers know of other projects' private internals, one module per project.

`kombu_redis` holds kombu's Redis key layout and message format (read by the inference
pool's inbox and the queue-length metrics); `flower_ui` holds the one change made to
Flower's handlers. Both are checked against the versions pinned in pyproject.toml by
tests/contracts/, which fail when an upgrade changes what they rely on.
"""
