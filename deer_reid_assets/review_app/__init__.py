"""The review web app (Starlette + Jinja2 + a little plain JavaScript): thin handlers over
``core.review`` and ``core.store.review``."""
