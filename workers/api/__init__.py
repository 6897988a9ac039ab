"""The HTTP API: a FastAPI app over the same service functions as the CLI (`create_app`)."""
