"""The operations console (`/ui/`): server-rendered pages over the same ledger and read models
as the JSON API, for support and operations staff.

`console_routes(secret)` gives the routes `create_app` mounts when the app has read models.
Modules: `session` (signed session cookies and CSRF tokens, pure), `queries` (read-model SQL),
`charts` (inline SVG, pure), `pages` (handlers), `templates/` (Jinja2, autoescaped) and
`static/` (plain CSS and the small live-refresh script; no build step).
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from api.console.pages import Console, make_routes


def console_routes(secret: bytes) -> list[BaseRoute]:
    return make_routes(Console(secret))
