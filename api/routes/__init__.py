"""The API's routes, one module per resource; each handler is thin: check, call, answer."""
