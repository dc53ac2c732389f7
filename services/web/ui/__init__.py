"""The workbench's web pages: server-rendered (Jinja2, autoescaped), no script, one CSS file.

Mounted on the API's Litestar app by :func:`services.web.app.create_app`, which
calls :func:`mount`: the pages' router and the template configuration. Every
handler takes the app's ``web`` dependency (:class:`services.web.app.WebContext`).
Pages (all GET, all read-only):

- ``/``: the systems by verdict, with counts, as of ``?at=``;
- ``/systems/{system}``: verdict, findings (legal basis, evidence), timeline,
  date control, evidence bundle download;
- ``/due``: open obligations with a deadline within ``?within=`` (default 48h);
- ``/entries/{index}``: the decoded entry, its signer's key history, its inclusion proof;
- ``/checkpoints`` and ``/checkpoints/{size}``: a checkpoint and its witnesses.

Every word shown is in :mod:`services.web.ui.labels`.
"""

from __future__ import annotations

from services.web.ui.pages import UI_PATHS, mount, template_config, ui_router

__all__ = ["UI_PATHS", "mount", "template_config", "ui_router"]
