"""``orbitseg label``: the browser labeling tool (a local FastAPI app serving a plain HTML/JS page).

:func:`orbitseg.app.server.create_app` builds the app for one dataset folder;
:func:`orbitseg.app.server.serve` runs it under uvicorn.  FastAPI and uvicorn
are imported only here, so the rest of orbitseg works without them.
"""

__all__ = ["create_app", "serve"]


def __getattr__(name):
    if name in __all__:
        from orbitseg.app import server

        return getattr(server, name)
    raise AttributeError(name)
