"""The clinicians' page at /, and the headers that keep it to its own script and style."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter()


@router.get("/", include_in_schema=False, response_class=HTMLResponse)
def page() -> HTMLResponse:
    html = resources.files("serving").joinpath("static/index.html").read_text(encoding="utf-8")
    return HTMLResponse(html, headers=PAGE_HEADERS)


# The page loads only its own script and style; record text is inserted as text, never as HTML.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
