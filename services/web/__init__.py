"""The web app: the HTTP API under ``/api/v1`` (public reads, the gateway for signed
envelopes, investigation) and the server-rendered workbench UI, one Litestar app
(:func:`services.web.app.create_app`), run by ``ailedger web``."""
