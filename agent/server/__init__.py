"""`learnloop serve`: the HTTP server that owns the database while it runs.

- ``state.py``: what the server holds: the store, the loaded model, the version new
  requests are pinned to, and the one learning cycle that may run (swap on promotion);
- ``chat.py``: the OpenAI-compatible chat completions (JSON and server-sent events);
- ``app.py``: the FastAPI application: routes, errors, limits, the web page.
"""
